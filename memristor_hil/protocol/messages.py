"""The crossbar wire protocol's messages: one codec for the drivers and the emulator service.

A *message* is the transport-independent unit (``docs/protocol.md`` is the specification):

- request: ``seq u32 | opcode u8 | session u32 | body``
- reply:   ``seq u32 | opcode u8 | status u8 | session u32 | body``

(protocol version 2: the session is the controlling host's claim, echoed in every reply;
version 3 adds one APPLY flag, read-back in the device's native precision; version 4 adds the
APPLY flag "more parts of this batch follow" and reports an interrupted split batch).

All integers are little-endian, floats IEEE 754 binary64 (so resistances round-trip exactly),
except a version-3 native read-back from binary32 devices: binary32, just as exact.
The serial framing (:mod:`.framing`) and the SCPI binary blocks (:mod:`.scpi`) carry these
messages and add the integrity check. Every length and count read from a message is checked
against the bounds below before anything is allocated; nothing is evaluated or unpickled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..errors import InvalidBatchError, ProtocolError
from ..pulses import Cells, PulseBatch, SafetyLimits

__all__ = [
    "MAX_CELLS",
    "MAX_MESSAGE",
    "MAX_TEXT",
    "MIN_MESSAGE",
    "PROTOCOL_VERSION",
    "REPLY_HEADER",
    "REQUEST_HEADER",
    "Claim",
    "DeviceInfo",
    "Op",
    "Reply",
    "Request",
    "Status",
    "WireError",
    "DecodedBatch",
    "SEQUENCED",
    "SUPPORTED_VERSIONS",
    "decode_batch",
    "decode_cells",
    "decode_error",
    "decode_error_entry",
    "decode_text",
    "decode_info",
    "decode_limits",
    "decode_region",
    "decode_reply",
    "decode_request",
    "decode_readings",
    "decode_resistances",
    "reply_status",
    "read_cells_per_command",
    "split_batch",
    "encode_batch",
    "encode_cells",
    "encode_error",
    "encode_error_entry",
    "encode_text",
    "encode_info",
    "encode_limits",
    "encode_region",
    "encode_reply",
    "encode_request",
    "encode_readings",
    "encode_resistances",
]

#: The version this package's devices (the emulator service) speak. Version 3 is version 2
#: plus the APPLY flag 0x20 (native read-back precision, docs/protocol.md section 2); version
#: 4 adds the APPLY flag 0x40 (more parts of a split batch follow) and the ``interrupted``
#: field of the device info (docs/protocol.md section 5.2).
PROTOCOL_VERSION = 4
#: The versions the drivers speak: a version-2 device is driven without the native read-back
#: flag, a version-2 or 3 device without the "more parts follow" flag.
SUPPORTED_VERSIONS = (2, 3, 4)
#: Most cells one command may name or one reply may carry (2**20: a 1024 x 1024 crossbar).
#: A device reports its own, smaller bound at IDENTIFY (``DeviceInfo.max_cells``).
MAX_CELLS = 1 << 20
#: Largest message, in bytes: a full per-cell batch of MAX_CELLS cells fits. A device reports
#: its own, smaller bound at IDENTIFY (``DeviceInfo.max_message``).
MAX_MESSAGE = 14 + MAX_CELLS * (4 + 4 + 8 + 8) + 64
#: The smallest ``max_message`` a device may report: an IDENTIFY reply with a short identity.
MIN_MESSAGE = 256
#: Longest identity or error text, in bytes of UTF-8.
MAX_TEXT = 1024

_REQUEST = struct.Struct("<IBI")
_REPLY = struct.Struct("<IBBI")
#: Bytes before the body of a request and of a reply.
REQUEST_HEADER = _REQUEST.size
REPLY_HEADER = _REPLY.size
_LIMITS = struct.Struct("<ddddId")
_INFO = struct.Struct("<HIII")
_BOUNDS = struct.Struct("<IIHI")
_BATCH_HEAD = struct.Struct("<BBI")
_WINDOW = struct.Struct("<II")
_REGION = struct.Struct("<IIII")
_COUNT = struct.Struct("<I")
_ERROR = struct.Struct("<hH")
_TEXT_LEN = struct.Struct("<H")

# APPLY flags
_READ_BACK = 0x01
_BITMAP = 0x02
_PER_CELL_PULSES = 0x04
_PER_CELL_VOLTAGE = 0x08
_PER_CELL_WIDTH = 0x10
_NATIVE_READINGS = 0x20  # version 3: read back in the device's own precision
_MORE_PARTS = 0x40  # version 4: more parts of this (split) batch follow
_KNOWN_FLAGS = 0x7F
_INTERRUPTED = struct.Struct("<III")
_PULSE_DTYPES = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}


class Op(IntEnum):
    """Command opcodes."""

    IDENTIFY = 0x01
    RESET = 0x02
    CONFIGURE = 0x03
    APPLY = 0x04
    READ = 0x05
    READ_REGION = 0x06
    READ_ALL = 0x07
    ERROR = 0x08
    SAFE = 0x09
    CLAIM = 0x0A


class Claim(IntEnum):
    """The CLAIM command's mode byte."""

    CLAIM = 0  # become the controlling host, unless another session is
    TAKE_OVER = 1  # become the controlling host even if another session is (it died)
    RELEASE = 2  # stop being the controlling host


