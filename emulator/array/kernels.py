"""Compiled write operations for arrays without wire resistance (the closed-form voltages).

One call applies a whole batch's operations in order, each cell's pulses through the power
law (SET) or its RESET branch as :meth:`memristor_hil.PowerLaw.after_pulses` does (the tests
check the two against each other): the same rule as :func:`~.writes.biased_cells` followed by
``ArrayCrossbar._pulse``, without a NumPy round per operation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memristor_hil import numba_cache

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = ["apply_biased_operations", "apply_counted_pulses", "apply_counted_sets"]


@njit(cache=True, nogil=True)
def _one(n, cell, k, v, stuck, params, law):  # pragma: no cover - compiled
    """``k`` pulses at ``v`` on one cell (``params``: a, r0, r1, n_min; ``law``: a_slope, v_ref,
    reset, r3, c, eps, tiny)."""
    if stuck.shape[0] and stuck[cell]:
        return
    a, r0, r1, n_min = params
    p = cell if a.shape[0] > 1 else 0
    a_slope, v_ref, reset, r3, c, eps, tiny = law
    a_p = a[p]
    if v > 0:
        a_v = a_p + a_slope * (v - v_ref)
        if a_v >= 0:
            return
        e = a_p / a_v
        lo = n_min[p if n_min.shape[0] > 1 else 0]
        x = n[cell]
        if x < lo:
            x = lo
        n[cell] = (x**e + k) ** (1.0 / e)
    elif v < 0 and reset > 0:
        r = r0[p] + r1[p] * n[cell] ** a_p
        top = r3 * (1 - eps)
        if r > top:
            r = top
        m = ((r3 - r) / r3) ** (1.0 / c)
        r_new = r3 - r3 * (m + k) ** c
        excess = (r_new - r0[p]) / r1[p]
        if excess < tiny:
            excess = tiny
        n[cell] = excess ** (1.0 / a_p)


@njit(cache=True, nogil=True)
def apply_biased_operations(
    n, shape, ops, op_cols, bias, stuck, params, law
):  # pragma: no cover - compiled
    """Apply operations ``ops`` (rows of: row, first and last index into ``op_cols``, pulses,
    voltage) in order. ``shape`` = (rows, cols); ``bias`` = (alpha, beta, threshold);
    ``params`` = (a, r0, r1, n_min), one entry shared or one per device; ``stuck``: a bool per
    device or empty.
    """
    nrows, ncols = shape
    alpha, beta, threshold = bias
    mark = np.zeros(ncols, np.bool_)
    for o in range(ops.shape[0]):
        r = int(ops[o, 0])
        first, last = int(ops[o, 1]), int(ops[o, 2])
        k = ops[o, 3]
        v = ops[o, 4]
        for t in range(first, last):
            mark[op_cols[t]] = True
        v_row, v_col, v_other = (1 - beta) * v, alpha * v, (alpha - beta) * v
        for j in range(ncols):
            if mark[j]:
                _one(n, r * ncols + j, k, v, stuck, params, law)
            elif abs(v_row) >= threshold:
                _one(n, r * ncols + j, k, v_row, stuck, params, law)
        if abs(v_col) >= threshold:
            for t in range(first, last):
                j = op_cols[t]
                for i in range(nrows):
                    if i != r:
                        _one(n, i * ncols + j, k, v_col, stuck, params, law)
        if abs(v_other) >= threshold:
            for i in range(nrows):
                if i == r:
                    continue
                for j in range(ncols):
                    if not mark[j]:
                        _one(n, i * ncols + j, k, v_other, stuck, params, law)
        for t in range(first, last):
            mark[op_cols[t]] = False


@njit(cache=True, nogil=True)
def apply_counted_pulses(
    n, counts, before, after, volts, stuck, params, law
):  # pragma: no cover - compiled
    """Every cell's pulses of a one-voltage batch at once: ``before[c]`` half-select pulses,
    then its own ``counts[c]`` at ``volts[0]``, then ``after[c]`` half-select pulses at
    ``volts[1]`` (a cell with no pulses of its own takes ``before + after`` in one go).

    Pulses at one voltage compose: the power law's ``k`` pulses from ``n`` give
    ``(n^e + k)^(1/e)`` and its RESET branch ``m + k``, so a run of operations that reach a
    cell at one voltage is one call of ``_one`` with their summed count (equal to applying
    them one by one up to rounding; the tests compare the two).
    """
    v, v_half = volts
    for cell in range(counts.shape[0]):
        k = counts[cell]
        if k == 0:
            h = before[cell] + after[cell]
            if h > 0:
                _one(n, cell, h, v_half, stuck, params, law)
            continue
        if before[cell] > 0:
            _one(n, cell, before[cell], v_half, stuck, params, law)
        _one(n, cell, k, v, stuck, params, law)
        if after[cell] > 0:
            _one(n, cell, after[cell], v_half, stuck, params, law)


@njit(cache=True, nogil=True)
def apply_counted_sets(n, counts, before, after, powers, n_min, stuck):  # pragma: no cover
    """:func:`apply_counted_pulses` where both voltages SET every device (``a(V) < 0``), in
    the precision of ``n``: the state stays in the power of the exponents between the runs,
    four powers a cell instead of six, and no branch in the loop (the same rule as ``_one``
    up to rounding, which the tests check). ``powers`` = (e_h, e_v / e_h, e_h / e_v,
    1 / e_h) with ``e = a / a(V)`` at the half-select (h) and the selected voltage (v), one
    shared or one per device; ``counts``, ``before``, ``after``, ``powers`` and ``n_min``
    in ``n``'s dtype (float32 states take float32 powers, as the ideal emulator's kernel)."""
    e_h, r_hv, r_vh, r_h = powers
    per_device, per_min = e_h.shape[0] > 1, n_min.shape[0] > 1
    has_stuck = stuck.shape[0] > 0
    p, q = 0, 0
    for cell in range(counts.shape[0]):
        if per_device:
            p = cell
        if per_min:
            q = cell
        k, b, f = counts[cell], before[cell], after[cell]
        if k == 0:  # no pulses of its own: one run of half-selects
            b, f = b + f, f * 0
        x0 = n[cell]
        y = max(x0, n_min[q]) ** e_h[p] + b
        y = y ** r_hv[p] + k
        y = (y ** r_vh[p] + f) ** r_h[p]
        keep = k + b == 0 or has_stuck and stuck[cell]
        n[cell] = x0 if keep else y
