"""The emulator service on a TCP socket: SCPI with binary blocks, as a VISA instrument.

The server is dialect-neutral: each connection gets a :class:`Session` from its listener's
factory (SCPI here; the Keithley bench plugs in its TSP sessions), and every dialect shares the
same limits (:class:`TcpLimits`), time slices and non-blocking output.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from memristor_hil.protocol.scpi import ScpiParser

from .core import CrossbarService
from .faults import Faults
from .scpi_commands import CompoundReplies, scpi_reply
from .stop import StopFlag

__all__ = [
    "Host",
    "Session",
    "TcpLimits",
    "parse_address",
    "scpi_reply",
    "serve_sessions",
    "serve_tcp",
]

_READ_SIZE = 1 << 20
#: Linux's TCP_QUICKACK: acknowledge at once (a reply-less command would otherwise wait for
#: the delayed ACK, and a client's next small write with it).
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
#: Seconds one client's commands may run before the others get their turn (round robin).
_TIME_SLICE = 0.05
#: How long a refused client's connection is drained before it is closed (so that the reason
#: it was sent is not lost to a TCP reset).
_REFUSAL_LINGER = 1.0


@dataclass(frozen=True)
class TcpLimits:
    """What the TCP service holds per client and in all (docs/protocol.md, "Service limits").

    Parameters
    ----------
    max_clients : int
        Connections served at once; one more is told why and closed.
    idle_timeout : float
        Seconds without a byte from a client (and nothing owed to it) before it is closed.
    stall_timeout : float
        Seconds a client may leave replies unread, without reading any, before it is closed.
    client_output : int
        Unsent reply bytes at which a client's further commands wait (its input is left in
        the socket, so TCP slows the client down); a single reply may exceed it.
    total_output : int
        A bound on all clients' unsent replies together: beyond it only clients with no
        unsent reply have their commands run.
    total_input : int
        Bytes of partly received commands buffered across clients; beyond it only the client
        with the most buffered (the nearest to a whole command) reads on, and every other
        client still reads up to ``reserve`` bytes (so short commands, ``*IDN?`` or
        ``OUTP OFF``, are answered while large ones wait).
    reserve : int
        Bytes each client may always have buffered, whatever the total (bounded in all by
        ``max_clients * reserve``).
    """

    max_clients: int = 64
    idle_timeout: float = 300.0
    stall_timeout: float = 30.0
    client_output: int = 1 << 20
    total_output: int = 64 << 20
    total_input: int = 128 << 20
    reserve: int = 64 << 10

    def __post_init__(self) -> None:
        if not 1 <= self.max_clients <= 4096:
            raise ValueError(f"max_clients must be in 1..4096, got {self.max_clients}")
        for name in ("idle_timeout", "stall_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def parse_address(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` as a bind address; non-loopback hosts need ``allow_remote``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_remote:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"refusing to listen on {host}: not a loopback address (pass --allow-remote to "
                "serve other machines)"
            )
    return host, int(port_text)


class Session(Protocol):
    """One connection's side of a dialect: bytes in, replies out.

    ``buffered`` is how many bytes of partly received commands it holds; ``closed`` set by the
    session ends the connection (a fault it injects); :meth:`close` is called once when the
    connection is gone, so the session can abandon what it held for it.
    """

    buffered: int
    closed: bool

    def feed(self, data: bytes) -> None: ...

    def replies(self) -> Iterator[tuple[bytes, bool]]:
        """Run the complete commands, yielding ``(reply, more)`` for each (``more``: another
        command of the same message follows). The server may stop iterating between commands
        and call again later; commands not yet run stay buffered."""
        ...

    def close(self) -> None: ...


class Host(Protocol):
    """What the server asks of what it serves besides sessions: event lines and upkeep."""

    def say(self, text: str) -> None: ...

    def tick(self) -> None: ...

    def seconds_to_next_save(self) -> float | None: ...


class _ScpiSession:
    """docs/protocol.md's SCPI on one connection."""

    closed = False

    def __init__(self, service: CrossbarService) -> None:
        self.service = service
        self.parser = ScpiParser()
        self.compound = CompoundReplies()

    @property
    def buffered(self) -> int:
        return self.parser.buffered

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def replies(self) -> Iterator[tuple[bytes, bool]]:
        self.service.link = self  # a claim made by these commands goes with this connection
        events = self.parser.events()
        try:
            for event in events:
                yield self.compound.reply(self.service, event), getattr(event, "more", False)
        finally:
            events.close()

    def close(self) -> None:
        self.service.link_lost(self)  # a claim made over this connection ends with it


