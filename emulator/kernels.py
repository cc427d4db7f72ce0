"""Compiled (numba) kernels for the per-device loops of the emulator, and the power law.

Where the time goes (measured with ``benchmarks/bench_emulator.py`` on the 2-core x86 CI
machines): a scalar ``pow`` costs 11-14 ns per device in numba or plain C, because llvmlite ships
without Intel SVML and cannot vectorise it; NumPy's ``np.power`` is vectorised only on AVX-512
machines (about 2.8 ns float64, 1.1 ns float32 per element there) and costs 6-25 ns per float32
element elsewhere (AVX2 machines: glibc's scalar ``powf``). So the per-device scatter
(``n[cell] += k``) runs in a compiled loop that also writes each touched cell's new state into
a contiguous buffer, and the power law runs over that buffer: for float32 devices with
:func:`power_law_f32`, a vectorisable ``x**a`` evaluated in float64 arithmetic (within 3e-10 of
the exact power before the final rounding to float32, so within one float32 ulp of a correctly
rounded result); for float64 devices with shared parameters in a compiled loop of the C
library's scalar ``pow``; for float64 devices with per-device parameters with NumPy. Each is
the same function for every batch size, so small and large batches and full reads agree bit
for bit on one machine.

Across CPUs (docs/protocol.md, section 7): the compiled loops give the same bits on every
x86-64 CPU with FMA (the C library's ``pow``, or plain binary64 arithmetic); NumPy's
``np.power`` is SIMD code on AVX-512 CPUs and the C library's ``pow`` elsewhere, up to 2 ulp
apart. So float64 shared-parameter reads take the compiled loop at every size, although
``np.power`` is 3.6x faster on AVX-512 machines (3.0 against 10.9 ms per 10^6 devices on an
AMD EPYC): one read path per cell, and the same bits on every CPU.

The numpy reference for all of this is :class:`memristor_hil.powerlaw.PowerLaw`; the tests
check these kernels against it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from memristor_hil import numba_cache
from memristor_hil.powerlaw import DeviceParameters

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = [
    "Devices",
    "ReadBack",
    "SetPulses",
    "VoltagePulses",
    "add_set_pulses_each_voltage",
    "apply_set_pulses",
    "flat_indices",
    "gather",
    "locate_and_apply",
    "power_law_f32",
    "resistance",
]


# The arrays that travel together into the kernels, grouped so that a call names each group
# once and two arrays of one type cannot be swapped silently: callers build the NamedTuples
# below by name and pass them as plain tuples (``tuple(group)``, the fields in the
# NamedTuple's order), and each kernel names them again first thing (``d = Devices(*d)``,
# free in compiled code). Why plain: numba dispatches a plain tuple on its C fast path
# (0.15 us over the arrays passed one by one) but types a NamedTuple in Python (0.6-1 us
# each), and a one-cell batch's whole apply is about 4 us.


class Devices(NamedTuple):
    """The emulated devices: their state, the floor a SET pulse starts from, their law.

    Attributes
    ----------
    n : numpy.ndarray
        Pulse-count state, one per device (updated in place).
    n_min : numpy.ndarray
        ``n`` is raised to this before a SET pulse: one shared entry or one per device.
    r0, r1, a : numpy.ndarray
        The law ``R = r0 + r1 * n**a``: one shared entry each or one per device.
    """

    n: np.ndarray
    n_min: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    a: np.ndarray

    @classmethod
    def of(cls, n: np.ndarray, n_min: np.ndarray, params: DeviceParameters) -> Devices:
        """The group for state ``n`` with ``params``' law."""
        return cls(n, n_min, params.r0, params.r1, params.a)


class SetPulses(NamedTuple):
    """One batch's SET pulses at one voltage: what each entry does to its cell.

    Attributes
    ----------
    counts : numpy.ndarray
        Pulses per entry, or one entry shared by all.
    ratio : numpy.ndarray
        ``a / a(V)`` at the batch's voltage: one shared entry or one per device.
    noise : float
        Cycle-to-cycle noise: ``k <- max(k + noise * sqrt(k) * xi, 0)``.
    draws : numpy.ndarray
        The standard normals ``xi``, one per entry; empty without noise.
    """

    counts: np.ndarray
    ratio: np.ndarray
    noise: float
    draws: np.ndarray


