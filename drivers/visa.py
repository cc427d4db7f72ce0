"""VisaCrossbar: a crossbar controller behind a VISA resource (SCPI, docs/protocol.md)."""

from __future__ import annotations

import atexit
import select
import socket
import struct
import time
import weakref
from typing import Any

import pyvisa
from pyvisa import constants
from pyvisa.errors import Error as VisaError
from pyvisa.errors import VisaIOError

from memristor_hil.errors import ConnectionLostError
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

from ._sequenced import LinkTimeout, SequencedCrossbar

try:  # posix: how many bytes a socket holds (the closed-peer check below)
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows: pyvisa's own read, which waits out a hang-up
    fcntl = termios = None  # type: ignore[assignment]

__all__ = ["VisaCrossbar", "open_visa"]


#: The line the emulator service sends a client over its connection limit before closing.
_BUSY = b"BUSY:"


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
        # Send each command at once. pyvisa-py writes in 4096-byte chunks, and with Nagle's
        # algorithm a command's last chunk waited for the ACK of the one before, which the peer
        # delays up to 40 ms: a 450-cell batch with per-cell counts took 26 ms a step instead of
        # 1. pyvisa-py does not take VI_ATTR_TCPIP_NODELAY for socket sessions, so set it on
        # its socket; other backends keep their own setting.
        found = self._session()
        if found is not None:
            found[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, op: Op, message: bytes) -> None:
        if self._inst is None:
            raise OSError(f"{self.resource} is closed")
        try:
            self._inst.write_raw(encode_command(op, message))
        except VisaIOError as exc:
            raise OSError(exc.description) from None
        except VisaError as exc:  # e.g. InvalidSession: pyvisa closed it (at exit)
            raise OSError(f"{self.resource}: {exc}") from None

    def receive(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        try:
            head = self._read_exact(2, deadline)
            if head == _BUSY[:2]:
                rest = self._read_line(deadline)
                raise OSError((head + rest).decode("ascii", "replace").strip())
            first = [head]

            def read_exact(count: int) -> bytes:
                return first.pop() if first else self._read_exact(count, deadline)

            data = read_block(read_exact)
        except VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                raise LinkTimeout from None
            raise OSError(exc.description) from None
        except VisaError as exc:
            raise OSError(f"{self.resource}: {exc}") from None
        except ValueError:
            return None  # out of step: the caller sends again after reopening
        return block_message(data)

    def drain(self) -> None:
        """Nothing to drain: each open is a fresh connection (or VISA session)."""

    # A peer that closed its socket is seen at once: pyvisa-py's read would wait out the whole
    # timeout on it. So with pyvisa-py's TCP socket sessions the driver waits for the bytes
    # itself, then reads only what has arrived; other backends read through pyvisa alone.
    def _session(self) -> tuple[socket.socket, Any] | None:
        """pyvisa-py's socket and session for this resource, or None (another backend)."""
        if fcntl is None:
            return None
        try:
            session = self._inst.visalib.sessions[self._inst.session]
        except (AttributeError, KeyError, TypeError):
            return None
        sock = getattr(session, "interface", None)
        if not isinstance(sock, socket.socket) or not hasattr(session, "_pending_buffer"):
            return None
        return sock, session

    def _read_exact(self, count: int, deadline: float) -> bytes:
        found = self._session()
        if found is None:
            return self._inst.read_bytes(count)
        out = bytearray()
        while len(out) < count:
            available = self._await_bytes(*found, deadline)
            out += self._inst.read_bytes(min(count - len(out), available))
        return bytes(out)

    def _read_line(self, deadline: float) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n") and len(line) < 1024:
            try:
                line += self._read_exact(1, deadline)
            except (OSError, LinkTimeout):
                break
        return bytes(line)

    def _await_bytes(self, sock: socket.socket, session: Any, deadline: float) -> int:
        """Bytes readable now (at least 1); OSError if the peer closed, LinkTimeout at the
        deadline."""
        while True:
            buffered = len(session._pending_buffer)  # pyvisa-py replaces it on each read
            if buffered:
                return buffered
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout
            if select.select([sock], [], [], remaining)[0]:
                try:  # how much is waiting, without copying it (0 when readable: hung up)
                    waiting = struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))
                except OSError as exc:
                    raise OSError(f"{self.resource}: {exc.strerror or exc}") from None
                if not waiting[0]:
                    raise OSError(f"{self.resource}: the instrument closed the connection")
                return waiting[0]

    def retarget(self, resource: str) -> None:
        """Use ``resource`` from the next :meth:`reopen` on."""
        self.resource = resource

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.close()
            except (VisaError, OSError):
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
        try:
            link = _VisaLink(resource, backend, timeout)
        except OSError as exc:
            raise ConnectionLostError(str(exc)) from None
        super().__init__(
            link,
            resource,
            timeout=timeout,
            retries=retries,
            limits=limits,
            takeover=takeover,
            monitor=monitor,
        )
        # At interpreter exit, pyvisa's own handler (registered when the link made its
        # ResourceManager) closes every session; handlers run last-registered first, so this
        # one, registered after it, leaves the outputs safe and releases the claim before.
        self._at_exit = _close_at_exit(weakref.ref(self))
        atexit.register(self._at_exit)

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


def _close_at_exit(ref: weakref.ref[VisaCrossbar]) -> Any:
    def close() -> None:
        xbar = ref()
        if xbar is not None:
            xbar.close()

    return close


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
