"""memristor-hil: spiking-network learning on memristor crossbars, in hardware or emulated.

The public names: :class:`PowerLaw` (device model), :class:`PulseBatch` and
:class:`SafetyLimits` (what is sent), :class:`Crossbar` (the device abstraction layer every
backend implements), :func:`open_crossbar` (a URL picks the backend) and the exceptions.
"""

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
    "PowerLaw",
    "ProtocolError",
    "PulseBatch",
    "SafetyLimitError",
    "SafetyLimits",
    "Variability",
    "open_crossbar",
    "register_scheme",
]
