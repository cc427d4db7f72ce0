"""How a record stores arrays: plain numeric blobs, compact cell lists, delta-coded readings.

Every blob starts with a type code byte and holds only plain numbers, read back with
``numpy.frombuffer``: nothing in a record is ever unpickled or evaluated.

- ``pack``/``unpack``: a 1-D array as its type byte plus little-endian bytes; a leading ``z``
  means the rest is a zlib stream of such a blob.
- cells: a bitmap (strictly ascending and dense, zlib-compressed: mPES's cells repeat the same
  column pattern on every row) or differences.
- readings (:class:`ReadingCodec`): the resistances a learning run reads back change by a tiny,
  slowly varying step per pulse, so each value is stored as the second difference of its bit
  pattern against the same cell's previous two readings, zigzag-coded, split into byte planes
  and the planes that are mostly zero zlib-compressed with its run-length strategy (``Z_RLE``:
  on mPES read-backs both smaller and about twice as fast as the default strategy); the noisy
  low planes are kept as they are. Decoding is exact (bit for bit) and needs the events before
  it, which a record always has (events are committed in order). float64 readings that are
  exactly float32 (a float32 device read over a float64 wire) are coded as float32 and given
  back as float64.

Sizes and costs are measured by ``benchmarks/bench_record.py``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .record_kernels import (
    cell_bitmap,
    cell_diffs,
    delta_commit,
    delta_planes,
    int_range,
    strictly_ascending,
)

__all__ = [
    "RecordError",
    "ReadingCodec",
    "as_integers",
    "pack",
    "pack_cells",
    "pack_float",
    "unpack",
    "unpack_cells",
]


class RecordError(ValueError):
    """A record file is missing, not a record, of an unknown format, or damaged."""


_CODES = {
    b"b": np.dtype("<i1"),
    b"h": np.dtype("<i2"),
    b"i": np.dtype("<i4"),
    b"q": np.dtype("<i8"),
    b"B": np.dtype("<u1"),
    b"f": np.dtype("<f4"),
    b"d": np.dtype("<f8"),
}
_TYPES = {dtype: code for code, dtype in _CODES.items()}
#: First byte of a delta-coded reading blob (not a type code, not ``z``).
_DELTA = b"D"
#: zlib level: 1 is within a few per cent of 6 on these blobs at a third of the time.
_LEVEL = 1


def pack(array: np.ndarray, compress: bool = False) -> bytes:
    """A 1-D numeric array as a type byte plus its little-endian bytes (zlib with ``compress``)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<")
    code = _TYPES.get(dtype)
    if code is None or array.ndim != 1:
        raise ValueError(
            f"records store 1-D int8/16/32/64, uint8, float32 or float64 arrays, not {dtype}"
        )
    data = code + array.astype(dtype, copy=False).tobytes()
    return b"z" + zlib.compress(data, _LEVEL) if compress else data


def pack_float(value: float) -> bytes:
    """``pack`` of one float64 value, without NumPy (a batch's voltage or width)."""
    return _FLOAT64 + _DOUBLE.pack(value)


_FLOAT64 = _TYPES[np.dtype("<f8")]
_DOUBLE = struct.Struct("<d")


def unpack(blob: bytes) -> np.ndarray:
    """Inverse of :func:`pack` (a new, writable array)."""
    try:
        if blob[:1] == b"z":
            blob = zlib.decompress(blob[1:])
    except zlib.error as exc:
        raise RecordError(f"damaged array in record ({exc})") from None
    dtype = _CODES.get(bytes(blob[:1]))
    if dtype is None or (len(blob) - 1) % dtype.itemsize:
        raise RecordError(f"damaged array in record (type byte {bytes(blob[:1])!r})")
    return np.frombuffer(blob, dtype=dtype, offset=1).astype(dtype.newbyteorder("="))


def narrow(values: np.ndarray) -> np.ndarray:
    """Integers in the narrowest signed type that holds them."""
    if values.size == 0:
        return values.astype(np.int8)
    lo, hi = int_range(values)
    return values.astype(_narrowest(lo, hi), copy=False)


def _narrowest(lo: int, hi: int) -> type:
    """The narrowest signed integer type that holds ``lo`` and ``hi``."""
    for dtype, low, high in _RANGES:
        if low <= lo and hi <= high:
            return dtype
    return np.int64


