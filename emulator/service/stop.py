"""A stop request that wakes a selector loop: set by SIGINT/SIGTERM or by a test."""

from __future__ import annotations

import signal
import socket
from types import FrameType

__all__ = ["StopFlag"]


class StopFlag:
    """A flag plus a socket the service loops select on, so a stop wakes them at once."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.is_set = False
        self.reason = ""

    def fileno(self) -> int:
        """The descriptor that becomes readable when the flag is set."""
        return self._reader.fileno()

    def set(self, reason: str = "stop requested") -> None:
        self.is_set = True
        self.reason = reason
        try:
            self._writer.send(b"x")
        except OSError:  # buffer full: the loop is already awake
            pass

    def install(self) -> None:
        """Set the flag on SIGINT and SIGTERM (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.set(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
