"""memristor-hil: spiking-network learning on memristor crossbars, in hardware or emulated.

The public names: :class:`PowerLaw` (device model), :class:`PulseBatch` and
:class:`SafetyLimits` (what is sent), :class:`Crossbar` (the device abstraction layer every
backend implements), :func:`open_crossbar` (a URL picks the backend), the exceptions, and
:class:`mPES` (the Nengo learning rule; imported on first use, so ``import memristor_hil`` does
not import Nengo).
"""

from typing import Any

from .crossbar import Crossbar
from .errors import (
    CrossbarClosedError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
    SafetyLimitError,
)
from .powerlaw import DeviceParameters, PowerLaw, Variability
from .pulses import PulseBatch, SafetyLimits
from .urls import open_crossbar, register_scheme

__version__ = "0.1.0"

__all__ = [
    "Crossbar",
    "CrossbarClosedError",
    "CrossbarError",
    "CrossbarTimeoutError",
    "DeviceError",
    "DeviceParameters",
    "InvalidBatchError",
    "Layout",
    "PowerLaw",
    "ProtocolError",
    "PulseBatch",
    "SafetyLimitError",
    "SafetyLimits",
    "Variability",
    "open_crossbar",
    "mPES",
    "register_scheme",
]

_LAZY = {"mPES": "memristor_hil.mpes", "Layout": "memristor_hil.mpes_layout"}


def __getattr__(name: str) -> Any:
    """Import the Nengo learning rule (and register its builder) only when asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memristor_hil' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
