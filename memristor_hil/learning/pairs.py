"""Compiled kernels for what the ``learning_rate`` policy keeps per device pair.

Kept apart from :mod:`memristor_hil.learning.kernels` (the per-step selection and store every
policy runs) because only the ``learning_rate`` policy uses them.

Read-back calibration
    The policy turns PES's expected weight change into pulse counts with each device's weight
    change per pulse. The host knows only the nominal model, and with device-to-device
    variability (15% on ``r1`` and ``a``) the nominal model's change per pulse is off by
    factors of 2-3 for many devices (the state ``n = ((R - r0) / r1) ** (1 / a)`` is steep in
    ``r1`` and ``a``). Every pulse reads the device back, so the measured change of the
    conductance is known: :func:`store_calibrated` compares it with the change the nominal
    model predicted for the same pulses from the same resistance, keeps a running ratio per
    device, and scales the nominal change per pulse at the new resistance by it. The ratio
    works the same on hardware: it needs nothing but the read-back.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memristor_hil import numba_cache

from .groups import Calibration, Cells, HostModel, Pairs, RefreshQueue
from .kernels import block_row, keep_entry, pair_index, pair_weight

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = ["CALIBRATION_RATE", "nominal_pulse_change", "store_calibrated"]

#: Weight of the newest measurement in each device's running ratio of measured to nominal
#: change per pulse (an exponential moving average; 1 would trust the last pulse alone).
CALIBRATION_RATE = 0.5
#: Bounds of the ratio: a device that did not move once (read noise, a stuck pulse) is not
#: written off, and one that jumped is not trusted beyond this.
RATIO_MIN, RATIO_MAX = 1.0 / 1024.0, 64.0


@njit(cache=True, nogil=True, inline="always")
def _nominal_resistance(big_r, k, r0, r1, inv_a):  # pragma: no cover - compiled
    """The nominal model's resistance after ``k`` SET pulses from ``big_r`` (``nan`` outside it)."""
    x = (big_r - r0) / r1
    if not x > 0.0:
        return np.nan
    n = x**inv_a
    return r0 + r1 * (n + k) ** (1.0 / inv_a)


def nominal_pulse_change(resistance, c, r0, r1, a):
    """``c`` times the nominal model's conductance change of one SET pulse from ``resistance``
    (numpy; ``inf`` where the model allows no change): what :func:`store_calibrated` keeps
    per device, before any read-back has calibrated it."""
    big_r = np.asarray(resistance, dtype=np.float64)
    x = (big_r - r0) / r1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        after = r0 + r1 * (x ** (1.0 / a) + 1.0) ** a
        following = 1.0 / after - 1.0 / big_r
        ok = (x > 0) & (following > 0) & np.isfinite(following)
    return np.where(ok, c * np.where(ok, following, 1.0), np.inf)


@njit(cache=True, nogil=True, inline="always")
def _next_pulse_change(big_r, ratio, c, r0, r1, inv_a):  # pragma: no cover - compiled
    """``c * ratio`` times the nominal conductance change of the next pulse from ``big_r``;
    ``inf`` where the model allows no change (the policy then sends no pulse there)."""
    following = 1.0 / _nominal_resistance(big_r, 1.0, r0, r1, inv_a) - 1.0 / big_r
    if following > 0.0 and np.isfinite(following) and ratio > 0.0:
        return c * ratio * following
    return np.inf


