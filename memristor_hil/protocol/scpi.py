"""SCPI over a byte stream: text commands and IEEE 488.2 definite-length binary blocks.

The VISA side of the protocol. Text commands are lines (``*IDN?``, ``*RST``, ``*CLS``,
``SYST:ERR?``, ``OUTP OFF``); every crossbar command travels as ``XBAR:<name>? #<n><len><data>``
whose block data is a wire message (:mod:`.messages`) followed by its CRC32, and whose
reply is a block of the same form carrying the reply message. Lines end in ``\\n``. Lengths are
bounded: a header by :data:`MAX_HEADER`, a text line by :data:`MAX_LINE`, a block by
:data:`MAX_BLOCK`; anything longer is refused without being buffered.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .messages import MAX_MESSAGE, Op

__all__ = [
    "BINARY_COMMANDS",
    "MAX_BLOCK",
    "MAX_HEADER",
    "MAX_LINE",
    "BlockCommand",
    "ScpiFault",
    "ScpiParser",
    "TextCommand",
    "block_message",
    "encode_block",
    "encode_command",
    "encode_reply_block",
    "read_block",
]

MAX_HEADER = 64
MAX_LINE = 256
MAX_BLOCK = MAX_MESSAGE + 4
_CRC = struct.Struct("<I")

#: The SCPI header of each binary crossbar command.
BINARY_COMMANDS: dict[Op, str] = {
    Op.IDENTIFY: "XBAR:IDEN?",
    Op.RESET: "XBAR:RST?",
    Op.CONFIGURE: "XBAR:CONF?",
    Op.APPLY: "XBAR:APPL?",
    Op.READ: "XBAR:READ?",
    Op.READ_REGION: "XBAR:REG?",
    Op.READ_ALL: "XBAR:ALL?",
    Op.ERROR: "XBAR:ERR?",
    Op.SAFE: "XBAR:SAFE?",
    Op.CLAIM: "XBAR:CLAIM?",
}
_HEADER_OPS = {header: op for op, header in BINARY_COMMANDS.items()}


@dataclass(frozen=True)
class TextCommand:
    """A text command: normalised header (upper case, no leading colon) and its arguments.

    ``path`` is the compound-message path the header may be relative to (SCPI: after
    ``SYST:ERR?;`` a bare ``VERS?`` means ``SYST:VERS?``; empty for the first command), and
    ``more`` says that another command of the same message follows (its reply is joined to
    this one's with ``;``, and one newline ends them all).
    """

    header: str
    args: str
    path: str = ""
    more: bool = False

    @property
    def is_query(self) -> bool:
        return self.header.endswith("?")


@dataclass(frozen=True)
class BlockCommand:
    """A binary crossbar command: its opcode (from the header) and its block data."""

    header: str
    op: Op
    data: bytes


@dataclass(frozen=True)
class ScpiFault:
    """Input the parser refused, with the SCPI error code to queue and whether it was a query."""

    code: int
    message: str
    header: str = ""

    @property
    def is_query(self) -> bool:
        return self.header.endswith("?")


def encode_block(data: bytes) -> bytes:
    """``#<n><len><data>``, an IEEE 488.2 definite-length block."""
    size = str(len(data)).encode()
    return b"#" + str(len(size)).encode() + size + data


def encode_command(op: Op, message: bytes) -> bytes:
    """The line carrying a wire request: ``XBAR:<name>? #<block>\\n``, block = message + CRC."""
    data = message + _CRC.pack(zlib.crc32(message))
    return BINARY_COMMANDS[op].encode() + b" " + encode_block(data) + b"\n"


def encode_reply_block(message: bytes) -> bytes:
    """The reply to a binary command: a block carrying ``message + CRC32``, then ``\\n``."""
    return encode_block(message + _CRC.pack(zlib.crc32(message))) + b"\n"


def block_message(data: bytes) -> bytes | None:
    """The message inside block data, or None if its CRC32 does not match."""
    if len(data) < _CRC.size:
        return None
    message, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    return message if zlib.crc32(message) == crc else None


def read_block(read_exact: Callable[[int], bytes], max_size: int = MAX_BLOCK) -> bytes:
    """Read one ``#<n><len><data>\\n`` block with ``read_exact(count)``; returns ``data``.

    Raises
    ------
    ValueError
        If the bytes are not a definite-length block or its length exceeds ``max_size``.
    """
    head = read_exact(2)
    if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
        raise ValueError(f"expected a definite-length block, got {head!r}")
    digits = read_exact(int(head[1:2]))
    if not digits.isdigit():
        raise ValueError(f"block length {digits!r} is not a number")
    size = int(digits)
    if size > max_size:
        raise ValueError(f"block of {size} bytes exceeds the {max_size}-byte bound")
    data = read_exact(size + 1)
    if data[-1:] != b"\n":
        raise ValueError("block not followed by a newline")
    return data[:-1]


class ScpiParser:
    """Splits a byte stream into :class:`TextCommand`, :class:`BlockCommand` and
    :class:`ScpiFault` events. After a fault it skips to the next newline."""

    def __init__(self, max_block: int = MAX_BLOCK) -> None:
        self.max_block = max_block
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed into events."""
        return len(self._buf)

    def events(self) -> Iterator[TextCommand | BlockCommand | ScpiFault]:
        """Yield every complete command or fault in the buffer; a partial command stays.

        A text line may carry several commands separated by ``;`` (a compound message); each
        is yielded as its own :class:`TextCommand`, all but the last with ``more=True``.
        """
        buf = self._buf
        while buf:
            if self._skipping:
                end = buf.find(b"\n")
                if end < 0:
                    buf.clear()
                    return
                del buf[: end + 1]
                self._skipping = False
                continue
            space, newline = buf.find(b" ", 0, MAX_HEADER + 1), buf.find(b"\n", 0, MAX_HEADER + 1)
            cut = newline if space < 0 or 0 <= newline < space else space
            if cut >= 0 and cut == space and b";" not in buf[:cut]:
                # a header then its argument: a binary block, or text up to the newline
                if cut + 1 >= len(buf):
                    return
                if buf[cut + 1] == ord("#"):
                    header = _normalise(bytes(buf[:cut]))
                    if header is None:
                        del buf[: cut + 1]
                        self._skipping = True
                        yield ScpiFault(-102, "syntax error: header is not printable ASCII")
                        continue
                    event = self._block(header, cut + 1)
                    if event is None:
                        return
                    yield event
                    continue
            end = buf.find(b"\n", 0, MAX_LINE + 1)
            if end < 0:
                if len(buf) <= MAX_LINE:
                    return
                self._skipping = True
                yield ScpiFault(-109, f"line longer than {MAX_LINE} bytes")
                continue
            line = bytes(buf[:end])
            del buf[: end + 1]
            yield from _text_commands(line)

    def _block(self, header: str, start: int) -> BlockCommand | ScpiFault | None:
        """Parse a block starting at ``start`` (the ``#``); None while it is incomplete."""
        buf = self._buf
        if len(buf) < start + 2:
            return None
        ndigits = buf[start + 1] - ord("0")
        if not 1 <= ndigits <= 9:
            self._skipping = True
            del buf[: start + 2]
            return ScpiFault(-161, "invalid block data: need a definite-length block #<n>", header)
        if len(buf) < start + 2 + ndigits:
            return None
        digits = bytes(buf[start + 2 : start + 2 + ndigits])
        if not digits.isdigit():
            self._skipping = True
            del buf[: start + 2]
            return ScpiFault(-161, f"invalid block length {digits!r}", header)
        size = int(digits)
        if size > self.max_block:
            self._skipping = True
            del buf[: start + 2 + ndigits]
            return ScpiFault(-223, f"block of {size} bytes exceeds {self.max_block}", header)
        end = start + 2 + ndigits + size
        if len(buf) < end + 1:
            return None
        data = bytes(buf[start + 2 + ndigits : end])
        terminated = buf[end] == ord("\n")
        del buf[: end + 1]
        if not terminated:
            self._skipping = True
            return ScpiFault(-102, "syntax error: block not followed by a newline", header)
        op = _HEADER_OPS.get(header)
        if op is None:
            return ScpiFault(-113, f"undefined header {header!r}", header)
        return BlockCommand(header, op, data)


def _text_commands(line: bytes) -> Iterator[TextCommand | ScpiFault]:
    """The commands of one text line, split at ``;`` (IEEE 488.2 compound messages)."""
    units = [unit.strip(b"\r\t ") for unit in line.split(b";")]
    units = [unit for unit in units if unit]
    path = ""
    for i, unit in enumerate(units):
        head, _, args = unit.partition(b" ")
        header = _normalise(head)
        if header is None:
            yield ScpiFault(-102, "syntax error: header is not printable ASCII")
            return
        if len(header) > MAX_HEADER:
            yield ScpiFault(-112, f"program mnemonic longer than {MAX_HEADER} bytes")
            return
        args = args.strip()
        if not all(32 <= c < 127 for c in args):
            yield ScpiFault(-102, "syntax error: argument is not printable ASCII", header)
            return
        absolute = head.startswith(b":")
        more = i + 1 < len(units)
        yield TextCommand(header, args.decode("ascii"), "" if absolute else path, more)
        if ":" in header:
            # SCPI: the next header without a leading colon is relative to this one's path
            path = header.rpartition(":")[0]


def _normalise(header: bytes) -> str | None:
    header = header.strip(b"\r\t ")
    if not all(32 < c < 127 for c in header):
        return None
    return header.decode("ascii").lstrip(":").upper()
