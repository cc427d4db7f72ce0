"""Emulated TSP instruments on TCP sockets (raw socket, as a VISA ``TCPIP::...::SOCKET``).

One listener per instrument, served from one loop: each received line is handed to its
instrument and whatever it prints is sent back. Lines are bounded (:data:`MAX_LINE`); a client
that floods the service loses its excess, never the service's memory. For tests,
``latency`` delays every reply and ``drop_after`` closes a client's connection after that many
lines (once per instrument), as a cable pulled mid-batch would, and ``stall_after`` executes
that line but never answers on that connection again (a hung session).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Sequence

from .stop import StopFlag
from .tsp_instrument import MAX_LINE, TspInstrument

__all__ = ["serve_tsp"]

_READ_SIZE = 1 << 16
_SEND_TIMEOUT = 5.0
_MAX_CLIENTS = 8


class _Client:
    def __init__(self, instrument: TspInstrument) -> None:
        self.instrument = instrument
        self.pending = bytearray()
        self.skipping = False
        self.stalled = False


def serve_tsp(
    instruments: Sequence[tuple[TspInstrument, tuple[str, int]]],
    stop: StopFlag,
    announce: Callable[[str], None],
    *,
    latency: float = 0.0,
    drop_after: int = 0,
    stall_after: int = 0,
) -> None:
    """Serve each instrument on its address until ``stop`` is set.

    ``announce`` gets the bound addresses, ``"HOST:PORT HOST:PORT ..."`` in the order given.
    """
    selector = selectors.DefaultSelector()
    listeners: dict[socket.socket, TspInstrument] = {}
    clients: dict[socket.socket, _Client] = {}
    faulted: set[int] = set()
    try:
        where = []
        for instrument, address in instruments:
            listener = socket.create_server(address, reuse_port=False)
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
            listeners[listener] = instrument
            host, port = listener.getsockname()[:2]
            where.append(f"{host}:{port}")
        selector.register(stop, selectors.EVENT_READ)
        announce(" ".join(where))
        while not stop.is_set:
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                if sock in listeners:
                    conn, _ = sock.accept()
                    if len(clients) >= _MAX_CLIENTS:
                        conn.close()
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.settimeout(_SEND_TIMEOUT)
                    clients[conn] = _Client(listeners[sock])
                    selector.register(conn, selectors.EVENT_READ)
                elif sock in clients:
                    alive = _serve(sock, clients[sock], latency, drop_after, stall_after, faulted)
                    if not alive:
                        selector.unregister(sock)
                        del clients[sock]
                        sock.close()
    finally:
        for conn in clients:
            conn.close()
        for listener in listeners:
            listener.close()
        selector.close()


def _serve(
    conn: socket.socket,
    client: _Client,
    latency: float,
    drop_after: int,
    stall_after: int,
    faulted: set,
) -> bool:
    """Read what arrived and answer each complete line; False when the client is gone."""
    try:
        data = conn.recv(_READ_SIZE)
    except OSError:
        return False
    if not data:
        return False
    instrument = client.instrument
    client.pending += data
    while True:
        end = client.pending.find(b"\n")
        if end < 0:
            if len(client.pending) > MAX_LINE:
                client.pending.clear()
                if not client.skipping:
                    instrument.overlong_line()
                client.skipping = True
            return True
        line = bytes(client.pending[:end])
        del client.pending[: end + 1]
        if client.skipping:  # the tail of an overlong line
            client.skipping = False
            continue
        if client.stalled:
            continue  # this connection hangs: nothing more is executed or answered
        if drop_after and id(instrument) not in faulted and instrument.lines + 1 >= drop_after:
            faulted.add(id(instrument))
            instrument.lines += 1
            return False  # the link "fails" before this line arrives
        reply = instrument.handle_line(line)
        if stall_after and id(instrument) not in faulted and instrument.lines >= stall_after:
            faulted.add(id(instrument))
            client.stalled = True  # executed, but the reply never comes
            continue
        if reply:
            if latency > 0:
                time.sleep(latency)
            try:
                conn.sendall(reply)
            except OSError:
                return False