@njit(cache=True, nogil=True)
def store_calibrated(cells, size, resistances, pairs, cal, model, rate):  # pragma: no cover
    """Store a cell-by-cell batch's read-back and update each device's change per pulse.

    For every cell ``k < size`` of ``cells`` (``polarity[k]``: a positive device), with
    ``R`` its resistance before the batch (still in ``pairs.r_pos``/``r_neg``) and ``R'``
    the read-back ``resistances[k]``:

    - the measured change ``1/R' - 1/R`` is divided by the nominal model's ``1/R_nom - 1/R``
      for ``counts[k]`` pulses from ``R``, and the device's ratio moves ``rate`` of the way to
      it (skipped where the nominal change is not positive or finite);
    - ``R'`` is stored, the pair's weight becomes ``c * (1/R+ - 1/R-)``;
    - the device's weight change per pulse becomes ``ratio * c * (1/R_nom(R', 1) - 1/R')``,
      the nominal change of its next pulse scaled by what the device has shown (``inf`` where
      the nominal model says no change is possible, so the policy sends no pulse there).

    ``cal`` (a :class:`~.groups.Calibration`) holds the ratios and changes per pulse;
    ``model`` (a :class:`~.groups.HostModel`) the nominal model.
    """
    cells, pairs, cal, model = Cells(*cells), Pairs(*pairs), Calibration(*cal), HostModel(*model)
    rows, cols, polarity, counts = cells.rows, cells.cols, cells.polarity, cells.counts
    origins, r_pos, r_neg, c = pairs.origins, pairs.r_pos, pairs.r_neg, pairs.c
    ratio_pos, ratio_neg, per_pos, per_neg = cal.ratio_pos, cal.ratio_neg, cal.per_pos, cal.per_neg
    r0, r1, inv_a = model.r0, model.r1, model.inv_a
    for k in range(size):
        big_r_new = np.float64(resistances[k])
        i, j = pair_index(origins, rows[k], cols[k], polarity[k])
        if polarity[k]:
            big_r = np.float64(r_pos[i, j])
            ratio = ratio_pos[i, j]
        else:
            big_r = np.float64(r_neg[i, j])
            ratio = ratio_neg[i, j]
        per_pulse = per_pos[i, j] if polarity[k] else per_neg[i, j]
        if counts[k] == 1 and ratio > 0.0 and per_pulse > 0.0 and np.isfinite(per_pulse):
            # one pulse: its nominal change is what the last store (or the start) kept,
            # ``c * ratio * following``; two powers fewer per cell than evaluating it again
            predicted = per_pulse / (c * ratio)
        else:
            predicted = 1.0 / _nominal_resistance(big_r, counts[k], r0, r1, inv_a) - 1.0 / big_r
        if predicted > 0.0 and np.isfinite(predicted):
            measured = 1.0 / big_r_new - 1.0 / big_r
            ratio += rate * (max(measured, 0.0) / predicted - ratio)
            ratio = min(max(ratio, RATIO_MIN), RATIO_MAX)
        step = _next_pulse_change(big_r_new, ratio, c, r0, r1, inv_a)
        _keep_device(pairs, cal, i, j, polarity[k], resistances[k], ratio, step)
        pair_weight(pairs, i, j)


@njit(cache=True, nogil=True, inline="always")
def _keep_device(pairs, cal, i, j, is_pos, resistance, ratio, step):  # pragma: no cover
    """Store one device's read resistance, its ratio and its change per next pulse."""
    if is_pos:
        pairs.r_pos[i, j] = resistance
        cal.ratio_pos[i, j] = ratio
        cal.per_pos[i, j] = step
    else:
        pairs.r_neg[i, j] = resistance
        cal.ratio_neg[i, j] = ratio
        cal.per_neg[i, j] = step


# ---------------------------------------------------------------------------- pair refresh
#: Steps between two refreshes of a connection: saturated pairs wait for the next refresh
#: step (at dt = 1 ms, at most one step in 100 is a refresh step instead of a learning step).
REFRESH_PERIOD_STEPS = 100

#: Entry kinds of a refresh batch (``kinds`` of :func:`refresh_cells`).
KIND_RESET, KIND_SET = 1, 2


@njit(cache=True, nogil=True)
def mark_saturated(cells, size, pairs, r_limit, queue, count):  # pragma: no cover - compiled
    """Queue the pairs of the first ``size`` cells (just pulsed) whose two devices both read
    below ``r_limit``.

    ``queue`` (a :class:`~.groups.RefreshQueue`) is ``count`` entries long; its ``pending``
    keeps a pair from being queued twice. Returns the new length.
    """
    cells, pairs, queue = Cells(*cells), Pairs(*pairs), RefreshQueue(*queue)
    rows, cols, polarity = cells.rows, cells.cols, cells.polarity
    origins, r_pos, r_neg = pairs.origins, pairs.r_pos, pairs.r_neg
    pending, pend_i, pend_j = queue.pending, queue.post, queue.pre
    for k in range(size):
        i, j = pair_index(origins, rows[k], cols[k], polarity[k])
        if pending[i, j]:
            continue
        if r_pos[i, j] < r_limit and r_neg[i, j] < r_limit:
            pending[i, j] = True
            pend_i[count] = i
            pend_j[count] = j
            count += 1
    return count


