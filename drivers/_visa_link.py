"""One VISA link for every VISA driver (``visa://`` and ``smu://``), with one error contract.

:class:`VisaResource` carries raw bytes over one pyvisa message-based resource. Whatever pyvisa
or the operating system raises becomes one of the Crossbar errors (memristor_hil/errors.py):

- :class:`~memristor_hil.errors.CrossbarTimeoutError`: no byte arrived before the deadline
  (pyvisa's ``VI_ERROR_TMO``);
- :class:`~memristor_hil.errors.ConnectionLostError`: the link failed or cannot be used:
  every other ``VisaIOError``, pyvisa's ``InvalidSession`` (its exit handler closed the
  session), any other pyvisa error, an ``OSError``, a peer that closed its socket, a resource
  that cannot be opened.

Both are ``OSError`` subclasses, so callers that only care that "the link is down" catch that.

:func:`close_at_exit` closes a driver at interpreter exit *before* pyvisa's own exit handler
closes the sessions the driver needs to leave the instrument safe.
"""

from __future__ import annotations

import atexit
import select
import socket
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

import pyvisa
from pyvisa import constants
from pyvisa.errors import Error as VisaError
from pyvisa.errors import VisaIOError

from memristor_hil.errors import ConnectionLostError, CrossbarTimeoutError

try:  # posix: how many bytes a socket holds (the closed-peer check below)
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows: pyvisa's own read, which waits out a hang-up
    fcntl = termios = None  # type: ignore[assignment]

__all__ = ["VisaResource", "close_at_exit", "link_error"]

#: The longest line :meth:`VisaResource.read_line` accepts, in bytes.
MAX_LINE = 65_536

#: The most bytes a read takes beyond what its caller asked for (they wait in the link for the
#: next read), so a reply's header, length and data come in one pyvisa call, not three
READ_AHEAD = 65_536


def link_error(resource: str, exc: BaseException) -> ConnectionLostError | CrossbarTimeoutError:
    """The Crossbar error for a failure ``exc`` of pyvisa or the OS on ``resource``.

    A pyvisa timeout is a :class:`CrossbarTimeoutError`; everything else (other I/O errors,
    ``InvalidSession``, OS errors) is a :class:`ConnectionLostError`.
    """
    if isinstance(exc, (ConnectionLostError, CrossbarTimeoutError)):
        return exc
    if isinstance(exc, VisaIOError) and exc.error_code == constants.StatusCode.error_timeout:
        return CrossbarTimeoutError(f"{resource}: no reply in time")
    if isinstance(exc, TimeoutError):
        return CrossbarTimeoutError(f"{resource}: no reply in time")
    return ConnectionLostError(f"{resource}: {_describe(exc)}")