class VoltagePulses(NamedTuple):
    """SET pulses with a voltage per entry, ``a(V) = a + a_slope * (V - v_ref)``.

    Attributes
    ----------
    counts, voltage : numpy.ndarray
        Pulses and volts per entry.
    a_slope, v_ref : float
        The model's exponent slope and reference voltage.
    noise : float
        Cycle-to-cycle noise, as in :class:`SetPulses`.
    draws : numpy.ndarray
        Standard normals, one per entry; empty without noise.
    """

    counts: np.ndarray
    voltage: np.ndarray
    a_slope: float
    v_ref: float
    noise: float
    draws: np.ndarray


class ReadBack(NamedTuple):
    """Where a batch's read-back goes and in what form.

    Attributes
    ----------
    out : numpy.ndarray
        One value per batch entry; empty for no read-back.
    convert : int
        :data:`STATES`, :data:`FLOAT32_LAW` or :data:`SHARED_FLOAT64_LAW`.
    """

    out: np.ndarray
    convert: int


_EMPTY = np.empty(0)
_NO_CELLS = np.empty(0, dtype=np.intp)


@njit(cache=True, nogil=True)
def flat_indices(rows, cols, nrows, ncols, out):  # pragma: no cover - compiled
    """Write ``rows * ncols + cols`` into ``out``.

    Returns ``(bad, ascending)``: the first out-of-range entry (-1 if none), and whether the
    indices are strictly ascending (then no cell is named twice).
    """
    # Branch-free passes without a loop-carried value (no early exit, no running "previous"),
    # so LLVM vectorises both; the first bad entry is looked up only when there is one.
    n = rows.shape[0]
    bad = False
    for i in range(n):
        r = np.int64(rows[i])
        c = np.int64(cols[i])
        bad |= (r < 0) | (r >= nrows) | (c < 0) | (c >= ncols)
        out[i] = r * ncols + c
    if bad:
        for i in range(n):
            r = rows[i]
            c = cols[i]
            if r < 0 or r >= nrows or c < 0 or c >= ncols:
                return i, False
    descents = 0
    for i in range(1, n):
        descents += out[i] <= out[i - 1]
    return -1, descents == 0


#: ``convert`` values of :func:`apply_set_pulses`.
STATES, FLOAT32_LAW, SHARED_FLOAT64_LAW = 0, 1, 2


@njit(cache=True, nogil=True)
def apply_set_pulses(devices, flat, pulses, read, ascending):  # pragma: no cover - compiled
    """Apply SET pulses in place, reading the cells back into ``read.out`` when it is non-empty.

    Each entry: ``n <- (max(n, n_min)**ratio + k)**(1/ratio)`` with ``ratio = a / a(V)`` (1 at
    the reference voltage, where the update is ``n + k``), in batch order, so a cell named
    twice receives both counts. ``pulses`` (:class:`SetPulses`) has one count per batch entry
    or a single shared one; its ``draws`` (standard normals, one per entry) add
    cycle-to-cycle noise ``noise * sqrt(k) * xi`` when non-empty; ``devices``
    (:class:`Devices`) and ``pulses.ratio`` hold one shared entry or one per device (``flat``
    holds the checked, non-negative cell indices).

    With a read-back, ``read.out[i]`` ends as entry ``i``'s cell after the whole batch: its
    state (``read.convert == STATES``) or its resistance ``r0 + r1 * n**a`` (``FLOAT32_LAW``:
    :func:`power_law_f32`; ``SHARED_FLOAT64_LAW``: the scalar float64 law with shared
    parameters). When the cells strictly ``ascend`` no cell repeats, so each entry's new
    state is final as the pulse loop writes it; otherwise the cells are gathered again after
    the loop. (Turning states into resistances block by block inside the pulse loop, while
    they are in cache, measured slower than this second, vectorised pass.)
    """
    read = ReadBack(*read)
    out = read.out
    size = flat.shape[0]
    keep = out.shape[0] > 0
    _pulse(devices, flat, pulses, out if keep and ascending else out[:0])
    if keep:
        if not ascending:
            n = Devices(*devices).n
            for i in range(size):
                out[i] = n[flat[i]]
        _to_resistance(out, flat, devices, read.convert)