def serve_sessions(
    host: Host,
    stop: StopFlag,
    endpoints: Sequence[tuple[tuple[str, int], Callable[[], Session]]],
    announce: Callable[[str], None],
    faults: Faults | None = None,
    limits: TcpLimits | None = None,
) -> None:
    """Serve each ``(address, session factory)`` until ``stop`` is set, under one set of limits.

    ``announce`` gets the bound addresses, ``"HOST:PORT HOST:PORT ..."`` in the order given.
    """
    server = _TcpServer(host, stop, faults or Faults(), limits or TcpLimits())
    server.run(endpoints, announce)


def serve_tcp(
    service: CrossbarService,
    stop: StopFlag,
    address: tuple[str, int],
    announce: Callable[[str], None],
    faults: Faults | None = None,
    limits: TcpLimits | None = None,
) -> None:
    """Serve SCPI on ``address`` until ``stop`` is set; ``announce`` gets ``HOST:PORT``.

    Up to ``limits.max_clients`` clients at once, each with its own parser and output buffer;
    commands run one at a time, sockets never block (a client that does not read its replies
    delays nobody else), and idle or stalled clients are closed (see :class:`TcpLimits`).
    """
    endpoint = (address, lambda: _ScpiSession(service))
    serve_sessions(service, stop, [endpoint], announce, faults, limits)


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    name: str
    now: float
    session: Session
    out: bytearray = field(default_factory=bytearray)
    unparsed: bool = False  # the parser may hold commands not yet run
    mask: int = selectors.EVENT_READ

    def __post_init__(self) -> None:
        self.last_input = self.last_output = self.now