@njit(cache=True, nogil=True, inline="always")
def _after_reset(big_r, r3, c_reset):  # pragma: no cover - compiled
    """The RESET branch ``R = r3 - r3 * m**c``: the resistance after one RESET pulse."""
    m = ((r3 - min(big_r, r3 * (1.0 - 1e-12))) / r3) ** (1.0 / c_reset)
    return r3 - r3 * (m + 1.0) ** c_reset


@njit(cache=True, nogil=True, inline="always")
def _pulses_for(big_r, missing, ratio, r0, r1, inv_a, max_count):  # pragma: no cover - compiled
    """SET pulses that raise a device's conductance ``1/big_r`` by ``missing``: the nominal
    model's count for ``missing / ratio`` (``ratio``: the device's measured / nominal change),
    rounded to the nearest, capped at ``max_count``."""
    target = 1.0 / (1.0 / big_r + missing / ratio)  # the resistance to reach
    if target <= r0:
        return max_count
    n_now = ((big_r - r0) / r1) ** inv_a
    n_target = ((target - r0) / r1) ** inv_a
    return min(int(np.floor(n_target - n_now + 0.5)), max_count)


@njit(cache=True, nogil=True)
def refresh_cells(queue, count, pairs, cal, model, max_count, cells):  # pragma: no cover
    """A refresh batch for the ``count`` queued pairs: RESET both devices, SET one back.

    Per pair, in this order: one RESET pulse on the positive and one on the negative device
    (the RESET branch moves a device from anywhere below ``~1e8`` ohm back to ``~1e8``: its
    state is known from the read resistance alone), then SET pulses on the device whose
    conductance must exceed the other's for the pair to keep its weight: the count the
    nominal model needs for the missing ``1/R+ - 1/R-``, divided by the device's measured
    ratio (:func:`store_calibrated`), rounded, capped at ``max_count`` and left out when 0.
    Returns the number of entries, written to ``cells``; ``queue.kinds`` marks each
    ``KIND_RESET`` or ``KIND_SET``. ``model`` (a :class:`~.groups.HostModel`) holds the
    nominal SET branch and the RESET branch ``r3``, ``exponent``.
    """
    queue, pairs, cal, model = (
        RefreshQueue(*queue),
        Pairs(*pairs),
        Calibration(*cal),
        HostModel(*model),
    )
    cells = Cells(*cells)
    pend_i, pend_j, kinds_out = queue.post, queue.pre, queue.kinds
    origins, r_pos, r_neg = pairs.origins, pairs.r_pos, pairs.r_neg
    ratio_pos, ratio_neg = cal.ratio_pos, cal.ratio_neg
    r0, r1, inv_a, r3, c_reset = model.r0, model.r1, model.inv_a, model.r3, model.exponent
    k = 0
    for q in range(count):
        i = pend_i[q]
        j = pend_j[q]
        rp = np.float64(r_pos[i, j])
        rn = np.float64(r_neg[i, j])
        missing = (1.0 / rp - 1.0 / rn) - (
            1.0 / _after_reset(rp, r3, c_reset) - 1.0 / _after_reset(rn, r3, c_reset)
        )
        for positive in (True, False):
            row, col0 = block_row(origins, i, positive)
            kinds_out[k] = KIND_RESET
            k = keep_entry(cells, k, row, col0 + np.int64(j), 1, positive)
        positive = missing > 0.0
        big_r = _after_reset(rp if positive else rn, r3, c_reset)
        ratio = ratio_pos[i, j] if positive else ratio_neg[i, j]
        pulses = _pulses_for(big_r, abs(missing), ratio, r0, r1, inv_a, max_count)
        if pulses > 0:
            row, col0 = block_row(origins, i, positive)
            kinds_out[k] = KIND_SET
            k = keep_entry(cells, k, row, col0 + np.int64(j), pulses, positive)
    return k


