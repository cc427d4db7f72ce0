"""Compiled (numba) single passes of the record encoder (``record_codec.py``).

A recorded mPES step used to spend most of its extra time in NumPy passes over each event's
cells and readings (difference, zigzag, transposition into byte planes, counting zeros, the
cell bitmap: a dozen temporary arrays per event). Each function here is one loop over the
event that writes the bytes the format stores; the format itself (``docs/recording.md``) is
unchanged, and the reader stays the NumPy code of ``record_codec.py``.

Integer arithmetic is done in int64 and wrapped to the readings' width (4 or 8 bytes) by
shifting, which gives the same bits as NumPy's wrapping uint32/uint64 arithmetic.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memristor_hil import numba_cache

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = [
    "cell_bitmap",
    "cell_diffs",
    "delta_commit",
    "delta_planes",
    "int_range",
    "strictly_ascending",
]


@njit(cache=True, nogil=True)
def strictly_ascending(flat):  # pragma: no cover - compiled
    """Whether ``flat`` strictly ascends (an empty array does)."""
    for i in range(1, flat.shape[0]):
        if flat[i] <= flat[i - 1]:
            return False
    return True


@njit(cache=True, nogil=True)
def int_range(values):  # pragma: no cover - compiled
    """``(min, max)`` of a non-empty integer array, in one pass."""
    lo = np.int64(values[0])
    hi = lo
    for i in range(1, values.shape[0]):
        v = np.int64(values[i])
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@njit(cache=True, nogil=True)
def cell_bitmap(flat, out):  # pragma: no cover - compiled
    """Set the bit of each cell in ``out`` (zeroed uint8, ``last // 8 + 1`` bytes), most
    significant bit first: ``np.packbits`` of the cells' mask."""
    for i in range(flat.shape[0]):
        c = np.int64(flat[i])
        if c < 0 or (c >> 3) >= out.shape[0]:
            raise IndexError("a cell is outside the bitmap (cells not strictly ascending)")
        out[c >> 3] |= np.uint8(0x80 >> (c & 7))


@njit(cache=True, nogil=True)
def cell_diffs(flat, out):  # pragma: no cover - compiled
    """Differences between consecutive cells (the first against 0) into ``out`` (int64);
    returns their ``(min, max)`` ((0, 0) for no cells)."""
    lo = np.int64(0)
    hi = np.int64(0)
    prev = np.int64(0)
    for i in range(flat.shape[0]):
        c = np.int64(flat[i])
        d = c - prev
        prev = c
        out[i] = d
        if i == 0 or d < lo:
            lo = d
        if i == 0 or d > hi:
            hi = d
    return lo, hi


@njit(cache=True, nogil=True)
def delta_planes(cells, bits, last, step, pending, planes):  # pragma: no cover - compiled
    """Second differences of ``bits`` against each cell's ``last`` reading and ``step``,
    zigzag-coded and split into little-endian byte planes.

    Parameters
    ----------
    cells : int array (n,)
        The cells read.
    bits : int32 or int64 array (n,)
        The readings' bit patterns (a signed view of float32 or float64 values).
    last, step : int array (size,), same type as ``bits``
        Each cell's previous bit pattern and previous step (read only here).
    pending : int64 array (n,)
        Receives each reading's step (:func:`delta_commit` stores it once the event is kept).
    planes : uint8 array (width, n)
        Receives byte ``p`` of each zigzag value in row ``p``; ``width`` is the item size of
        ``bits``.

    Raises
    ------
    IndexError
        If a cell is outside ``last`` (nothing is written to the state).

    Returns
    -------
    numpy.ndarray
        Number of nonzero bytes in each plane (int64, ``(width,)``).
    """
    width = planes.shape[0]
    shift = 64 - 8 * width  # wraps int64 arithmetic to the readings' width
    nonzero = np.zeros(width, np.int64)
    size = last.shape[0]
    for i in range(cells.shape[0]):
        c = cells[i]
        if c < 0 or c >= size:
            raise IndexError("a cell is outside the crossbar")
        s = np.int64(bits[i]) - np.int64(last[c])
        s = (s << shift) >> shift
        pending[i] = s
        second = s - np.int64(step[c])
        second = (second << shift) >> shift
        zigzag = (second << 1) ^ (second >> 63)
        for p in range(width):
            byte = np.uint8((zigzag >> (8 * p)) & 0xFF)
            planes[p, i] = byte
            if byte != 0:
                nonzero[p] += 1
    return nonzero


@njit(cache=True, nogil=True)
def delta_commit(cells, bits, pending, last, step):  # pragma: no cover - compiled
    """Make an encoded event the cells' reference: ``last[cells] = bits``, ``step[cells] =
    pending``, in order (a cell named twice keeps its last reading, as NumPy's assignment)."""
    for i in range(cells.shape[0]):
        c = cells[i]
        last[c] = bits[i]
        step[c] = pending[i]