class _TcpServer:
    def __init__(self, service: Host, stop: StopFlag, faults: Faults, limits: TcpLimits) -> None:
        self.service = service
        self.stop = stop
        self.faults = faults
        self.limits = limits
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, _Client] = {}
        self.refused: dict[socket.socket, float] = {}  # draining until this deadline
        self.queued_output = 0

    def run(
        self,
        endpoints: Sequence[tuple[tuple[str, int], Callable[[], Session]]],
        announce: Callable[[str], None],
    ) -> None:
        listeners: dict[socket.socket, Callable[[], Session]] = {}
        try:
            where = []
            for address, factory in endpoints:
                listener = socket.create_server(address, reuse_port=False, backlog=128)
                listeners[listener] = factory
                listener.setblocking(False)
                self.selector.register(listener, selectors.EVENT_READ)
                host, port = listener.getsockname()[:2]
                where.append(f"{host}:{port}")
            self.selector.register(self.stop, selectors.EVENT_READ)
            announce(" ".join(where))
            while not self.stop.is_set:
                for key, events in self.selector.select(self._wait()):
                    if key.fileobj in listeners:
                        self._accept(key.fileobj, listeners[key.fileobj])
                    elif key.fileobj in self.refused:
                        self._drain_refused(key.fileobj)
                    elif key.fileobj in self.clients:
                        client = self.clients[key.fileobj]
                        if events & selectors.EVENT_WRITE:
                            self._flush(client)
                        if events & selectors.EVENT_READ and client.sock in self.clients:
                            self._receive(client)
                self._run_commands()
                self._sweep(time.monotonic())
                self._update_interest()
                self.service.tick()
        finally:
            for client in list(self.clients.values()):
                self._drop(client)
            for sock in self.refused:
                sock.close()
            self.selector.close()
            for listener in listeners:
                listener.close()

    # ------------------------------------------------------------------ connections
    def _accept(self, listener: socket.socket, factory: Callable[[], Session]) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors and the like: try again later
                return
            sock.setblocking(False)
            name = f"{peer[0]}:{peer[1]}"
            if len(self.clients) >= self.limits.max_clients:
                self._refuse(sock, name)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.clients[sock] = _Client(sock, name, time.monotonic(), factory())
            self.selector.register(sock, selectors.EVENT_READ)

    def _refuse(self, sock: socket.socket, name: str) -> None:
        """Tell a client over the limit why, then close (after draining what it sent)."""
        limit = self.limits.max_clients
        reason = (
            f"BUSY: this memristor-hil emulate serves at most {limit} clients at once and all "
            "are connected; closing. Try again when one has disconnected.\n"
        )
        self.service.say(f"refused {name}: {limit} clients connected")
        try:
            sock.send(reason.encode())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self.refused) >= self.limits.max_clients:  # bounded, like everything else
            sock.close()
            return
        self.refused[sock] = time.monotonic() + _REFUSAL_LINGER
        self.selector.register(sock, selectors.EVENT_READ)

    def _drain_refused(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_refused(sock)

    def _close_refused(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.refused[sock]
        sock.close()

    def _drop(self, client: _Client, why: str | None = None) -> None:
        if why:
            self.service.say(f"closed {client.name}: {why}")
        if client.mask:
            self.selector.unregister(client.sock)
        del self.clients[client.sock]
        self.queued_output -= len(client.out)
        client.sock.close()
        client.session.close()

    # ------------------------------------------------------------------ input
    def _has_room(self, client: _Client) -> bool:
        """Whether the client's replies (and all clients' together) leave room for more."""
        limits = self.limits
        if len(client.out) >= limits.client_output:
            return False
        # beyond the total, only clients that have read all their replies go on: those that
        # do not read wait, and never hold up those that do
        return self.queued_output < limits.total_output or not client.out

    def _may_read(self, client: _Client) -> bool:
        return self._read_budget(client) > 0

    def _read_budget(self, client: _Client) -> int:
        """How many bytes to read from the client now (0: leave them in its socket)."""
        if not self._has_room(client):
            return 0
        buffered = [c.session.buffered for c in self.clients.values()]
        if sum(buffered) < self.limits.total_input or client.session.buffered == max(buffered):
            return _READ_SIZE
        # over the total: the others read into their reserve only, so a short command from a
        # new client (or an operator's OUTP OFF) is still answered
        return max(0, self.limits.reserve - client.session.buffered)

    def _receive(self, client: _Client) -> None:
        budget = self._read_budget(client)
        if not budget:
            return
        try:
            data = client.sock.recv(budget)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        if _QUICKACK is not None:  # a client's write-then-query is not held ~40 ms by Nagle
            client.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        client.last_input = time.monotonic()
        client.session.feed(self.faults.damage(data))
        client.unparsed = True

    def _run_commands(self) -> None:
        """Run each client's complete commands while its replies have room; round robin."""
        for client in list(self.clients.values()):
            if client.unparsed and client.sock in self.clients and self._has_room(client):
                self._run_client(client)

    def _run_client(self, client: _Client) -> None:
        """Run the client's commands until they run out, its replies fill up, or its time
        slice ends (the rest wait for the next round, so no client holds up the others)."""
        replies = client.session.replies()
        slice_end = time.monotonic() + _TIME_SLICE
        for reply, more in replies:
            out = self.faults.outgoing(reply) if reply else None
            if out:
                client.out += out
                self.queued_output += len(out)
            if client.session.closed:
                break
            if not more and (not self._has_room(client) or time.monotonic() > slice_end):
                replies.close()
                break
        else:
            client.unparsed = False
        if client.session.closed:
            self._drop(client, "closed by the session (fault injection)")
            return
        self._flush(client)

    # ------------------------------------------------------------------ output
    def _flush(self, client: _Client) -> None:
        if not client.out:
            return
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(client, f"send failed ({exc.strerror or exc})")
            return
        if sent:
            del client.out[:sent]
            self.queued_output -= sent
            client.last_output = time.monotonic()

    def _update_interest(self) -> None:
        for client in self.clients.values():
            mask = selectors.EVENT_READ if self._may_read(client) else 0
            if client.out:
                mask |= selectors.EVENT_WRITE
            if mask == client.mask:
                continue
            if not mask:  # waiting for room elsewhere: not watched until then
                self.selector.unregister(client.sock)
            elif not client.mask:
                self.selector.register(client.sock, mask)
            else:
                self.selector.modify(client.sock, mask)
            client.mask = mask

    # ------------------------------------------------------------------ time
    def _sweep(self, now: float) -> None:
        limits = self.limits
        for client in list(self.clients.values()):
            if client.out:
                if now - client.last_output > limits.stall_timeout:
                    self._drop(client, f"read no reply for {limits.stall_timeout:g} s")
            elif not client.mask & selectors.EVENT_READ:
                client.last_input = now  # the service is not reading it: not the client's idling
            elif not client.unparsed and now - client.last_input > limits.idle_timeout:
                self._drop(client, f"idle for {limits.idle_timeout:g} s")
        for sock, deadline in list(self.refused.items()):
            if now >= deadline:
                self._close_refused(sock)

    def _wait(self) -> float | None:
        """How long the loop may sleep: until a save is due, the next timeout, or at once."""
        if any(c.unparsed and self._has_room(c) for c in self.clients.values()):
            return 0.0
        waits = [self.service.seconds_to_next_save()]
        if self.clients or self.refused:
            waits.append(1.0)  # timeouts are checked at this granularity
        waits = [w for w in waits if w is not None]
        return min(waits) if waits else None
