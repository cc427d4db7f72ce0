"""The emulator service on a pseudo-terminal: binary frames, as a serial crossbar controller."""

from __future__ import annotations

import os
import select
import selectors
import termios
import time
import tty
from collections.abc import Callable, Iterable

from memristor_hil.protocol.framing import FrameDecoder, FrameFault, encode_frame

from .core import CrossbarService
from .faults import Faults
from .stop import StopFlag

__all__ = ["open_raw_pty", "serve_pty", "serve_serial", "write_all"]

_READ_SIZE = 1 << 20
_WRITE_TIMEOUT = 5.0


def serve_serial(
    service: CrossbarService,
    stop: StopFlag,
    announce: Callable[[str], None],
    faults: Faults | None = None,
) -> None:
    """Serve frames on a new pseudo-terminal until ``stop`` is set.

    ``announce`` receives the path of the terminal's device (the port a driver opens). The
    service keeps its own handle on that device, so clients may come and go.
    """
    faults = faults or Faults()
    decoder = FrameDecoder(service.max_message)

    def on_bytes(data: bytes, master: int, slave: int) -> None:
        decoder.feed(data)
        _answer(service, decoder.events(), decoder, master, slave, faults)

    def on_quiet(master: int, slave: int) -> None:
        _answer(service, decoder.expire(), decoder, master, slave, faults)

    serve_pty(
        service,
        stop,
        announce,
        faults,
        on_bytes,
        on_quiet=on_quiet,
        wait=lambda save_in: _wait(save_in, decoder),
    )


def serve_pty(
    service: CrossbarService,
    stop: StopFlag,
    announce: Callable[[str], None],
    faults: Faults,
    on_bytes: Callable[[bytes, int, int], None],
    *,
    on_quiet: Callable[[int, int], None] | None = None,
    wait: Callable[[float | None], float | None] | None = None,
    read_size: int = _READ_SIZE,
) -> None:
    """The pseudo-terminal loop every serial dialect shares, until ``stop`` is set.

    Opens a raw pty, announces its path, and hands each read (after ``faults.damage``) to
    ``on_bytes(data, master, slave)``; ``on_quiet(master, slave)`` runs when a wait ends with
    nothing read; ``wait(seconds_to_next_save)`` may shorten the wait (a partial frame's
    deadline). Saves the state when due, and closes the pty however it ends.
    """
    master, slave = open_raw_pty()
    path = os.ttyname(slave)
    selector = selectors.DefaultSelector()
    selector.register(master, selectors.EVENT_READ)
    selector.register(stop, selectors.EVENT_READ)
    # The service holds the terminal open only while no client is connected (so that a client
    # may come at any time); once a client talks, the service lets go, and the client's close
    # shows as a hang-up (EIO on the master): its claim ends (docs/protocol.md 5.1).
    held = slave
    link = object()
    try:
        announce(path)
        while not stop.is_set:
            save_in = service.seconds_to_next_save()
            ready = selector.select(save_in if wait is None else wait(save_in))
            for key, _ in ready:
                if key.fileobj != master:
                    continue
                try:
                    data = os.read(master, read_size)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: no client holds the terminal any more
                    data = b""
                if not data:
                    service.link_lost(link)
                    link = object()
                    held = _hold(path, held)
                    time.sleep(0.01)  # a hung-up master stays readable until someone opens
                    continue
                if held != -1:  # a client is here: let go, so that its hang-up shows
                    os.close(held)
                    held = -1
                service.link = link
                on_bytes(faults.damage(data), master, held)
            if not ready and on_quiet is not None:
                on_quiet(master, held)
            service.tick()
    finally:
        selector.close()
        os.close(master)
        if held != -1:
            os.close(held)


def _hold(path: str, held: int) -> int:
    """The service's own handle on its terminal (opened again if it had let go)."""
    if held != -1:
        return held
    try:
        return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return -1


def open_raw_pty() -> tuple[int, int]:
    """A new pseudo-terminal in raw mode without echo: ``(master, slave)``, master non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    return master, slave


def _wait(save_in: float | None, decoder: FrameDecoder) -> float | None:
    """How long to wait for input: until the next save, or until a partial frame expires."""
    deadline = decoder.idle_deadline()
    if deadline is None:
        return save_in
    expire_in = max(0.0, deadline - time.monotonic()) + 0.001
    return expire_in if save_in is None else min(save_in, expire_in)


def _answer(
    service: CrossbarService,
    events: Iterable[bytes | FrameFault],
    decoder: FrameDecoder,
    master: int,
    slave: int,
    faults: Faults,
) -> None:
    """Reply to each message; a run of faults gets ONE FRAME reply (docs/protocol.md 3.1),
    sent before the next message's reply, or once no partial frame is left to wait for."""
    dropped = 0
    reasons: list[str] = []

    def send(reply: bytes) -> None:
        out = faults.outgoing(encode_frame(reply))
        if out:
            write_all(master, slave, out)

    for event in events:
        if isinstance(event, FrameFault):
            dropped += event.discarded
            if event.reason not in reasons:
                reasons.append(event.reason)
            continue
        if dropped:
            send(service.frame_fault(f"{'; '.join(reasons)} ({dropped} bytes dropped)"))
            dropped, reasons = 0, []
        send(service.handle(event))
    if dropped:
        send(service.frame_fault(f"{'; '.join(reasons)} ({dropped} bytes dropped)"))


def write_all(master: int, slave: int, data: bytes) -> None:
    """Write a reply; if nobody reads it for a while, drop it (the client has gone)."""
    view = memoryview(data)
    deadline = None
    while view:
        try:
            view = view[os.write(master, view) :]
            continue
        except BlockingIOError:
            pass
        # the pty takes ~4 kB at a time: wait until the client has read some
        now = time.monotonic()
        deadline = deadline or now + _WRITE_TIMEOUT
        if now >= deadline:
            if slave != -1:  # -1: the service let go of its terminal (a client holds it)
                termios.tcflush(slave, termios.TCIFLUSH)  # stale replies nobody will read
            return
        select.select([], [master], [], min(deadline - now, 0.1))
