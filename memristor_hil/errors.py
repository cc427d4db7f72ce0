"""Exceptions raised by every Crossbar backend.

Catch :class:`CrossbarError` to handle anything that went wrong with a crossbar;
catch a subclass to handle one kind of failure.
"""

from __future__ import annotations


class CrossbarError(Exception):
    """Base class of every error raised by a crossbar backend."""


class InvalidBatchError(CrossbarError, ValueError):
    """A pulse batch or read request is malformed or does not fit the crossbar.

    Raised before anything reaches a device: the crossbar is left untouched.
    """


class AddressError(InvalidBatchError):
    """A cell or region lies outside the crossbar.

    Raised before anything reaches a device: the crossbar is left untouched.
    """


class SafetyLimitError(InvalidBatchError):
    """A voltage, pulse width or pulse count lies outside the crossbar's safety limits.

    Raised before anything reaches a device: the crossbar is left untouched.
    """


class UnsupportedError(CrossbarError, NotImplementedError):
    """The backend lacks an optional capability (see :class:`Crossbar`'s ``can_restore``)."""


class DeviceError(CrossbarError):
    """The device (or emulator service) reported an error; the message is the device's.

    ``status`` is the wire protocol's reply status when the error came from a reply.
    """

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProtocolError(CrossbarError):
    """A reply could not be understood: bad framing, checksum or content."""


class CrossbarTimeoutError(CrossbarError, TimeoutError):
    """The device did not answer in time (after any retries)."""


class CrossbarClosedError(CrossbarError):
    """The crossbar was used after :meth:`Crossbar.close`."""


class ConnectionLostError(CrossbarError, ConnectionError):
    """The link to the device failed (port gone, connection refused or reset) and did not come
    back within the driver's retries."""
