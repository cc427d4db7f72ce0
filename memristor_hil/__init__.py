"""memristor-hil: spiking-network learning on memristor crossbars, in hardware or emulated.

The public names: :class:`PowerLaw` (device model), :class:`PulseBatch` and
:class:`SafetyLimits` (what is sent), :class:`Crossbar` (the device abstraction layer every
backend implements), :func:`open_crossbar` (a URL picks the backend), the exceptions, and
:class:`.mPES` with :class:`.Layout` (the Nengo learning rule), and :func:`sweep` (run a sweep of
the published tasks on Dask; needs the ``[sweep]`` extra). Everything but the exceptions is
imported on first use, so ``import memristor_hil`` imports neither numpy, Nengo nor numba.

The packages, one layer each (``docs/architecture.md`` draws how they connect):
``memristor_hil.learning`` (the Nengo rule), ``memristor_hil.lab`` (records, characterize,
fit), ``memristor_hil.experiments`` (the published tasks), ``memristor_hil.protocol`` (the wire
codec), ``memristor_hil.drivers`` (hardware backends), ``memristor_hil.emulator`` (the
in-process emulator and the emulator service), ``memristor_hil.cli`` (the command line).
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AddressError,
    ConnectionLostError,
    CrossbarClosedError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
    SafetyLimitError,
    UnsupportedError,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .backends import open_crossbar, register_scheme
    from .crossbar import Crossbar
    from .learning import Layout, mPES
    from .powerlaw import DeviceParameters, PowerLaw, Variability
    from .pulses import PulseBatch, SafetyLimits

__version__ = "0.1.0"  # the one place; pyproject.toml and CHANGELOG.md follow it

__all__ = [
    "AddressError",
    "ConnectionLostError",
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
    "UnsupportedError",
    "Variability",
    "mPES",
    "open_crossbar",
    "register_scheme",
    "sweep",
]

#: Names imported on first use: the device layer imports numpy, the learning rule Nengo and
#: numba, so ``import memristor_hil`` (and the command line's start) imports neither.
_LAZY = {
    "open_crossbar": "memristor_hil.backends",
    "register_scheme": "memristor_hil.backends",
    "Crossbar": "memristor_hil.crossbar",
    "DeviceParameters": "memristor_hil.powerlaw",
    "PowerLaw": "memristor_hil.powerlaw",
    "Variability": "memristor_hil.powerlaw",
    "PulseBatch": "memristor_hil.pulses",
    "SafetyLimits": "memristor_hil.pulses",
    "mPES": "memristor_hil.learning",
    "Layout": "memristor_hil.learning",
    "sweep": "memristor_hil.experiments.sweep",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module (numpy, or Nengo for the rule) only when it is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memristor_hil' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Every public name, the lazy ones too (so ``help(memristor_hil)`` lists them)."""
    return sorted(set(globals()) | set(_LAZY))
