"""Drivers for crossbar controllers: a serial port (binary frames) or a VISA resource (SCPI).

Both speak the protocol of docs/protocol.md and implement :class:`memristor_hil.Crossbar`;
open them directly or with ``open_crossbar("serial://...")`` / ``open_crossbar("visa://...")``.
"""

from .serial import SerialCrossbar
from .visa import VisaCrossbar

__all__ = ["SerialCrossbar", "VisaCrossbar"]
