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

__all__ = ["CALIBRATION_RATE", "store_calibrated"]

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


@njit(cache=True, nogil=True)
def store_calibrated(  # pragma: no cover - compiled
    rows,
    cols,
    polarity,
    counts,
    size,
    origins,
    resistances,
    r_pos,
    r_neg,
    weights,
    c,
    per_pos,
    per_neg,
    ratio_pos,
    ratio_neg,
    r0,
    r1,
    inv_a,
    rate,
):
    """Store a cell-by-cell batch's read-back and update each device's change per pulse.

    For every cell ``k`` (``polarity[k]``: a positive device), with ``R`` its resistance
    before the batch (still in ``r_pos``/``r_neg``) and ``R'`` the read-back:

    - the measured change ``1/R' - 1/R`` is divided by the nominal model's ``1/R_nom - 1/R``
      for ``counts[k]`` pulses from ``R``, and the device's ratio moves ``rate`` of the way to
      it (skipped where the nominal change is not positive or finite);
    - ``R'`` is stored, the pair's weight becomes ``c * (1/R+ - 1/R-)``;
    - the device's weight change per pulse becomes ``ratio * c * (1/R_nom(R', 1) - 1/R')``,
      the nominal change of its next pulse scaled by what the device has shown (``inf`` where
      the nominal model says no change is possible, so the policy sends no pulse there).
    """
    for k in range(size):
        big_r_new = np.float64(resistances[k])
        if polarity[k]:
            i = np.uint64(np.int64(rows[k]) - origins[0])
            j = np.uint64(np.int64(cols[k]) - origins[1])
            big_r = np.float64(r_pos[i, j])
            ratio = ratio_pos[i, j]
        else:
            i = np.uint64(np.int64(rows[k]) - origins[2])
            j = np.uint64(np.int64(cols[k]) - origins[3])
            big_r = np.float64(r_neg[i, j])
            ratio = ratio_neg[i, j]
        predicted = 1.0 / _nominal_resistance(big_r, counts[k], r0, r1, inv_a) - 1.0 / big_r
        if predicted > 0.0 and np.isfinite(predicted):
            measured = 1.0 / big_r_new - 1.0 / big_r
            ratio += rate * (max(measured, 0.0) / predicted - ratio)
            ratio = min(max(ratio, RATIO_MIN), RATIO_MAX)
        following = 1.0 / _nominal_resistance(big_r_new, 1.0, r0, r1, inv_a) - 1.0 / big_r_new
        step = np.inf
        if following > 0.0 and np.isfinite(following) and ratio > 0.0:
            step = c * ratio * following
        if polarity[k]:
            r_pos[i, j] = resistances[k]
            ratio_pos[i, j] = ratio
            per_pos[i, j] = step
        else:
            r_neg[i, j] = resistances[k]
            ratio_neg[i, j] = ratio
            per_neg[i, j] = step
        x = np.float64(r_pos[i, j])
        y = np.float64(r_neg[i, j])
        weights[i, j] = c * (y - x) / (x * y)
