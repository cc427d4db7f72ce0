"""Drivers for crossbar controllers: a serial port (binary frames) or a VISA resource (SCPI).

Both speak the protocol of docs/protocol.md and implement :class:`memristor_hil.Crossbar`;
open them directly or with ``open_crossbar("serial://...")`` / ``open_crossbar("visa://...")``.
:class:`SmuMatrixCrossbar` (``smu://``) drives a Keithley 2600B SMU and 707B switching matrix
in TSP over VISA (docs/instruments.md).
Arc Instruments' ArC ONE (``arc1://``, its own serial commands) and ArC TWO (``arc2://``,
through ``pyarc2``) have a module each; see docs/instruments.md.
"""

from .arc1 import ArC1Crossbar
from .arc2 import ArC2Crossbar
from .serial import SerialCrossbar
from .smu import SmuMatrixCrossbar
from .visa import VisaCrossbar

__all__ = ["ArC1Crossbar", "ArC2Crossbar", "SerialCrossbar", "SmuMatrixCrossbar", "VisaCrossbar"]
