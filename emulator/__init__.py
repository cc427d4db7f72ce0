"""The emulator: an in-process crossbar of power-law devices, and the service that serves one
over the wire protocol (``memristor-hil emulate``; :mod:`.service`, :mod:`.serial_service`,
:mod:`.tcp_service`)."""

from .crossbar import EmulatedCrossbar

__all__ = ["EmulatedCrossbar"]
