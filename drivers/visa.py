"""VisaCrossbar: a crossbar controller behind a VISA resource (SCPI, docs/protocol.md)."""

from __future__ import annotations

import atexit
import time
from typing import Any

from memristor_hil.errors import ConnectionLostError, CrossbarTimeoutError
from memristor_hil.protocol.messages import Op
from memristor_hil.protocol.scpi import block_message, encode_command, read_block
from memristor_hil.pulses import SafetyLimits
from memristor_hil.url_options import (
    Option,
    boolean,
    keyword_only,
    query_options,
    read_options,
)

from ._sequenced import SequencedCrossbar
from ._visa_link import VisaResource, close_at_exit

__all__ = ["VisaCrossbar", "open_visa"]


#: The line the emulator service sends a client over its connection limit before closing.
_BUSY = b"BUSY:"


class _ScpiLink:
    """SCPI commands with binary blocks over a :class:`VisaResource` (the session's link).

    Errors are the resource's: :class:`ConnectionLostError` and :class:`CrossbarTimeoutError`.
    """

    reopen_after_timeout = True  # a half-read block leaves the stream out of step

    def __init__(self, visa: VisaResource) -> None:
        self.visa = visa

    def send(self, op: Op, message: bytes) -> None:
        self.visa.write(encode_command(op, message))

    def receive(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        head = self.visa.read_exact(2, deadline)
        if head == _BUSY[:2]:
            try:
                rest = self.visa.read_line(deadline)
            except (ConnectionLostError, CrossbarTimeoutError):
                rest = b""
            raise ConnectionLostError((head + rest).decode("ascii", "replace").strip())
        first = [head]

        def read_exact(count: int) -> bytes:
            return first.pop() if first else self.visa.read_exact(count, deadline)

        try:
            data = read_block(read_exact)
        except ValueError:
            return None  # out of step: the caller sends again after reopening
        return block_message(data)

    def drain(self) -> None:
        """Nothing to drain: each open is a fresh connection (or VISA session)."""

    def retarget(self, resource: str) -> None:
        """Use ``resource`` from the next :meth:`reopen` on."""
        self.visa.retarget(resource)

    def reopen(self) -> None:
        self.visa.reopen()

    def close(self) -> None:
        self.visa.close()


class VisaCrossbar(SequencedCrossbar):
    """A crossbar controller behind a VISA resource, speaking SCPI (docs/protocol.md).

    Parameters
    ----------
    resource : str
        A VISA resource string, e.g. ``TCPIP::192.168.1.5::5025::SOCKET`` or
        ``ASRL/dev/ttyUSB0::INSTR``.
    backend : str
        The pyvisa backend; default ``"@py"`` (pyvisa-py, pure Python). ``""`` picks the
        system's VISA library.
    timeout : float
        Seconds to wait for each reply. Default 1.
    retries : int
        Re-sends of a command (same sequence number, so never applied twice). Default 3.
    limits : SafetyLimits, optional
        Narrower safety limits to configure on the device; by default the device's.
    takeover : bool
        Take control of a device another host holds (only when that host has died; URL
        option ``takeover=1``). Default False: such a device is refused with a DeviceError.
    monitor : bool
        Watch a device another host drives, without claiming it: reads only (URL option
        ``monitor=1``).
    """

    def __init__(
        self,
        resource: str,
        *,
        backend: str = "@py",
        timeout: float = 1.0,
        retries: int = 3,
        limits: SafetyLimits | None = None,
        takeover: bool = False,
        monitor: bool = False,
    ) -> None:
        super().__init__(
            _ScpiLink(VisaResource(resource, backend, timeout)),
            resource,
            timeout=timeout,
            retries=retries,
            limits=limits,
            takeover=takeover,
            monitor=monitor,
        )
        # at interpreter exit: outputs safe and the claim released before pyvisa closes the
        # session (see close_at_exit)
        self._at_exit = close_at_exit(self.close)

    def _close(self) -> None:
        atexit.unregister(self._at_exit)
        super()._close()

    def reopen(self, resource: str | None = None) -> None:
        """Open the resource again, or ``resource`` instead, keeping the sequence state.

        Use it when the instrument came back at another address or port; then repeat the call
        that failed, which is applied exactly once. (A connection the instrument closed is
        noticed at once and reopened by the next command by itself.)

        Raises
        ------
        ConnectionLostError
            If the resource cannot be opened.
        DeviceError
            If the instrument there is not a crossbar of this shape.
        """
        super().reopen(resource)


_VISA_OPTIONS = {
    "timeout": Option(float, 1.0),
    "retries": Option(int, 3),
    "backend": Option(str, "@py"),
    "takeover": Option(boolean, False),
    "monitor": Option(boolean, False),
    "limits": Option(keyword_only, None),
}


def open_visa(url: str, **overrides: Any) -> VisaCrossbar:
    """Open ``visa://<resource string>[?timeout=S&retries=N&backend=@py]``."""
    resource = url.split("://", 1)[1]
    options: dict[str, Any] = {}
    if "?" in resource:
        resource, _, query = resource.partition("?")
        _, options = query_options("x://?" + query)
    options.update(overrides)
    return VisaCrossbar(resource, **read_options("visa", options, _VISA_OPTIONS))