class VisaResource:
    """Raw bytes over one pyvisa message-based resource, with the drivers' error contract.

    Parameters
    ----------
    resource : str
        A VISA resource string, e.g. ``TCPIP::192.168.1.5::5025::SOCKET``.
    backend : str
        The pyvisa backend (``"@py"``: pyvisa-py; ``""``: the system's VISA library).
    timeout : float
        Seconds to wait for the bytes of one read (see :meth:`allow` for longer waits).

    Raises
    ------
    ConnectionLostError
        If the resource cannot be opened.
    """

    def __init__(self, resource: str, backend: str, timeout: float) -> None:
        self.resource = resource
        self.timeout = float(timeout)
        self._extra = 0.0
        self._timeout_ms = max(1, int(timeout * 1000))
        try:
            self._manager = pyvisa.ResourceManager(backend)
        except (VisaError, OSError, ValueError) as exc:
            raise ConnectionLostError(f"cannot open {resource}: {_describe(exc)}") from None
        self._inst: Any = None
        self._received = bytearray()  # bytes read ahead: the start of the next reply
        self.open()

    # ------------------------------------------------------------------ opening
    def open(self) -> None:
        """Open the resource (a fresh connection or VISA session)."""
        try:
            inst = self._manager.open_resource(
                self.resource, open_timeout=self._timeout_ms, timeout=self._timeout_ms
            )
        except (VisaError, OSError, ValueError) as exc:
            raise ConnectionLostError(f"cannot open {self.resource}: {_describe(exc)}") from None
        inst.read_termination = None
        inst.write_termination = ""
        self._inst = inst
        self._received.clear()
        self._extra = 0.0
        # Send each command at once. pyvisa-py writes in 4096-byte chunks, and with Nagle's
        # algorithm a command's last chunk waited for the ACK of the one before, which the peer
        # delays up to 40 ms: a 450-cell batch with per-cell counts took 26 ms a step instead of
        # 1. pyvisa-py does not take VI_ATTR_TCPIP_NODELAY for socket sessions, so set it on
        # its socket; other backends keep their own setting.
        found = self._socket_session()
        if found is not None:
            found[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def retarget(self, resource: str) -> None:
        """Use ``resource`` from the next :meth:`reopen` on."""
        self.resource = resource

    def reopen(self) -> None:
        """Close and open the resource again."""
        self.close()
        self.open()

    def close(self) -> None:
        """Close the resource (quietly: it may already be gone)."""
        if self._inst is not None:
            try:
                self._inst.close()
            except (VisaError, OSError):
                pass
            self._inst = None
        self._received.clear()

    @property
    def closed(self) -> bool:
        return self._inst is None

    @property
    def socket(self) -> socket.socket | None:
        """pyvisa-py's TCP socket of this resource (None: closed, or another backend)."""
        found = self._socket_session()
        return None if found is None else found[0]

    # ------------------------------------------------------------------ bytes
    def allow(self, seconds: float) -> None:
        """Wait up to ``seconds`` more than the timeout for each later read (a long batch);
        ``allow(0)`` returns to the timeout."""
        self._extra = max(0.0, float(seconds))
        if self._inst is not None:
            self._inst.timeout = self._timeout_ms + int(self._extra * 1000)

    def deadline(self) -> float:
        """When a read starting now gives up (``time.monotonic()`` clock)."""
        return time.monotonic() + self.timeout + self._extra

    def write(self, data: bytes) -> None:
        """Send ``data``."""
        inst = self._open_instrument()
        try:
            inst.write_raw(data)
        except (VisaError, OSError) as exc:
            raise link_error(self.resource, exc) from None

    def read_exact(self, count: int, deadline: float | None = None) -> bytes:
        """Exactly ``count`` bytes, by ``deadline`` (default: :meth:`deadline` from now)."""
        if deadline is None:
            deadline = self.deadline()
        while len(self._received) < count:
            self._receive(count - len(self._received), deadline)
        data = bytes(self._received[:count])
        del self._received[:count]
        return data

    def read_line(self, deadline: float | None = None) -> bytes:
        """The next line, ``\\n`` included, by ``deadline`` (default: :meth:`deadline` from
        now); a line longer than :data:`MAX_LINE` bytes is a :class:`ConnectionLostError`
        (the stream is out of step)."""
        if deadline is None:
            deadline = self.deadline()
        searched = 0
        while (end := self._received.find(b"\n", searched)) < 0:
            if len(self._received) >= MAX_LINE:
                raise ConnectionLostError(f"{self.resource}: reply line too long")
            searched = len(self._received)
            self._receive(1, deadline)
        return self.read_exact(end + 1)

    def _receive(self, wanted: int, deadline: float) -> None:
        """Add at least one and at most ``max(wanted, READ_AHEAD)`` bytes to the bytes read
        ahead: with pyvisa-py's sockets, all that has arrived up to that bound (so what waits
        here stays under :data:`READ_AHEAD` bytes between reads); with other backends,
        ``wanted`` bytes exactly."""
        inst = self._open_instrument()
        try:
            found = self._socket_session()
            if found is None:
                self._received += inst.read_bytes(wanted)
                return
            available = self._await_bytes(*found, deadline)
            self._received += inst.read_bytes(min(available, max(wanted, READ_AHEAD)))
        except (VisaError, OSError) as exc:
            raise link_error(self.resource, exc) from None

    def _open_instrument(self) -> Any:
        if self._inst is None:
            raise ConnectionLostError(f"{self.resource} is closed")
        return self._inst

    # A peer that closed its socket is seen at once: pyvisa-py's read would wait out the whole
    # timeout on it. So with pyvisa-py's TCP socket sessions the link waits for the bytes
    # itself, then reads only what has arrived; other backends read through pyvisa alone.
    def _socket_session(self) -> tuple[socket.socket, Any] | None:
        """pyvisa-py's socket and session for this resource, or None (another backend)."""
        if fcntl is None or self._inst is None:
            return None
        try:
            session = self._inst.visalib.sessions[self._inst.session]
        except (AttributeError, KeyError, TypeError, VisaError):
            return None
        sock = getattr(session, "interface", None)
        if not isinstance(sock, socket.socket) or not hasattr(session, "_pending_buffer"):
            return None
        return sock, session

    def _await_bytes(self, sock: socket.socket, session: Any, deadline: float) -> int:
        """Bytes readable now (at least 1); ConnectionLostError if the peer closed,
        CrossbarTimeoutError at the deadline."""
        while True:
            buffered = len(session._pending_buffer)  # pyvisa-py replaces it on each read
            if buffered:
                return buffered
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CrossbarTimeoutError(f"{self.resource}: no reply in time")
            if select.select([sock], [], [], remaining)[0]:
                # how much is waiting, without copying it (0 when readable: hung up)
                waiting = struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))
                if not waiting[0]:
                    raise ConnectionLostError(
                        f"{self.resource}: the instrument closed the connection"
                    )
                return waiting[0]


def close_at_exit(close: Callable[[], None]) -> Callable[[], None]:
    """Call the bound method ``close`` at interpreter exit, unless its object is gone.

    Register it *after* the driver's :class:`VisaResource` is open: pyvisa registers its own
    exit handler (which closes every session) when the first resource manager is made, and
    exit handlers run last-registered first, so this one still finds the sessions open and can
    leave the instrument safe. Returns the handler, for ``atexit.unregister`` at close.
    """
    method = weakref.WeakMethod(close)  # type: ignore[arg-type]

    def handler() -> None:
        bound = method()
        if bound is not None:
            bound()

    atexit.register(handler)
    return handler


def _describe(exc: BaseException) -> str:
    return getattr(exc, "description", None) or str(exc) or type(exc).__name__
