"""Drivers for crossbar controllers: a serial port (binary frames) or a VISA resource (SCPI).

Both speak the protocol of docs/protocol.md and implement :class:`memristor_hil.Crossbar`;
open them directly or with ``open_crossbar("serial://...")`` / ``open_crossbar("visa://...")``.
:class:`SmuMatrixCrossbar` (``smu://``) drives a Keithley 2600B SMU and 707B switching matrix
in TSP over VISA (docs/instruments-smu.md).
"""

from .serial import SerialCrossbar
from .smu import SmuMatrixCrossbar
from .visa import VisaCrossbar

__all__ = ["SerialCrossbar", "SmuMatrixCrossbar", "VisaCrossbar"]
