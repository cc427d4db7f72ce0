"""The emulator as one circuit: a passive crossbar's nodal model (``.circuit``), reads
(``.measure``) and writes (``.writes``) through it, the options that describe it
(``.options``), and the crossbar that puts them together (``.crossbar``).

The circuit and the crossbar load on first use (they import scipy.sparse): reading the
``emulator://`` options costs an ideal emulator nothing.
"""

from typing import Any

from .options import READ_SCHEMES, WRITE_SCHEMES, ArrayOptions, DeviceEffects, Wiring

__all__ = [
    "READ_SCHEMES",
    "WRITE_SCHEMES",
    "ArrayCrossbar",
    "ArrayOptions",
    "DeviceEffects",
    "NodalSystem",
    "Nodes",
    "Wiring",
]

_LAZY = {"NodalSystem": "circuit", "Nodes": "circuit", "ArrayCrossbar": "crossbar"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