_RANGES = [(t, int(np.iinfo(t).min), int(np.iinfo(t).max)) for t in (np.int8, np.int16, np.int32)]


def as_integers(values: np.ndarray) -> np.ndarray:
    """Cell indices or pulse counts as a 1-D integer array (no copy when they are one)."""
    flat = np.asarray(values).reshape(-1)
    return flat if flat.dtype.kind in "iu" else flat.astype(np.int64)


def pack_cells(flat: np.ndarray, ascending: bool | None = None) -> tuple[str, bytes]:
    """Cells as a compressed bitmap (strictly ascending and dense) or as differences."""
    flat = as_integers(flat)
    n = flat.size
    if ascending is None:
        ascending = bool(strictly_ascending(flat))
    # A bitmap needs last/8 bytes; differences need at least one byte per cell.
    if ascending and n and int(flat[-1]) // 8 + 1 < n:
        bitmap = np.zeros(int(flat[-1]) // 8 + 1, dtype=np.uint8)
        cell_bitmap(flat, bitmap)
        return "bitmap", _zlib(pack(bitmap))
    diffs = np.empty(n, np.int64)
    lo, hi = cell_diffs(flat, diffs)
    data = pack(diffs.astype(_narrowest(lo, hi), copy=False))
    # Compressed only when long: in a running simulation each zlib call starts cold (~30-45
    # us, about a tenth of a recorded 100x100 mPES step, bench_record.py), and a typical
    # learning step's few hundred differences shrink by only ~400 bytes.
    return "diff", _zlib(data) if n > _COMPRESS_CELLS else data


#: Differences of more cells than this are zlib-compressed.
_COMPRESS_CELLS = 2048


def _zlib(data: bytes) -> bytes:
    """``pack(..., compress=True)`` of an already packed blob."""
    return b"z" + zlib.compress(data, _LEVEL)


def unpack_cells(encoding: str, blob: bytes) -> np.ndarray:
    """Inverse of :func:`pack_cells`: the row-major cell indices (int64)."""
    if encoding == "bitmap":
        return np.flatnonzero(np.unpackbits(unpack(blob))).astype(np.int64)
    return np.cumsum(unpack(blob), dtype=np.int64)


#: A byte plane is compressed when at least this fraction of its bytes are zero; the others
#: (the noisy low bytes) are stored as they are: compressing them saves a few per cent at most
#: and costs most of the encoding time.
_COMPRESS_ZEROS = 0.25


def _pack_planes(planes: np.ndarray, nonzero: np.ndarray) -> bytes:
    """Byte planes (one row each, ``nonzero`` bytes in each): a mask byte of the compressed
    ones, the other planes as they are, then the compressed ones together as one zlib stream
    (``Z_RLE``)."""
    n = planes.shape[1]
    raw: list[bytes] = []
    packed: list[bytes] = []
    mask = 0
    for p in range(planes.shape[0]):
        if n and n - int(nonzero[p]) >= _COMPRESS_ZEROS * n:
            mask |= 1 << p
            packed.append(planes[p].tobytes())
        else:
            raw.append(planes[p].tobytes())
    if packed:
        # Run-length matches reach back one byte: the smallest window and hash table compress
        # as well and spare allocating (and faulting in) zlib's default 256 kB of state.
        packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, 9, 1, zlib.Z_RLE)
        raw.append(packer.compress(b"".join(packed)) + packer.flush())
    return bytes([mask]) + b"".join(raw)


def _unpack_planes(blob: bytes, width: int, n: int) -> np.ndarray:
    """Inverse of :func:`_pack_planes`: a ``(width, n)`` uint8 array."""
    if not blob:
        raise RecordError("damaged reading blob in record (empty)")
    packed = (blob[0] >> np.arange(width)) & 1 == 1
    raw_size = int((~packed).sum()) * n
    out = np.empty((width, n), np.uint8)
    raw = blob[1 : 1 + raw_size]
    try:
        rest = zlib.decompress(blob[1 + raw_size :]) if packed.any() else blob[1 + raw_size :]
    except zlib.error as exc:
        raise RecordError(f"damaged reading blob in record ({exc})") from None
    if len(raw) != raw_size or len(rest) != int(packed.sum()) * n:
        raise RecordError("damaged reading blob in record (plane lengths)")
    # explicit plane counts: an event of no cells has empty planes, which reshape(-1, 0) refuses
    out[~packed] = np.frombuffer(raw, np.uint8).reshape(int((~packed).sum()), n)
    out[packed] = np.frombuffer(rest, np.uint8).reshape(int(packed.sum()), n)
    return out