@njit(cache=True, nogil=True)
def locate_and_apply(rows, cols, shape, flat, devices, pulses, read):  # pragma: no cover
    """:func:`flat_indices` into ``flat[:len(rows)]``, then :func:`apply_set_pulses`: one call.

    ``shape`` is the crossbar's ``(rows, cols)``. Returns the first entry outside the crossbar
    (nothing is applied then), or -1.
    """
    size = rows.shape[0]
    cells = flat[:size]
    bad, ascending = flat_indices(rows, cols, shape[0], shape[1], cells)
    if bad >= 0:
        return bad
    apply_set_pulses(devices, cells, pulses, read, ascending)
    return -1


@njit(cache=True, nogil=True)
def _pulse(devices, flat, pulses, out):  # pragma: no cover - compiled
    """The pulse loop of :func:`apply_set_pulses`, each new state also into a non-empty ``out``."""
    d = Devices(*devices)
    p = SetPulses(*pulses)
    n, n_min, counts, ratio, noise, draws = d.n, d.n_min, p.counts, p.ratio, p.noise, p.draws
    per_device_min = n_min.shape[0] > 1
    per_device_ratio = ratio.shape[0] > 1
    shared_pulses = counts.shape[0] == 1
    unit_ratio = (not per_device_ratio) and ratio[0] == 1.0
    with_noise = draws.shape[0] > 0
    keep = out.shape[0] > 0
    for i in range(flat.shape[0]):
        j = flat[i]
        k = 1.0 * (counts[0] if shared_pulses else counts[i])
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
            out[i] = n[j]


@njit(cache=True, nogil=True)
def _to_resistance(x, cells, devices, convert):  # pragma: no cover - compiled
    d = Devices(*devices)
    if convert == FLOAT32_LAW:
        power_law_f32(x, d.r0, d.r1, d.a, cells)
    elif convert == SHARED_FLOAT64_LAW:
        _power_law_shared(x, d.r0[0], d.r1[0], d.a[0])


@njit(cache=True, nogil=True)
def gather(values, flat, out):  # pragma: no cover - compiled
    """``out[i] = values[flat[i]]``."""
    for i in range(flat.shape[0]):
        out[i] = values[flat[i]]
    return out


@njit(cache=True, nogil=True)
def _power_law_shared(x, r0, r1, a):  # pragma: no cover - compiled
    """In place: ``x <- r0 + r1 * x**a`` with the C library's ``pow`` (same bits on any CPU)."""
    for i in range(x.shape[0]):
        x[i] = r0 + r1 * x[i] ** a
    return x


# float32 x**a without libm: x = 2**e * m, ln m = 2 atanh(s) with s = (m - 1) / (m + 1) and
# m in [sqrt(1/2), sqrt(2)) (|s| < 0.172, series to s**11: 3e-11), then 2**y = 2**k * e**f
# with k = round(y), |f| <= ln(2) / 2 (Taylor to f**8: 2e-10). The bit manipulation goes
# through LLVM bitcasts (the intrinsics below), so the loop is plain arithmetic that LLVM
# vectorises in one pass (llvmlite has no SVML); error_model="numpy" drops the zero-division
# check that would otherwise keep the division scalar. The operations, in this order, are the
# definition of the emulator's float32 power law: a faster formula must give the same bits.
_TWO52 = 4503599627370496.0  # 2**52: bits 0x4330... + i is the float 2**52 + i
_TWO52_BITS = 0x4330000000000000
_ROUND = 6755399441055744.0  # 1.5 * 2**52: y + _ROUND holds round(y) in its low bits
_ROUND_BITS = 0x4338000000000000
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951


