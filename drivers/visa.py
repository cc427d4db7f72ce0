"""VisaCrossbar: a crossbar controller behind a VISA resource (SCPI, docs/protocol.md)."""

from __future__ import annotations

from typing import Any

import pyvisa
from pyvisa import constants
from pyvisa.errors import VisaIOError

from memristor_hil.errors import ConnectionLostError
from memristor_hil.protocol.messages import Op
from memristor_hil.protocol.scpi import block_message, encode_command, read_block
from memristor_hil.pulses import SafetyLimits
from memristor_hil.url_options import query_options

from ._sequenced import LinkTimeout, SequencedCrossbar

__all__ = ["VisaCrossbar", "open_visa"]


class _VisaLink:
    """SCPI commands with binary blocks over a pyvisa message-based resource."""

    reopen_after_timeout = True  # a half-read block leaves the stream out of step

    def __init__(self, resource: str, backend: str, timeout: float) -> None:
        self.resource = resource
        self._manager = pyvisa.ResourceManager(backend)
        self._timeout_ms = max(1, int(timeout * 1000))
        self._inst = None
        self._open()

    def _open(self) -> None:
        try:
            inst = self._manager.open_resource(
                self.resource, open_timeout=self._timeout_ms, timeout=self._timeout_ms
            )
        except VisaIOError as exc:
            raise OSError(f"cannot open {self.resource}: {exc.description}") from None
        inst.read_termination = None
        inst.write_termination = ""
        self._inst = inst

    def send(self, op: Op, message: bytes) -> None:
        try:
            self._inst.write_raw(encode_command(op, message))
        except VisaIOError as exc:
            raise OSError(exc.description) from None

    def receive(self, timeout: float) -> bytes | None:
        try:
            data = read_block(self._inst.read_bytes)
        except VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                raise LinkTimeout from None
            raise OSError(exc.description) from None
        except ValueError:
            return None  # out of step: the caller sends again after reopening
        return block_message(data)

    def drain(self) -> None:
        """Nothing to drain: each open is a fresh connection (or VISA session)."""

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.close()
            except (VisaIOError, OSError):
                pass
            self._inst = None


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
    ) -> None:
        try:
            link = _VisaLink(resource, backend, timeout)
        except OSError as exc:
            raise ConnectionLostError(str(exc)) from None
        super().__init__(
            link, resource, timeout=timeout, retries=retries, limits=limits, takeover=takeover
        )


def open_visa(url: str, **overrides: Any) -> VisaCrossbar:
    """Open ``visa://<resource string>[?timeout=S&retries=N&backend=@py]``."""
    resource = url.split("://", 1)[1]
    options: dict[str, Any] = {}
    if "?" in resource:
        resource, _, query = resource.partition("?")
        _, options = query_options("x://?" + query)
    options.update(overrides)
    limits = options.pop("limits", None)
    takeover = str(options.pop("takeover", "0")).lower() in ("1", "true", "yes")
    try:
        kwargs = {
            "timeout": float(options.pop("timeout", 1.0)),
            "retries": int(options.pop("retries", 3)),
            "backend": str(options.pop("backend", "@py")),
        }
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad option in {url!r}: {exc}") from None
    if options:
        raise ValueError(f"unknown visa:// options {sorted(options)}")
    return VisaCrossbar(resource, limits=limits, takeover=takeover, **kwargs)