class _State:
    """Per-cell previous bit pattern and previous step of one integer width."""

    def __init__(self, size: int, bits: int) -> None:
        self.utype = np.dtype(f"<u{bits // 8}")
        self.itype = np.dtype(f"<i{bits // 8}")
        self.shift = bits - 1
        self.last = np.zeros(size, self.utype)
        self.step = np.zeros(size, self.utype)
        # the same memory as signed integers, for the compiled encoder
        self.last_signed = self.last.view(self.itype)
        self.step_signed = self.step.view(self.itype)


class ReadingCodec:
    """Delta coding of resistance readings against each cell's previous readings.

    One codec follows one record, event by event, in order: the writer calls :meth:`encode`
    and, once the event is committed, :meth:`commit`; a reader calls :meth:`decode` on every
    event's blob in order (it commits as it goes).

    Parameters
    ----------
    size : int
        Number of cells of the crossbar.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._states = {4: _State(self.size, 32), 8: _State(self.size, 64)}
        self._pending: tuple[_State, np.ndarray, np.ndarray, np.ndarray] | None = None
        # the encoder's work space, grown to the largest event seen: steps awaiting commit,
        # and the byte planes (one row per byte of the readings' width)
        self._steps = np.empty(0, np.int64)
        self._planes = np.empty((8, 0), np.uint8)

    def encode(self, cells: np.ndarray, values: np.ndarray) -> bytes:
        """The blob for ``values`` read from ``cells``; call :meth:`commit` once it is stored."""
        values = np.asarray(values).reshape(-1)
        out = values.dtype
        if out == np.float32:
            stored = values
        else:
            values = values.astype(np.float64, copy=False)
            with np.errstate(over="ignore"):  # a value beyond float32 just stays float64
                narrow32 = values.astype(np.float32)
            exact = np.array_equal(narrow32.astype(np.float64), values)
            stored = narrow32 if exact else values
        state = self._states[stored.dtype.itemsize]
        cells = np.asarray(cells).reshape(-1)
        bits = np.ascontiguousarray(stored).view(state.itype)
        n = cells.size
        if n > self._steps.size:
            self._steps = np.empty(n, np.int64)
            self._planes = np.empty((8, n), np.uint8)
        pending = self._steps[:n]
        planes = self._planes[: state.itype.itemsize, :n]
        nonzero = delta_planes(cells, bits, state.last_signed, state.step_signed, pending, planes)
        self._pending = (state, cells, bits, pending)
        head = _DELTA + _TYPES[np.dtype(out).newbyteorder("<")] + _TYPES[stored.dtype]
        return head + _pack_planes(planes, nonzero)

    def commit(self) -> None:
        """Make the last encoded event the reference for the next ones."""
        if self._pending is not None:
            state, cells, bits, pending = self._pending
            delta_commit(cells, bits, pending, state.last_signed, state.step_signed)
            self._pending = None

    def discard(self) -> None:
        """Forget the last encoded event (it was not stored)."""
        self._pending = None

    def decode(self, cells: np.ndarray, blob: bytes) -> np.ndarray:
        """The readings of one event (and commit them as the reference for the next)."""
        if blob[:1] != _DELTA:
            return unpack(blob)
        out, stored = _CODES.get(bytes(blob[1:2])), _CODES.get(bytes(blob[2:3]))
        if out is None or stored is None or stored.kind != "f":
            raise RecordError("damaged reading blob in record (bad type bytes)")
        state = self._states[stored.itemsize]
        width = stored.itemsize
        planes = _unpack_planes(blob[3:], width, cells.size)
        zigzag = planes.T.copy().view(state.utype).reshape(-1)
        second = (zigzag >> 1).view(state.itype) ^ -(zigzag & 1).view(state.itype)
        step = second.view(state.utype) + state.step[cells]
        bits = step + state.last[cells]
        state.last[cells] = bits
        state.step[cells] = step
        return bits.view(stored).astype(out.newbyteorder("="))
