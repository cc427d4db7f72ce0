"""The emulator: an in-process crossbar of power-law devices (:mod:`.crossbar`, with its
compiled kernels in :mod:`.kernels` and ``emulator://`` URLs in :mod:`.url`), and the service
that serves one over the wire protocol (:mod:`.service`; ``memristor-hil emulate``)."""

from .crossbar import EmulatedCrossbar

__all__ = ["EmulatedCrossbar"]
