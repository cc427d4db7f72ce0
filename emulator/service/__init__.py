"""The emulator service: an EmulatedCrossbar in its own process, speaking the wire protocol.

:mod:`.core` executes commands (sequence window, limits, state file); :mod:`.serial` serves
binary frames on a pseudo-terminal and :mod:`.tcp` SCPI on a TCP socket; :mod:`.faults`
injects seeded faults for tests; :mod:`.stop` turns SIGINT/SIGTERM into a clean stop.
``memristor-hil emulate`` starts it.
"""

from .core import CrossbarService

__all__ = ["CrossbarService"]