@njit(cache=True, nogil=True)
def store_refresh(cells, size, resistances, pairs, cal, model, queue):  # pragma: no cover
    """Store a refresh batch's read-back (each entry reads its device after the whole batch).

    The devices' ratios are kept (they describe the device, not its state); the change per
    pulse and the weights are recomputed, and the pairs leave the queue (``queue.pending``).
    """
    cells, pairs, cal, model = Cells(*cells), Pairs(*pairs), Calibration(*cal), HostModel(*model)
    queue = RefreshQueue(*queue)
    rows, cols, polarity = cells.rows, cells.cols, cells.polarity
    for k in range(size):
        big_r = np.float64(resistances[k])
        i, j = pair_index(pairs.origins, rows[k], cols[k], polarity[k])
        ratio = cal.ratio_pos[i, j] if polarity[k] else cal.ratio_neg[i, j]
        step = _next_pulse_change(big_r, ratio, pairs.c, model.r0, model.r1, model.inv_a)
        _keep_device(pairs, cal, i, j, polarity[k], resistances[k], ratio, step)
        pair_weight(pairs, i, j)
        queue.pending[i, j] = False


# ---------------------------------------------------------------------------- pair balance
#: The most steps a run spends balancing its pairs before learning starts (each a batch of SET
#: pulses; a pair still off after them, such as a stuck device, is left to learning).
BALANCE_STEPS = 20
#: The fraction of a pair's conductance difference one balance step aims to close: less than
#: all of it, so a device whose response the nominal model overrates does not overshoot (the
#: pair would swing, and each swing costs more pulses as the devices flatten).
BALANCE_GAIN = 0.5
#: The most SET pulses a device gets in one balance step (and the crossbar's own limit): the
#: per-step batch stays bounded (at most 1000 per pair, about 2e6 at 100x100).
BALANCE_MAX_COUNT = 1000
#: The first balance step's cap, four times larger each step up to BALANCE_MAX_COUNT: a few
#: pulses first calibrate each device's measured response, so a device that responds ten times
#: more than the nominal model is not sent a thousand pulses on the model's word.
BALANCE_FIRST_COUNT = 10


def balance_count_cap(step: int, max_count: int) -> int:
    """The most pulses per device in balance step ``step`` (from 0) on a crossbar that takes
    at most ``max_count`` per cell per batch."""
    return int(min(BALANCE_FIRST_COUNT * 4**step, BALANCE_MAX_COUNT, max_count))


@njit(cache=True, nogil=True)
def balance_cells(pairs, cal, model, max_count, cells):  # pragma: no cover - compiled
    """A batch that balances every pair: weight 0, as Nengo's PES starts from zero weights.

    Devices are drawn with 15% spread in their initial resistance, so a pair's two
    conductances differ and its weight starts far from zero (at 100x100 about four times
    the weights PES learns for f(x) = x). Per pair, the device that conducts less gets the
    SET pulses the nominal model needs to close :data:`BALANCE_GAIN` of the conductance
    difference, scaled by the device's measured ratio (:func:`store_calibrated`, which the
    read-back updates) and capped at ``max_count``; pairs within half a pulse are left out.
    Returns the number of entries (0: all balanced), written to ``cells``, and the total
    pulse count.
    """
    pairs, cal, model, cells = Pairs(*pairs), Calibration(*cal), HostModel(*model), Cells(*cells)
    origins, r_pos, r_neg = pairs.origins, pairs.r_pos, pairs.r_neg
    ratio_pos, ratio_neg = cal.ratio_pos, cal.ratio_neg
    r0, r1, inv_a = model.r0, model.r1, model.inv_a
    n_post, n_pre = r_pos.shape
    k = 0
    total = 0
    for i in range(n_post):
        for j in range(n_pre):
            rp = np.float64(r_pos[i, j])
            rn = np.float64(r_neg[i, j])
            positive = rp > rn  # the positive device conducts less: it gets the pulses
            big_r = rp if positive else rn
            ratio = np.float64(ratio_pos[i, j] if positive else ratio_neg[i, j])
            missing = BALANCE_GAIN * abs(1.0 / rp - 1.0 / rn)
            if not (missing > 0.0 and big_r > r0):
                continue
            pulses = _pulses_for(big_r, missing, ratio, r0, r1, inv_a, max_count)
            if pulses > 0:
                row, col0 = block_row(origins, i, positive)
                k = keep_entry(cells, k, row, col0 + np.int64(j), pulses, positive)
                total += pulses
    return k, total
