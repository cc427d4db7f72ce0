"""The emulator service on a TCP socket: SCPI with binary blocks, as a VISA instrument."""

from __future__ import annotations

import ipaddress
import selectors
import socket
from collections.abc import Callable

from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Status
from memristor_hil.protocol.scpi import (
    BlockCommand,
    ScpiFault,
    ScpiParser,
    TextCommand,
    block_message,
    encode_reply_block,
)

from .core import CrossbarService
from .faults import Faults
from .stop import StopFlag

__all__ = ["parse_address", "scpi_reply", "serve_tcp"]

_READ_SIZE = 1 << 20
_SEND_TIMEOUT = 5.0
_MAX_CLIENTS = 8


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


def scpi_reply(service: CrossbarService, event: TextCommand | BlockCommand | ScpiFault) -> bytes:
    """What the service answers to one parsed SCPI event (empty: nothing, as SCPI wants)."""
    if isinstance(event, ScpiFault):
        service.queue_error(event.code, event.message)
        if event.header.startswith("XBAR:") and event.is_query:
            return encode_reply_block(wire.encode_reply(0, 0, Status.FRAME, b""))
        return b""
    if isinstance(event, BlockCommand):
        message = block_message(event.data)
        if message is None:
            return encode_reply_block(service.frame_fault("block failed its CRC"))
        if len(message) >= 5 and message[4] != event.op:
            reply = wire.encode_reply(
                int.from_bytes(message[:4], "little"),
                message[4],
                Status.MALFORMED,
                wire.encode_error(f"{event.header} carries opcode 0x{message[4]:02x}"),
                int.from_bytes(message[5:9], "little"),
            )
            service.queue_error(-104, f"{event.header} carries the wrong opcode")
            return encode_reply_block(reply)
        return encode_reply_block(service.handle(message))
    header = event.header
    if header in ("*IDN?",):
        return service.xbar.identity.encode("ascii", "replace") + b"\n"
    if header == "*RST":
        service.reset()
    elif header == "*CLS":
        service.errors.clear()
    elif header in ("SYST:ERR?", "SYSTEM:ERROR?", "SYST:ERR:NEXT?", "SYSTEM:ERROR:NEXT?"):
        code, message = service.next_error()
        text = message.replace('"', "'").encode("ascii", "replace")
        return f"{code},".encode() + b'"' + text + b'"\n'
    elif header in ("OUTP", "OUTPUT") and event.args.upper() in ("OFF", "0"):
        service.safe()
    elif header in ("OUTP?", "OUTPUT?"):
        return b"0\n" if service.outputs_safe else b"1\n"
    elif header in ("*OPC?",):
        return b"1\n"
    else:
        service.queue_error(-113, f"undefined header {header!r}")
    return b""


def serve_tcp(
    service: CrossbarService,
    stop: StopFlag,
    address: tuple[str, int],
    announce: Callable[[str], None],
    faults: Faults | None = None,
) -> None:
    """Serve SCPI on ``address`` until ``stop`` is set; ``announce`` gets ``HOST:PORT``.

    Up to 8 clients at once, each with its own parser; commands run one at a time.
    """
    faults = faults or Faults()
    listener = socket.create_server(address, reuse_port=False)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(stop, selectors.EVENT_READ)
    clients: dict[socket.socket, ScpiParser] = {}
    try:
        host, port = listener.getsockname()[:2]
        announce(f"{host}:{port}")
        while not stop.is_set:
            for key, _ in selector.select(service.seconds_to_next_save()):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    if len(clients) >= _MAX_CLIENTS:
                        conn.close()
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.settimeout(_SEND_TIMEOUT)
                    clients[conn] = ScpiParser()
                    selector.register(conn, selectors.EVENT_READ)
                elif key.fileobj in clients:
                    _serve_client(key.fileobj, clients, selector, service, faults)
            service.tick()
    finally:
        for conn in clients:
            conn.close()
        selector.close()
        listener.close()


def _serve_client(
    conn: socket.socket,
    clients: dict[socket.socket, ScpiParser],
    selector: selectors.BaseSelector,
    service: CrossbarService,
    faults: Faults,
) -> None:
    try:
        data = conn.recv(_READ_SIZE)
    except OSError:
        data = b""
    if not data:
        selector.unregister(conn)
        del clients[conn]
        conn.close()
        return
    parser = clients[conn]
    parser.feed(faults.damage(data))
    for event in parser.events():
        reply = scpi_reply(service, event)
        if not reply:
            continue
        out = faults.outgoing(reply)
        if not out:
            continue
        try:
            conn.sendall(out)
        except OSError:  # the client went away or stopped reading: drop it
            selector.unregister(conn)
            del clients[conn]
            conn.close()
            return