def _bitcast(source, target):
    """An intrinsic reinterpreting a ``source`` scalar's bits as ``target`` (same width)."""

    @intrinsic
    def cast(typingctx, value):  # pragma: no cover - runs at compile time
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_f64_from_bits = _bitcast(types.int64, types.float64)
_bits_of_f64 = _bitcast(types.float64, types.int64)
_f32_from_bits = _bitcast(types.int32, types.float32)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"}, inline="always")
def _pow_f32(b, a):  # pragma: no cover - compiled
    """``x ** a`` for the float32 ``x > 0`` whose bits are ``b`` (int64), in float64."""
    e = _f64_from_bits(_TWO52_BITS + ((b >> 23) & 0xFF)) - (_TWO52 + 127.0)
    m = np.float64(_f32_from_bits(np.int32((b & 0x7FFFFF) | 0x3F800000)))
    high = m > _SQRT2
    m = m * 0.5 if high else m
    e = e + 1.0 if high else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    y = a * (2.0 * _LOG2E * s * p + e)
    rounded = y + _ROUND
    f = (y - (rounded - _ROUND)) * _LN2
    r = 1.0 / 40320.0
    r = r * f + 1.0 / 5040.0
    r = r * f + 1.0 / 720.0
    r = r * f + 1.0 / 120.0
    r = r * f + 1.0 / 24.0
    r = r * f + 1.0 / 6.0
    r = r * f + 0.5
    r = r * f + 1.0
    r = r * f + 1.0
    z = _f64_from_bits((_bits_of_f64(rounded) - _ROUND_BITS + 1023) << 52)  # 2**round(y)
    return r * z


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def power_law_f32(x, r0, r1, a, flat):  # pragma: no cover - compiled
    """In place, for float32 pulse counts ``x > 0``: ``x <- r0 + r1 * x**a`` (float64 inside).

    ``r0``, ``r1``, ``a`` hold one shared entry or one per device; with per-device parameters
    entry ``i`` is device ``flat[i]`` (or device ``i`` when ``flat`` is empty).
    """
    _power_law_f32_range(x, 0, x.shape[0], r0, r1, a, flat)
    return x


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"}, inline="always")
def _power_law_f32_range(x, start, stop, r0, r1, a, flat):  # pragma: no cover - compiled
    xi = x.view(np.int32)
    if a.shape[0] == 1:
        c0 = np.float64(r0[0])
        c1 = np.float64(r1[0])
        e = np.float64(a[0])
        for i in range(start, stop):
            x[i] = c0 + c1 * _pow_f32(np.int64(xi[i]), e)
    elif flat.shape[0] > 0:
        for i in range(start, stop):
            j = np.int64(flat[i])
            x[i] = np.float64(r0[j]) + np.float64(r1[j]) * _pow_f32(
                np.int64(xi[i]), np.float64(a[j])
            )
    else:
        for i in range(start, stop):
            x[i] = np.float64(r0[i]) + np.float64(r1[i]) * _pow_f32(
                np.int64(xi[i]), np.float64(a[i])
            )


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
    if x.dtype == np.float32:
        return power_law_f32(x, params.r0, params.r1, params.a, _NO_CELLS if flat is None else flat)
    if not params.per_device:
        return _power_law_shared(x, params.r0[0], params.r1[0], params.a[0])
    if flat is None:
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
def add_set_pulses_each_voltage(devices, flat, pulses):  # pragma: no cover - compiled
    """SET pulses with a voltage per entry (:class:`VoltagePulses`), applied in order
    (repeated cells accumulate).

    Entry ``i``: ``r = a / a(V_i)`` with ``a(V) = a + a_slope * (V - v_ref)``, then
    ``n <- (max(n, n_min)**r + k)**(1/r)``, as :meth:`PowerLaw.after_pulses`. The devices'
    ``a`` and ``n_min`` are per device or single shared entries; ``draws`` as in
    :func:`apply_set_pulses`.
    """
    d = Devices(*devices)
    p = VoltagePulses(*pulses)
    n, n_min, a, draws = d.n, d.n_min, d.a, p.draws
    per_device = a.shape[0] > 1
    per_device_min = n_min.shape[0] > 1
    with_noise = draws.shape[0] > 0
    for i in range(flat.shape[0]):
        j = flat[i]
        k = 1.0 * p.counts[i]
        if with_noise:
            k = max(k + p.noise * np.sqrt(k) * draws[i], 0.0)
        a_j = a[j] if per_device else a[0]
        e = a_j / (a_j + p.a_slope * (p.voltage[i] - p.v_ref))
        x = n[j]
        lo = n_min[j] if per_device_min else n_min[0]
        if x < lo:
            x = lo
        n[j] = (x**e + k) ** (1.0 / e)
