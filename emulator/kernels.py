"""Compiled (numba) kernels for the per-device loops of the emulator, and the power law.

Where the time goes (measured with ``benchmarks/bench_emulator.py`` on the 2-core x86 CI
machine): a scalar ``pow`` costs 11-14 ns per device in numba or plain C, because llvmlite ships
without Intel SVML and cannot vectorise it; NumPy's own AVX-512 ``np.power`` costs about 2.8 ns
(float64) and 1.1 ns (float32) per element on contiguous data. So the per-device scatter
(``n[cell] += k``) runs in a compiled loop that also writes each touched cell's new state into
a contiguous buffer, and the power law runs over that buffer with NumPy. Small batches stay in
the compiled loop, where NumPy's per-call overhead would dominate.

The numpy reference for all of this is :class:`memristor_hil.powerlaw.PowerLaw`; the tests
check these kernels against it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memristor_hil.powerlaw import DeviceParameters

__all__ = ["SMALL_BATCH", "add_set_pulses", "flat_indices", "gather", "resistance"]

#: Below this many cells the power law is evaluated in the compiled loop; above it, NumPy's
#: vectorised ``np.power`` is faster (benchmarks/bench_emulator.py shows both sides).
SMALL_BATCH = 256

_EMPTY = np.empty(0)


@njit(cache=True, nogil=True)
def flat_indices(rows, cols, nrows, ncols, out):  # pragma: no cover - compiled
    """Write ``rows * ncols + cols`` into ``out``.

    Returns ``(bad, ascending)``: the first out-of-range entry (-1 if none), and whether the
    indices are strictly ascending (then no cell is named twice).
    """
    # One branch-free pass (no early exit, so LLVM can vectorise it); the first bad entry is
    # looked up only when there is one.
    n = rows.shape[0]
    bad = False
    ascending = True
    previous = np.int64(-1)
    for i in range(n):
        r = rows[i]
        c = cols[i]
        bad |= (r < 0) | (r >= nrows) | (c < 0) | (c >= ncols)
        j = r * ncols + c
        ascending &= j > previous
        previous = j
        out[i] = j
    if bad:
        for i in range(n):
            r = rows[i]
            c = cols[i]
            if r < 0 or r >= nrows or c < 0 or c >= ncols:
                return i, False
    return -1, ascending


@njit(cache=True, nogil=True)
def add_set_pulses(n, flat, pulses, n_min, ratio, noise, draws, new_n):  # pragma: no cover
    """Apply SET pulses in place: ``n <- (max(n, n_min)**ratio + k)**(1/ratio)``.

    ``ratio`` is ``a / a(V)`` (1 at the reference voltage, where the update is ``n + k``).
    Entries are applied in order, so a cell named twice receives both counts. ``pulses`` has
    one entry per batch entry or a single shared one; ``draws`` (standard normals, one per
    entry) adds cycle-to-cycle noise ``noise * sqrt(k) * xi`` when non-empty. When ``new_n`` is
    non-empty, entry ``i``'s new state is also written to ``new_n[i]``.
    """
    per_device_min = n_min.shape[0] > 1
    per_device_ratio = ratio.shape[0] > 1
    shared_pulses = pulses.shape[0] == 1
    unit_ratio = (not per_device_ratio) and ratio[0] == 1.0
    with_noise = draws.shape[0] > 0
    keep = new_n.shape[0] > 0
    for i in range(flat.shape[0]):
        j = flat[i]
        k = 1.0 * (pulses[0] if shared_pulses else pulses[i])
        if with_noise:
            k = max(k + noise * np.sqrt(k) * draws[i], 0.0)
        x = n[j]
        lo = n_min[j] if per_device_min else n_min[0]
        if x < lo:
            x = lo
        if unit_ratio:
            x = x + k
        else:
            e = ratio[j] if per_device_ratio else ratio[0]
            x = (x**e + k) ** (1.0 / e)
        n[j] = x
        if keep:
            new_n[i] = n[j]


@njit(cache=True, nogil=True)
def gather(values, flat, out):  # pragma: no cover - compiled
    """``out[i] = values[flat[i]]``."""
    for i in range(flat.shape[0]):
        out[i] = values[flat[i]]
    return out


@njit(cache=True, nogil=True)
def _power_law_small(x, r0, r1, a):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        x[i] = r0 + r1 * x[i] ** a
    return x


@njit(cache=True, nogil=True)
def _affine(x, r0, r1):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        x[i] = r0 + r1 * x[i]


@njit(cache=True, nogil=True)
def _affine_gather(x, r0, r1, flat):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        j = flat[i]
        x[i] = r0[j] + r1[j] * x[i]


def resistance(
    x: np.ndarray, params: DeviceParameters, flat: np.ndarray | None = None
) -> np.ndarray:
    """Turn pulse counts into resistances, in place: ``x <- r0 + r1 * x**a``.

    Parameters
    ----------
    x : numpy.ndarray
        Pulse counts, contiguous; overwritten with resistances and returned.
    params : DeviceParameters
        Shared (single-entry) or per-device parameters.
    flat : numpy.ndarray, optional
        With per-device parameters, the device index of each entry of ``x`` (default: ``x``
        covers every device in order).
    """
    if not params.per_device:
        r0, r1, a = params.r0[0], params.r1[0], params.a[0]
        if x.shape[0] < SMALL_BATCH:
            return _power_law_small(x, r0, r1, a)
        np.power(x, a, out=x)
        _affine(x, r0, r1)  # one compiled pass instead of numpy's multiply and add
    elif flat is None:
        np.power(x, params.a, out=x)
        np.multiply(x, params.r1, out=x)
        np.add(x, params.r0, out=x)
    else:
        # gather the exponents for numpy's vectorised power, then r0 + r1 * x in one
        # compiled pass that gathers r0 and r1 itself (no temporary arrays)
        np.power(x, gather(params.a, flat, np.empty(x.shape[0], params.a.dtype)), out=x)
        _affine_gather(x, params.r0, params.r1, flat)
    return x


@njit(cache=True, nogil=True)
def add_set_pulses_each_voltage(
    n, flat, pulses, n_min, a, a_slope, v_ref, voltage, noise, draws
):  # pragma: no cover - compiled
    """SET pulses with a voltage per entry, applied in order (repeated cells accumulate).

    Entry ``i``: ``r = a / a(V_i)`` with ``a(V) = a + a_slope * (V - v_ref)``, then
    ``n <- (max(n, n_min)**r + k)**(1/r)``, as :meth:`PowerLaw.after_pulses`. ``a`` and
    ``n_min`` are per device or single shared entries; ``draws`` as in :func:`add_set_pulses`.
    """
    per_device = a.shape[0] > 1
    per_device_min = n_min.shape[0] > 1
    with_noise = draws.shape[0] > 0
    for i in range(flat.shape[0]):
        j = flat[i]
        k = 1.0 * pulses[i]
        if with_noise:
            k = max(k + noise * np.sqrt(k) * draws[i], 0.0)
        a_j = a[j] if per_device else a[0]
        e = a_j / (a_j + a_slope * (voltage[i] - v_ref))
        x = n[j]
        lo = n_min[j] if per_device_min else n_min[0]
        if x < lo:
            x = lo
        n[j] = (x**e + k) ** (1.0 / e)
