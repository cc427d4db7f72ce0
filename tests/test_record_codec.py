"""The compiled record encoder writes format 2 as the NumPy encoder did, and the reader reads it.

The reference below is the NumPy encoder that format 2 was written with before the encoder was
compiled (record_kernels.py): byte planes of the zigzag-coded second differences of each
cell's bit pattern. The zlib streams may differ between the two (window size), so blobs are
compared with their compressed part decompressed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from memristor_hil.lab.record_codec import (
    ReadingCodec,
    narrow,
    pack,
    pack_cells,
    pack_float,
    unpack,
    unpack_cells,
)


def _reference_planes(cells, values, last, step):
    """NumPy form of format 2's reading planes; updates ``last``/``step`` as a commit does."""
    utype = last.dtype
    itype = np.dtype(f"<i{utype.itemsize}")
    bits = values.view(utype)
    s = bits - last[cells]
    second = (s - step[cells]).view(itype)
    zigzag = ((second << 1) ^ (second >> (8 * utype.itemsize - 1))).view(utype)
    last[cells] = bits
    step[cells] = s
    return np.ascontiguousarray(zigzag.view(np.uint8).reshape(-1, utype.itemsize).T)


def _planes_of(blob: bytes, width: int, n: int) -> tuple[int, np.ndarray]:
    """The mask byte and the ``(width, n)`` planes of a reading blob (after its 3-byte head)."""
    mask = blob[3]
    packed = [(mask >> p) & 1 for p in range(width)]
    raw_size = (width - sum(packed)) * n
    raw = np.frombuffer(blob[4 : 4 + raw_size], np.uint8).reshape(-1, n)
    rest = blob[4 + raw_size :]
    squeezed = np.frombuffer(zlib.decompress(rest) if any(packed) else rest, np.uint8)
    squeezed = squeezed.reshape(-1, n)
    planes = np.empty((width, n), np.uint8)
    planes[[p for p in range(width) if not packed[p]]] = raw
    planes[[p for p in range(width) if packed[p]]] = squeezed
    return mask, planes


def _events(dtype, rng, size=300, count=12):
    """Readings a learning run might give: slow drifts per cell, with repeats, gaps, odd values."""
    base = rng.uniform(1e4, 1e6, size)
    for i in range(count):
        n = int(rng.integers(0, size))
        cells = np.sort(rng.choice(size, n, replace=False)) if i % 3 else rng.integers(0, size, n)
        values = (base[cells] * (1 + 1e-3 * i)).astype(dtype)
        if i == 5 and n:
            values[0] = np.nan
        if i == 7 and n:
            values[-1] = np.inf
        yield cells.astype(np.int32 if i % 2 else np.int64), values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_readings_are_the_reference_planes_and_decode_exactly(dtype):
    rng = np.random.default_rng(5)
    size = 300
    enc, dec = ReadingCodec(size), ReadingCodec(size)
    width = 4 if dtype == np.float32 else 8
    last = np.zeros(size, f"<u{width}")
    step = np.zeros(size, f"<u{width}")
    for cells, values in _events(dtype, rng, size):
        blob = enc.encode(cells, values)
        enc.commit()
        if cells.size == 0 or len(np.unique(cells)) == cells.size:
            expected = _reference_planes(cells, values, last, step)
            assert np.array_equal(_planes_of(blob, width, cells.size)[1], expected)
        else:  # a cell named twice: the reference's fancy assignment keeps the last reading
            _reference_planes(cells, values, last, step)
        got = dec.decode(cells.astype(np.int64), blob)
        assert got.dtype == values.dtype
        assert np.array_equal(got.view(f"u{width}"), values.view(f"u{width}"))


def test_a_discarded_event_leaves_the_reference_unchanged():
    enc, dec = ReadingCodec(10), ReadingCodec(10)
    cells = np.arange(10)
    first = enc.encode(cells, np.full(10, 1e5, np.float32))
    enc.commit()
    enc.encode(cells, np.full(10, 7e5, np.float32))
    enc.discard()
    second = enc.encode(cells, np.full(10, 2e5, np.float32))
    enc.commit()
    dec.decode(cells, first)
    assert np.array_equal(dec.decode(cells, second), np.full(10, 2e5, np.float32))


def test_a_cell_outside_the_crossbar_raises_instead_of_writing_past_the_state():
    codec = ReadingCodec(10)
    with pytest.raises(IndexError):
        codec.encode(np.array([3, 10]), np.ones(2, np.float32))
    with pytest.raises(IndexError):
        codec.encode(np.array([-1]), np.ones(1, np.float32))


@pytest.mark.parametrize(
    "flat",
    [
        np.array([], np.int64),
        np.array([5]),
        np.arange(0, 20_000, 3),  # dense and ascending: a bitmap
        np.array([7, 3, 3, 900, 2]),  # repeats and descents: differences
        np.array([1, 40_000, 70_000, 2**40]),  # wide gaps: int64 differences
        np.arange(100, dtype=np.int32),
        np.arange(30_000, 0, -7),  # long differences: compressed
    ],
)
def test_cells_come_back_as_sent(flat):
    encoding, blob = pack_cells(flat)
    assert np.array_equal(unpack_cells(encoding, blob), flat.astype(np.int64))
    ascending = bool(np.all(np.diff(flat) > 0))
    dense = flat.size > 0 and flat[-1] // 8 + 1 < flat.size
    expected = "bitmap" if ascending and dense else "diff"
    assert encoding == expected


def test_a_dense_bitmap_is_numpy_packbits_of_the_cells():
    flat = np.flatnonzero(np.random.default_rng(1).random(20_000) < 0.3)
    encoding, blob = pack_cells(flat, ascending=True)
    mask = np.zeros(flat[-1] + 1, bool)
    mask[flat] = True
    assert encoding == "bitmap"
    assert np.array_equal(unpack(blob), np.packbits(mask))


def test_cells_wrongly_claimed_ascending_raise_instead_of_writing_past_the_bitmap():
    flat = np.r_[np.arange(0, 800, 2), 100_000, 5]
    with pytest.raises(IndexError):
        pack_cells(flat[::-1].copy(), ascending=True)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([1, 2, 3], np.int8), ([-129, 5], np.int16), ([70_000], np.int32), ([2**40, -1], np.int64)],
)
def test_counts_are_narrowed_to_the_smallest_type_that_holds_them(values, dtype):
    for given in (np.int32, np.int64) if max(map(abs, values)) < 2**31 else (np.int64,):
        got = narrow(np.array(values, given))
        assert got.dtype == dtype
        assert np.array_equal(got, values)


def test_a_float_packs_as_numpy_does():
    for value in (0.0, -1.5, 1e-300, float("inf")):
        assert pack_float(value) == pack(np.array([value]))
