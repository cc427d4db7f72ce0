"""Serial frames: how wire messages travel over a byte stream that can lose or corrupt bytes.

A frame is::

    sync 0xA5 0x5A | length u32 | header CRC32 u32 | message (length bytes) | CRC32 u32

The header CRC (over sync and length) lets a receiver reject a false sync, or a damaged length,
before it waits for that many bytes; the trailing CRC (over the message) covers the content.
Little-endian throughout; CRC32 is zlib's (IEEE 802.3). A receiver that meets anything else
*hunts*: it drops one byte and searches for the next sync, so a lost or corrupt byte costs one
frame, never the link.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .messages import MAX_MESSAGE

__all__ = [
    "FRAME_IDLE_TIMEOUT",
    "HEADER_SIZE",
    "SYNC",
    "FrameDecoder",
    "FrameFault",
    "encode_frame",
]

SYNC = b"\xa5\x5a"
_LENGTH = struct.Struct("<I")
_CRC = struct.Struct("<I")
HEADER_SIZE = len(SYNC) + _LENGTH.size + _CRC.size
TRAILER_SIZE = _CRC.size
#: Seconds of silence after which a receiver drops the partial frame it holds and hunts again
#: (docs/protocol.md, "Receive timeout"). A sender never pauses inside a frame for longer than
#: a quarter of this.
FRAME_IDLE_TIMEOUT = 0.2


def encode_frame(message: bytes) -> bytes:
    """Wrap a wire message in a serial frame."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes exceeds the {MAX_MESSAGE}-byte bound")
    head = SYNC + _LENGTH.pack(len(message))
    return b"".join(
        (
            head,
            _CRC.pack(zlib.crc32(head)),
            message,
            _CRC.pack(zlib.crc32(message)),
        )
    )


@dataclass(frozen=True)
class FrameFault:
    """Something the decoder threw away: garbage between frames or a frame failing a check."""

    reason: str
    discarded: int


class FrameDecoder:
    """Turns a byte stream into messages, resynchronising after lost or corrupt bytes.

    Feed it bytes with :meth:`feed`; iterate :meth:`events` for complete messages (``bytes``)
    and :class:`FrameFault` records. Memory is bounded: a frame longer than ``max_message`` is
    rejected by its header, so the buffer never holds more than one maximal frame plus one read.

    A frame cut short (a sender killed mid-write, a cable pulled), or a false header that passed
    its CRC, would otherwise hold the receiver until its announced length arrives: when no byte
    has arrived for ``idle_timeout`` seconds, :meth:`expire` drops the partial frame one byte at
    a time, hunting for any complete frame behind it, so the receiver is free again.
    """

    def __init__(
        self, max_message: int = MAX_MESSAGE, idle_timeout: float = FRAME_IDLE_TIMEOUT
    ) -> None:
        self.max_message = max_message
        self.idle_timeout = float(idle_timeout)
        self._buf = bytearray()
        self._last = time.monotonic()

    def feed(self, data: bytes, now: float | None = None) -> None:
        """Append received bytes (``now``: when they arrived, by ``time.monotonic``)."""
        if data:
            self._buf += data
            self._last = time.monotonic() if now is None else now

    def idle_deadline(self) -> float | None:
        """When the partial frame held will expire (``time.monotonic``); None if none is held."""
        return self._last + self.idle_timeout if self._buf else None

    def expire(self, now: float | None = None) -> Iterator[bytes | FrameFault]:
        """If the partial frame has been idle for ``idle_timeout``, drop it and hunt through the
        rest; yields what that finds (messages, and one fault for all the bytes dropped)."""
        now = time.monotonic() if now is None else now
        if not self._buf or now - self._last < self.idle_timeout:
            return
        dropped = 0
        while self._buf:
            del self._buf[:1]
            dropped += 1
            for event in self.events():
                if isinstance(event, FrameFault):
                    dropped += event.discarded
                    continue
                if dropped:
                    yield FrameFault("partial frame expired (input idle)", dropped)
                    dropped = 0
                yield event
        if dropped:
            yield FrameFault("partial frame expired (input idle)", dropped)

    def clear(self) -> None:
        """Forget any partial frame (after a reconnect)."""
        self._buf.clear()

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf)

    def needed(self) -> int:
        """How many more bytes would complete the frame that starts the buffer (at least 1)."""
        buf = self._buf
        if len(buf) >= HEADER_SIZE and buf[:2] == SYNC:
            (length,) = _LENGTH.unpack_from(buf, 2)
            if length <= self.max_message:
                return max(1, HEADER_SIZE + length + TRAILER_SIZE - len(buf))
        return max(1, HEADER_SIZE - len(buf))

    def events(self) -> Iterator[bytes | FrameFault]:
        """Yield every complete message and fault in the buffer, leaving a partial frame."""
        buf = self._buf
        while buf:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1] == SYNC[0] else 0
                dropped = len(buf) - keep
                del buf[:dropped]
                if dropped:
                    yield FrameFault("bytes outside any frame", dropped)
                return
            if start:
                del buf[:start]
                yield FrameFault("bytes outside any frame", start)
            if len(buf) < HEADER_SIZE:
                return
            (length,) = _LENGTH.unpack_from(buf, 2)
            (head_crc,) = _CRC.unpack_from(buf, 6)
            if head_crc != zlib.crc32(memoryview(buf)[:6]):
                del buf[:1]
                yield FrameFault("frame header failed its CRC", 1)
                continue
            if length > self.max_message:
                del buf[:1]
                yield FrameFault(f"frame length {length} exceeds {self.max_message}", 1)
                continue
            end = HEADER_SIZE + length
            if len(buf) < end + TRAILER_SIZE:
                return
            message = bytes(buf[HEADER_SIZE:end])
            (crc,) = _CRC.unpack_from(buf, end)
            if crc != zlib.crc32(message):
                del buf[:1]  # hunt: the real frame may start inside this one
                yield FrameFault("frame failed its CRC", 1)
                continue
            del buf[: end + TRAILER_SIZE]
            yield message