#: Commands that change device state: their replies are cached by sequence number.
SEQUENCED = frozenset({Op.CONFIGURE, Op.APPLY})


class Status(IntEnum):
    """Reply status codes (0 is success; the rest carry an error text)."""

    OK = 0
    FRAME = 1  # a frame or block failed its check; the request was not seen
    MALFORMED = 2  # the message could not be decoded
    UNKNOWN_COMMAND = 3
    OUT_OF_RANGE = 4  # an address outside the crossbar
    SAFETY = 5  # a voltage, width or count outside the safety limits
    SEQUENCE = 6  # a sequence number reused for a different command
    DEVICE = 7  # the device could not execute the command
    TOO_LARGE = 8  # a length or count above the protocol's bounds
    BUSY = 9  # the crossbar is controlled by another host (session)


class WireError(ProtocolError):
    """A message broke the protocol; ``status`` says which reply status to answer with."""

    def __init__(self, message: str, status: Status = Status.MALFORMED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A decoded request message."""

    seq: int
    op: int
    body: bytes
    session: int = 0


@dataclass(frozen=True)
class Reply:
    """A decoded reply message."""

    seq: int
    op: int
    status: int
    body: bytes
    session: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    """What IDENTIFY, CLAIM and CONFIGURE report.

    ``limits`` are the limits in force (CONFIGURE may narrow them), ``hardware_limits`` the
    device's own (default: the same); ``max_message``, ``max_cells`` and ``window`` are the
    device's bounds (largest message, cells per command, remembered sequenced commands);
    ``owner`` is the session of the controlling host (0: none); ``interrupted`` (version 4)
    is the split batch whose host lost its claim before sending its last part:
    ``(session, seq, entries)`` of its last executed part and the batch entries executed,
    or None.
    """

    rows: int
    cols: int
    limits: SafetyLimits
    identity: str
    last_seq: int = 0
    version: int = PROTOCOL_VERSION
    hardware_limits: SafetyLimits | None = None
    max_message: int = MAX_MESSAGE
    max_cells: int = MAX_CELLS
    window: int = 16
    owner: int = 0
    interrupted: tuple[int, int, int] | None = None

    @property
    def hardware(self) -> SafetyLimits:
        """The hardware limits (the limits in force when the device did not say)."""
        return self.hardware_limits or self.limits


# ---------------------------------------------------------------------- envelopes
def encode_request(seq: int, op: int, body: bytes = b"", session: int = 0) -> bytes:
    """``seq u32 | opcode u8 | session u32 | body``."""
    return _REQUEST.pack(seq & 0xFFFFFFFF, op, session & 0xFFFFFFFF) + body


def decode_request(message: bytes) -> Request:
    """Split a request message; raises :class:`WireError` if it is too short or too long."""
    _check_size(message)
    if len(message) < _REQUEST.size:
        raise WireError(
            f"request of {len(message)} bytes is shorter than its {_REQUEST.size}-byte header"
        )
    seq, op, session = _REQUEST.unpack_from(message)
    return Request(seq, op, bytes(message[_REQUEST.size :]), session)


def encode_reply(
    seq: int, op: int, status: int = Status.OK, body: bytes = b"", session: int = 0
) -> bytes:
    """``seq u32 | opcode u8 | status u8 | session u32 | body``."""
    return _REPLY.pack(seq & 0xFFFFFFFF, op & 0xFF, status, session & 0xFFFFFFFF) + body


def decode_reply(message: bytes) -> Reply:
    """Split a reply message; raises :class:`WireError` if it is too short or too long."""
    _check_size(message)
    if len(message) < _REPLY.size:
        raise WireError(
            f"reply of {len(message)} bytes is shorter than its {_REPLY.size}-byte header"
        )
    seq, op, status, session = _REPLY.unpack_from(message)
    return Reply(seq, op, status, bytes(message[_REPLY.size :]), session)


def reply_status(message: bytes) -> tuple[int, int, int] | None:
    """``(seq, op, status)`` of a reply of any protocol version (they share these 6 bytes)."""
    if len(message) < 6:
        return None
    return struct.unpack_from("<IBB", message)


def _check_size(message: bytes) -> None:
    if len(message) > MAX_MESSAGE:
        raise WireError(
            f"message of {len(message)} bytes exceeds the {MAX_MESSAGE}-byte bound",
            Status.TOO_LARGE,
        )


# ---------------------------------------------------------------------- text and errors
def encode_text(text: str) -> bytes:
    """``len u16 | UTF-8`` (truncated to MAX_TEXT bytes on a character boundary)."""
    data = text.encode("utf-8")[:MAX_TEXT].decode("utf-8", "ignore").encode("utf-8")
    return _TEXT_LEN.pack(len(data)) + data


def decode_text(body: bytes, offset: int = 0) -> tuple[str, int]:
    """A text field at ``offset``; returns it and the offset after it."""
    (size,) = _unpack(_TEXT_LEN, body, offset, "text length")
    if size > MAX_TEXT:
        raise WireError(f"text of {size} bytes exceeds the {MAX_TEXT}-byte bound", Status.TOO_LARGE)
    start = offset + _TEXT_LEN.size
    data = body[start : start + size]
    if len(data) != size:
        raise WireError(f"text field truncated: {len(data)} of {size} bytes")
    return data.decode("utf-8", "replace"), start + size


def encode_error(message: str) -> bytes:
    """The body of an error reply: the device's message."""
    return encode_text(message)


def decode_error(body: bytes) -> str:
    """The device's message from an error reply (never raises: a damaged text is shown raw)."""
    try:
        return decode_text(body)[0]
    except WireError:
        return body[:MAX_TEXT].decode("utf-8", "replace")


def encode_error_entry(code: int, message: str) -> bytes:
    """The body of an ERROR reply: ``code i16 | text``."""
    return struct.pack("<h", code) + encode_text(message)


def decode_error_entry(body: bytes) -> tuple[int, str]:
    """``(code, message)`` from an ERROR reply (code 0 means no error)."""
    (code,) = _unpack(struct.Struct("<h"), body, 0, "error code")
    message, _ = decode_text(body, 2)
    return code, message


# ---------------------------------------------------------------------- limits and identity
def encode_limits(rows: int, cols: int, limits: SafetyLimits) -> bytes:
    """CONFIGURE body: ``rows u32 | cols u32 | v_min v_max width_min width_max f64 |
    max_pulses u32 | compliance f64``."""
    return _WINDOW.pack(rows, cols) + _LIMITS.pack(*limits.as_tuple())


def decode_limits(body: bytes, offset: int = 0) -> tuple[int, int, SafetyLimits, int]:
    """``(rows, cols, limits, next offset)`` from a CONFIGURE body."""
    rows, cols = _unpack(_WINDOW, body, offset, "shape")
    values = _unpack(_LIMITS, body, offset + _WINDOW.size, "safety limits")
    try:
        limits = SafetyLimits.from_tuple(values)
    except (TypeError, ValueError) as exc:
        raise WireError(f"invalid safety limits: {exc}", Status.SAFETY) from None
    return rows, cols, limits, offset + _WINDOW.size + _LIMITS.size


def encode_info(info: DeviceInfo) -> bytes:
    """IDENTIFY/CLAIM/CONFIGURE reply body: ``version u16 | rows u32 | cols u32 | last_seq u32
    | limits in force | hardware limits | max_message u32 | max_cells u32 | window u16 |
    owner u32 | identity text``; version 4 puts ``interrupted_session u32 | interrupted_seq u32
    | interrupted_entries u32`` (zeros: none) before the identity."""
    interrupted = b""
    if info.version >= 4:
        interrupted = _INTERRUPTED.pack(*(info.interrupted or (0, 0, 0)))
    return (
        _INFO.pack(info.version, info.rows, info.cols, info.last_seq & 0xFFFFFFFF)
        + _LIMITS.pack(*info.limits.as_tuple())
        + _LIMITS.pack(*info.hardware.as_tuple())
        + _BOUNDS.pack(info.max_message, info.max_cells, info.window, info.owner)
        + interrupted
        + encode_text(info.identity)
    )


def decode_info(body: bytes) -> DeviceInfo:
    """A :class:`DeviceInfo` from an IDENTIFY, CLAIM or CONFIGURE reply."""
    version, rows, cols, last_seq = _unpack(_INFO, body, 0, "device info")
    offset = _INFO.size
    both = []
    for what in ("safety limits", "hardware limits"):
        values = _unpack(_LIMITS, body, offset, what)
        offset += _LIMITS.size
        try:
            both.append(SafetyLimits.from_tuple(values))
        except (TypeError, ValueError) as exc:
            raise WireError(f"device reported invalid {what}: {exc}") from None
    max_message, max_cells, window, owner = _unpack(_BOUNDS, body, offset, "bounds")
    if not MIN_MESSAGE <= max_message <= MAX_MESSAGE or not 1 <= max_cells <= MAX_CELLS:
        raise WireError(
            f"device reported bounds outside the protocol's: max_message={max_message} (must be "
            f"{MIN_MESSAGE}..{MAX_MESSAGE}), max_cells={max_cells} (1..{MAX_CELLS})"
        )
    offset += _BOUNDS.size
    interrupted = None
    if version >= 4:
        interrupted = _unpack(_INTERRUPTED, body, offset, "interrupted batch")
        offset += _INTERRUPTED.size
        if interrupted[0] == 0:
            interrupted = None
    identity, _ = decode_text(body, offset)
    return DeviceInfo(
        rows, cols, both[0], identity, last_seq, version, both[1], max_message, max_cells,
        window, owner, interrupted,
    )  # fmt: skip


# ---------------------------------------------------------------------- cells and results
def encode_cells(flat: np.ndarray) -> bytes:
    """READ body: ``count u32 | count x u32`` row-major cell indices."""
    return _COUNT.pack(len(flat)) + np.asarray(flat, dtype="<u4").tobytes()


def decode_cells(body: bytes, max_cells: int = MAX_CELLS) -> np.ndarray:
    """Row-major cell indices (int64) from a READ body."""
    (count,) = _unpack(_COUNT, body, 0, "cell count")
    _check_count(count, max_cells)
    end = _COUNT.size + 4 * count
    if len(body) != end:
        raise WireError(f"READ names {count} cells but carries {len(body) - _COUNT.size} bytes")
    return np.frombuffer(body, "<u4", count, _COUNT.size).astype(np.int64)


def encode_region(row: int, col: int, nrows: int, ncols: int) -> bytes:
    """READ_REGION body: ``row col nrows ncols`` as u32."""
    return _REGION.pack(row, col, nrows, ncols)


def decode_region(body: bytes) -> tuple[int, int, int, int]:
    """``(row, col, nrows, ncols)`` from a READ_REGION body."""
    if len(body) != _REGION.size:
        raise WireError(f"READ_REGION body must be 16 bytes, got {len(body)}")
    return _REGION.unpack(body)


def encode_resistances(values: np.ndarray) -> bytes:
    """Resistances as little-endian float64 (exact)."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def decode_resistances(body: bytes, count: int) -> np.ndarray:
    """``count`` float64 resistances; raises :class:`WireError` on a length mismatch."""
    if len(body) != 8 * count:
        raise WireError(f"expected {count} resistances ({8 * count} bytes), got {len(body)} bytes")
    return np.frombuffer(body, "<f8").astype(np.float64)


def encode_readings(values: np.ndarray, native: bool) -> bytes:
    """An APPLY read-back: binary32 when ``native`` (flag 0x20) and the device's readings are
    binary32, else binary64 (:func:`encode_resistances`). Exact either way."""
    if native and values.dtype == np.float32:
        return np.ascontiguousarray(values, dtype="<f4").tobytes()
    return encode_resistances(values)


def decode_readings(body: bytes, count: int) -> np.ndarray:
    """An APPLY read-back asked for with flag 0x20: ``count`` float32 values when the body
    holds 4 bytes each, float64 when it holds 8 (a device with binary64 readings); raises
    :class:`WireError` for any other length."""
    if count and len(body) == 4 * count:
        return np.frombuffer(body, "<f4").astype(np.float32)
    if len(body) != 8 * count:
        raise WireError(
            f"expected {count} readings ({4 * count} or {8 * count} bytes), got {len(body)} bytes"
        )
    return np.frombuffer(body, "<f8").astype(np.float64)


# ---------------------------------------------------------------------- pulse batches
def encode_batch(batch: PulseBatch, cells: Cells, read_back: bool, native: bool = False) -> bytes:
    """APPLY body for a checked batch (``cells`` from :meth:`PulseBatch.locate`).

    ``native`` (protocol version 3 only) asks for the read-back in the device's own precision
    (:func:`decode_readings`).

    Layout: ``flags u8 | pulse_size u8 | count u32 | cells | pulses | voltage | width``. Cells
    are a list of ``count`` u32 row-major indices in batch order, or, when the cells strictly
    ascend and it is smaller, ``first u32 | span u32 | ceil(span/8)`` bitmap bytes (bit i, LSB
    first, set for cell ``first + i``).
    """
    flat = cells.flat
    count = len(flat)
    if count > MAX_CELLS:
        raise InvalidBatchError(f"a batch may name at most {MAX_CELLS} cells, got {count}")
    flags = (_READ_BACK | (_NATIVE_READINGS if native else 0)) if read_back else 0
    parts: list[bytes] = []
    if count and cells.ascending:
        first = int(flat[0])
        span = int(flat[-1]) - first + 1
        if (span + 7) // 8 + _WINDOW.size < 4 * count:
            bits = np.zeros(span, dtype=np.uint8)
            bits[flat - first] = 1
            parts.append(_WINDOW.pack(first, span))
            parts.append(np.packbits(bits, bitorder="little").tobytes())
            flags |= _BITMAP
    if not flags & _BITMAP:
        parts.append(np.asarray(flat, dtype="<u4").tobytes())
    pulses = batch.compact_pulses
    top = int(pulses.max()) if pulses.size else 0
    size = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4
    if pulses.shape[0] != 1:
        flags |= _PER_CELL_PULSES
    parts.append(np.asarray(pulses, dtype=_PULSE_DTYPES[size]).tobytes())
    for value, flag in ((batch.voltage, _PER_CELL_VOLTAGE), (batch.width, _PER_CELL_WIDTH)):
        if isinstance(value, float):
            parts.append(struct.pack("<d", value))
        else:
            flags |= flag
            parts.append(np.asarray(value, dtype="<f8").tobytes())
    return _BATCH_HEAD.pack(flags, size, count) + b"".join(parts)


def split_batch(
    batch: PulseBatch,
    cells: Cells,
    read_back: bool,
    native: bool,
    bounds: tuple[int, int],
    mark_parts: bool = False,
) -> list[bytes]:
    """The APPLY bodies that carry ``batch`` to a device with ``bounds``.

    ``bounds`` is the device's ``(max_message, max_cells)`` (:class:`DeviceInfo`). One body
    (with the read-back flag when asked) when the whole batch, its request and its reply fit;
    otherwise parts in batch order *without* read-back (the caller reads the cells after the
    last part), each filling the bounds exactly: a part holds as many entries as fit in one
    request of ``max_message`` bytes and ``max_cells`` cells, so one more entry would not.
    Applying the parts in turn is applying the batch (entries are applied in order).
    ``mark_parts`` (version 4 devices only) sets flag 0x40, "more parts follow", on every part
    but the last, so that the device can report a batch its host did not finish.
    """
    max_message, max_cells = bounds
    room = max_message - REQUEST_HEADER
    count = len(cells.flat)
    body = encode_batch(batch, cells, read_back, native)
    reply_fits = not read_back or REPLY_HEADER + 8 * count <= max_message
    if count <= max_cells and len(body) <= room and reply_fits:
        return [body]
    bodies = []
    start = 0
    while start < count:
        size = _largest_part(batch, cells.flat, start, min(max_cells, count - start), room)
        bodies.append(_part_body(batch, cells.flat, start, size))
        start += size
    if mark_parts:
        bodies[:-1] = [bytes([body[0] | _MORE_PARTS]) + body[1:] for body in bodies[:-1]]
    return bodies


def _largest_part(batch: PulseBatch, flat: np.ndarray, start: int, most: int, room: int) -> int:
    """The most entries from ``start`` (at most ``most``) whose part body fits ``room`` bytes
    (a body grows with its entries, so bisect)."""
    low, high = 1, most
    if len(_part_body(batch, flat, start, low)) > room:
        raise InvalidBatchError(f"one batch entry does not fit a body of {room} bytes")
    while low < high:
        middle = (low + high + 1) // 2
        if len(_part_body(batch, flat, start, middle)) <= room:
            low = middle
        else:
            high = middle - 1
    return low


def _part_body(batch: PulseBatch, flat: np.ndarray, start: int, size: int) -> bytes:
    """The APPLY body (no read-back) of entries ``start .. start + size`` of a batch."""
    part = slice(start, start + size)
    pulses = batch.compact_pulses
    pulses = pulses if pulses.shape[0] == 1 else pulses[part]
    voltage, width = batch.voltage, batch.width
    sub = flat[part]
    ascending = bool(np.all(sub[1:] > sub[:-1])) if len(sub) > 1 else True
    return encode_batch(
        _PartBatch(pulses, voltage if isinstance(voltage, float) else voltage[part],
                   width if isinstance(width, float) else width[part]),
        Cells(sub, ascending),
        False,
    )  # fmt: skip


@dataclass(frozen=True)
class _PartBatch:
    """What :func:`encode_batch` reads of a batch (a part of one already checked)."""

    compact_pulses: np.ndarray
    voltage: float | np.ndarray
    width: float | np.ndarray


def read_cells_per_command(bounds: tuple[int, int]) -> int:
    """Most cells one READ may name on a device with ``bounds`` ``(max_message, max_cells)``:
    its request (``count u32`` and an index each) and its reply (a binary64 each) both fit."""
    max_message, max_cells = bounds
    by_reply = (max_message - REPLY_HEADER) // 8
    by_request = (max_message - REQUEST_HEADER - _COUNT.size) // 4
    return max(1, min(max_cells, by_reply, by_request))


@dataclass(frozen=True)
class DecodedBatch:
    """An APPLY body: the flat cells, the batch built from them, whether to read back, and
    whether in the device's native precision (version 3, flag 0x20), whether more parts of
    the batch follow (version 4, flag 0x40)."""

    flat: np.ndarray
    batch: PulseBatch
    read_back: bool
    native: bool = False
    more: bool = False


def decode_batch(body: bytes, rows: int, cols: int, max_cells: int = MAX_CELLS) -> DecodedBatch:
    """Decode an APPLY body for a ``rows x cols`` crossbar.

    The checks run in the order docs/protocol.md prescribes: the whole body's layout first
    (MALFORMED; a count above ``max_cells`` is TOO_LARGE), then cell addresses (OUT_OF_RANGE);
    the safety limits are the caller's (SAFETY).

    Raises
    ------
    WireError
        For a malformed body (status MALFORMED), a count above ``max_cells`` (TOO_LARGE) or a
        cell outside the crossbar (OUT_OF_RANGE).
    """
    flags, size, count = _unpack(_BATCH_HEAD, body, 0, "batch header")
    if flags & ~_KNOWN_FLAGS:
        raise WireError(f"unknown batch flags 0x{flags:02x}")
    if flags & _NATIVE_READINGS and not flags & _READ_BACK:
        raise WireError("batch flag 0x20 (native read-back) needs flag 0x01 (read back)")
    if flags & _MORE_PARTS and flags & _READ_BACK:
        raise WireError("batch flag 0x40 (more parts follow) excludes flag 0x01 (read back)")
    if size not in _PULSE_DTYPES:
        raise WireError(f"pulse count size must be 1, 2 or 4 bytes, got {size}")
    _check_count(count, max_cells)
    offset = _BATCH_HEAD.size
    cells_total = rows * cols
    bitmap: tuple[int, int, bytes] | None = None
    if flags & _BITMAP:
        first, span = _unpack(_WINDOW, body, offset, "bitmap window")
        offset += _WINDOW.size
        if span == 0:
            raise WireError("bitmap span must be at least 1")
        if span > 8 * (len(body) - offset):
            raise WireError(f"message truncated in its bitmap of {span} bits")
        nbytes = (span + 7) // 8
        bitmap = (first, span, _take(body, offset, nbytes, "bitmap"))
        offset += nbytes
    else:
        cell_bytes = _take(body, offset, 4 * count, "cell list")
        offset += 4 * count
    npulses = count if flags & _PER_CELL_PULSES else 1
    pulses = np.frombuffer(_take(body, offset, size * npulses, "pulse counts"), _PULSE_DTYPES[size])
    offset += size * npulses
    values: list[float | np.ndarray] = []
    for flag, name in ((_PER_CELL_VOLTAGE, "voltages"), (_PER_CELL_WIDTH, "widths")):
        n = count if flags & flag else 1
        array = np.frombuffer(_take(body, offset, 8 * n, name), "<f8").astype(np.float64)
        offset += 8 * n
        values.append(array if flags & flag else float(array[0]))
    if offset != len(body):
        raise WireError(f"APPLY body has {len(body) - offset} bytes after its last field")
    if bitmap is not None:
        first, span, raw = bitmap
        if span % 8 and raw[-1] >> (span % 8):
            raise WireError("bitmap padding bits (beyond the span) must be 0")
        bits = np.unpackbits(np.frombuffer(raw, np.uint8), count=span, bitorder="little")
        flat = np.flatnonzero(bits.view(np.bool_)) + first
        if len(flat) != count:
            raise WireError(f"bitmap has {len(flat)} cells set but the header says {count}")
        if first + span > cells_total:
            raise WireError(
                f"bitmap window {first}+{span} is outside the {rows}x{cols} crossbar",
                Status.OUT_OF_RANGE,
            )
    else:
        flat = np.frombuffer(cell_bytes, "<u4").astype(np.int64)
        if count and int(flat.max()) >= cells_total:
            raise WireError(
                f"cell index {int(flat.max())} is outside the {rows}x{cols} crossbar",
                Status.OUT_OF_RANGE,
            )
    pulse_arg: int | np.ndarray = (
        pulses.astype(np.int64) if flags & _PER_CELL_PULSES else int(pulses[0])
    )
    row_idx, col_idx = np.divmod(flat, cols)
    try:
        batch = PulseBatch(row_idx, col_idx, pulse_arg, voltage=values[0], width=values[1])
    except InvalidBatchError as exc:
        raise WireError(f"invalid batch: {exc}") from None
    return DecodedBatch(
        flat, batch, bool(flags & _READ_BACK), bool(flags & _NATIVE_READINGS),
        bool(flags & _MORE_PARTS),
    )  # fmt: skip


# ---------------------------------------------------------------------- helpers
def _check_count(count: int, max_cells: int = MAX_CELLS) -> None:
    if count > max_cells:
        raise WireError(
            f"count {count} exceeds the bound of {max_cells} cells per command", Status.TOO_LARGE
        )


def _unpack(fmt: struct.Struct, body: bytes, offset: int, what: str) -> tuple:
    if len(body) < offset + fmt.size:
        raise WireError(f"message truncated in its {what}")
    return fmt.unpack_from(body, offset)


def _take(body: bytes, offset: int, size: int, what: str) -> bytes:
    data = body[offset : offset + size]
    if len(data) != size:
        raise WireError(f"message truncated in its {what}: {len(data)} of {size} bytes")
    return data
