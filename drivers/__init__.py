"""Drivers for crossbar controllers: a serial port (binary frames) or a VISA resource (SCPI).

Both speak the protocol of docs/protocol.md and implement :class:`memristor_hil.Crossbar`;
open them directly or with ``open_crossbar("serial://...")`` / ``open_crossbar("visa://...")``.
Arc Instruments' ArC ONE (``arc1://``, its own serial commands) and ArC TWO (``arc2://``,
through ``pyarc2``) have a module each; see docs/instruments.md.
"""

from .arc1 import ArC1Crossbar
from .arc2 import ArC2Crossbar
from .serial import SerialCrossbar
from .visa import VisaCrossbar

__all__ = ["ArC1Crossbar", "ArC2Crossbar", "SerialCrossbar", "VisaCrossbar"]
