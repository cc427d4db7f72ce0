"""The emulator: an in-process crossbar of power-law devices (and, later, a service process)."""

from .crossbar import EmulatedCrossbar

__all__ = ["EmulatedCrossbar"]
