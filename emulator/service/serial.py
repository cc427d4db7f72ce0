"""The emulator service on a pseudo-terminal: binary frames, as a serial crossbar controller."""

from __future__ import annotations

import os
import select
import selectors
import termios
import time
import tty
from collections.abc import Callable

from memristor_hil.protocol.framing import FrameDecoder, FrameFault, encode_frame

from .core import CrossbarService
from .faults import Faults
from .stop import StopFlag

__all__ = ["open_raw_pty", "serve_serial", "write_all"]

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
    master, slave = open_raw_pty()
    decoder = FrameDecoder()
    selector = selectors.DefaultSelector()
    selector.register(master, selectors.EVENT_READ)
    selector.register(stop, selectors.EVENT_READ)
    try:
        announce(os.ttyname(slave))
        while not stop.is_set:
            for key, _ in selector.select(service.seconds_to_next_save()):
                if key.fileobj != master:
                    continue
                try:
                    data = os.read(master, _READ_SIZE)
                except BlockingIOError:
                    continue
                decoder.feed(faults.damage(data))
                for event in decoder.events():
                    if isinstance(event, FrameFault):
                        reply = service.frame_fault(f"{event.reason} ({event.discarded} bytes)")
                    else:
                        reply = service.handle(event)
                    out = faults.outgoing(encode_frame(reply))
                    if out:
                        write_all(master, slave, out)
            service.tick()
    finally:
        selector.close()
        os.close(master)
        os.close(slave)


def open_raw_pty() -> tuple[int, int]:
    """A new pseudo-terminal in raw mode without echo: ``(master, slave)``, master non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    return master, slave


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
            termios.tcflush(slave, termios.TCIFLUSH)  # stale replies nobody will read
            return
        select.select([], [master], [], min(deadline - now, 0.1))
