"""The emulator: an in-process crossbar of power-law devices (``.crossbar``, with its
compiled kernels in ``.kernels`` and ``emulator://`` URLs in ``.url``), and the service
that serves one over the wire protocol (``.service``; ``memristor-hil emulate``)."""

from .crossbar import EmulatedCrossbar

__all__ = ["EmulatedCrossbar"]
