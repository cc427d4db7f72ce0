"""Compiled (numba) kernels of the mPES operator: choose a step's pulses, store what comes back.

Why the batch is cheap to build: for an active pre neuron ``j`` (``a_j > 0.5``, i.e.
``round(a_j) > 0``) the update direction ``-e_i * a_j`` has the sign of ``-e_i``, so post
neuron ``i`` pulses either all its positive devices on the active columns (``e_i < 0``) or all
its negative ones (``e_i > 0``), or nothing (``|e_i|`` at or below its threshold). A step's
batch is therefore the product of the pulsed post rows and the active pre columns; no outer
product is ever formed. Rows are emitted in an order that keeps the cells strictly ascending
row-major for the usual layouts, which is the emulator's fast path.

After the crossbar answers, only the touched entries of the resistance and weight signals
change: ``w = gain * (g(R+) - g(R-))`` with ``g(R) = (1/R - 1/r1) / (1/r0 - 1/r1)`` is
``w = c * (1/R+ - 1/R-)`` with ``c = gain / (1/r0 - 1/r1)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memristor_hil import numba_cache

from .groups import Calibration, Cells, Inputs, Pairs, Selection

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = [
    "ORDER_NATURAL",
    "ORDER_NEG_FIRST",
    "ORDER_POS_FIRST",
    "block_row",
    "keep_entry",
    "select_pulses",
    "store",
]

#: Emit pulsed post rows in post-neuron order (positive and negative blocks share rows).
ORDER_NATURAL = 0
#: Rows pulsing positive devices first (positive block above the negative one).
ORDER_POS_FIRST = 1
#: Rows pulsing negative devices first (negative block above the positive one).
ORDER_NEG_FIRST = 2


@njit(cache=True, nogil=True)
def _select_rows(local_error, threshold, order, rows_sel, positive):  # pragma: no cover
    """Fill ``rows_sel``/``positive`` with the post rows to pulse; returns their number."""
    per_row = threshold.shape[0] > 1
    n = 0
    for sweep in range(2 if order != ORDER_NATURAL else 1):
        for i in range(local_error.shape[0]):
            thr = threshold[i] if per_row else threshold[0]
            e = local_error[i]
            if e < -thr:
                is_pos = True
            elif e > thr:
                is_pos = False
            else:
                continue
            if order == ORDER_POS_FIRST and is_pos != (sweep == 0):
                continue
            if order == ORDER_NEG_FIRST and is_pos != (sweep == 1):
                continue
            rows_sel[n] = i
            positive[n] = is_pos
            n += 1
    return n


@njit(cache=True, nogil=True)
def select_pulses(inputs, sel, cells, fill):  # pragma: no cover - compiled
    """Choose a step's pulses and write their cells.

    Parameters
    ----------
    inputs : Inputs
        The step's signals: a pre neuron is active where ``mask_source[j] >
        sel.mask_threshold`` (0.5 for filtered activities, i.e. ``round(a_j) > 0``; 0 for
        spikes); a post row is pulsed where ``|local_error[i]|`` exceeds its threshold.
    sel : Selection
        Written: ``active``, ``post_rows``, ``positive``, ``sizes``; ``order`` is one of
        ``ORDER_*``, ``origins`` the top-left cells of the positive and negative blocks.
    cells : Cells
        With ``fill``, ``rows``/``cols`` get the crossbar cells, ``n_rows * n_active`` of
        them, row by row (the other fields are not touched).
    fill : bool
        Write ``cells.rows``/``cells.cols`` (False: only choose rows and columns).

    Returns
    -------
    (n_active, n_rows) : the number of active columns and of pulsed rows (also in
    ``sel.sizes``).
    """
    inputs, sel, cells = Inputs(*inputs), Selection(*sel), Cells(*cells)
    acts, active = inputs.mask_source, sel.active
    n_active = 0
    for j in range(acts.shape[0]):
        if acts[j] > sel.mask_threshold:
            active[n_active] = j
            n_active += 1
    sel.sizes[0] = n_active
    sel.sizes[1] = 0
    if n_active == 0:
        return 0, 0
    rows_sel, positive = sel.post_rows, sel.positive
    n_rows = _select_rows(inputs.local_error, inputs.threshold, sel.order, rows_sel, positive)
    sel.sizes[1] = n_rows
    if not fill:
        return n_active, n_rows
    rows_out, cols_out, cols_scratch, origins = cells.rows, cells.cols, sel.scratch, sel.origins
    for t in range(n_active):
        cols_scratch[t] = cols_out.dtype.type(active[t])
    for r in range(n_rows):
        i = np.int64(rows_sel[r])
        if positive[r]:
            row = rows_out.dtype.type(origins[0] + i)
            col0 = cols_out.dtype.type(origins[1])
        else:
            row = rows_out.dtype.type(origins[2] + i)
            col0 = cols_out.dtype.type(origins[3])
        # plain loops over slices of one type, which LLVM vectorises
        rows_out[r * n_active : (r + 1) * n_active] = row
        block = cols_out[r * n_active : (r + 1) * n_active]
        for t in range(n_active):
            block[t] = col0 + cols_scratch[t]
    return n_active, n_rows


@njit(cache=True, nogil=True)
def _raise_running_max(inputs, sel, running_max):  # pragma: no cover - compiled
    """Raise ``running_max[0]`` to this step's largest ``|e_i| a_j`` (``sel``'s last
    selection) and return it."""
    acts, local_error = inputs.acts, inputs.local_error
    active, rows_sel = sel.active, sel.post_rows
    n_active, n_rows = sel.sizes[0], sel.sizes[1]
    a_max = 0.0
    for t in range(n_active):
        a_max = max(a_max, acts[active[t]])
    e_max = 0.0
    for r in range(n_rows):
        e_max = max(e_max, abs(local_error[rows_sel[r]]))
    running_max[0] = max(running_max[0], a_max * e_max)
    return running_max[0]


@njit(cache=True, nogil=True)
def scaled_counts(inputs, sel, levels, per_step, running_max, out):  # pragma: no cover
    """Pulse counts growing with ``|Delta_ij| = |e_i| a_j``: ``ceil(levels * |Delta| / max)``.

    For ``sel``'s last selection (:func:`select_pulses`), cell by cell in its order, into
    ``out``. ``running_max[0]`` (the largest ``|Delta|`` seen so far) is updated first; every
    count is at least 1 and is multiplied by ``per_step`` (pulse intervals due this step).
    Returns the total number of pulses.
    """
    inputs, sel = Inputs(*inputs), Selection(*sel)
    acts, local_error = inputs.acts, inputs.local_error
    active, rows_sel = sel.active, sel.post_rows
    n_active, n_rows = sel.sizes[0], sel.sizes[1]
    scale = levels / _raise_running_max(inputs, sel, running_max)
    k = 0
    total = 0
    for r in range(n_rows):
        e = abs(local_error[rows_sel[r]]) * scale
        for t in range(n_active):
            count = int(np.ceil(e * acts[active[t]]))
            count = min(max(count, 1), levels) * per_step
            out[k] = count
            total += count
            k += 1
    return total


@njit(cache=True, nogil=True)
def store(sel, resistances, pairs):  # pragma: no cover - compiled
    """Write read-back resistances into ``pairs.r_pos``/``r_neg`` and recompute the touched
    weights.

    ``resistances`` is in the order :func:`select_pulses` emitted ``sel``'s last selection.
    ``sel``'s unsigned ``post_rows`` and ``active`` spare numba's negative-index wraparound,
    about 20% of this memory-bound loop. ``c * (1/R+ - 1/R-)`` is computed as
    ``c * (R- - R+) / (R+ R-)``: one division instead of two, which this scalar (gathering)
    loop cannot vectorise (measured: 1.7 ms -> 1.1 ms for 5e5 cells).
    """
    sel, pairs = Selection(*sel), Pairs(*pairs)
    rows_sel, positive, active = sel.post_rows, sel.positive, sel.active
    n_active, n_rows = sel.sizes[0], sel.sizes[1]
    r_pos, r_neg, weights, c = pairs.r_pos, pairs.r_neg, pairs.weights, pairs.c
    k = 0
    for r in range(n_rows):
        i = rows_sel[r]
        if positive[r]:
            for t in range(n_active):
                j = active[t]
                x = np.float64(resistances[k + t])
                y = np.float64(r_neg[i, j])
                r_pos[i, j] = resistances[k + t]
                weights[i, j] = c * (y - x) / (x * y)
        else:
            for t in range(n_active):
                j = active[t]
                x = np.float64(resistances[k + t])
                y = np.float64(r_pos[i, j])
                r_neg[i, j] = resistances[k + t]
                weights[i, j] = c * (x - y) / (x * y)
        k += n_active


@njit(cache=True, nogil=True, inline="always")
def block_row(origins, i, is_pos):  # pragma: no cover - compiled
    """Crossbar row of post neuron ``i`` and first column, in its positive or negative block."""
    if is_pos:
        return origins[0] + np.int64(i), origins[1]
    return origins[2] + np.int64(i), origins[3]


@njit(cache=True, nogil=True)
def stochastic_cells(  # pragma: no cover - compiled
    inputs, sel, levels, per_step, running_max, cells, uniforms
):
    """Pulse counts whose expectation is ``levels * |Delta| / running max``, zeros dropped.

    For ``sel``'s last selection (:func:`select_pulses` without ``fill``). Each count is
    ``floor(levels * |Delta_ij| / max + u)`` with ``u`` uniform in [0, 1): the
    ``n_rows * n_active`` entries of ``uniforms``, one per candidate cell in order (drawn in
    bulk by the caller from a ``numpy.random.Generator`` of the operator's own: the same
    values, in the same order, as one ``rng.random()`` per cell, at a fraction of the cost),
    times ``per_step``; cells whose count is 0 are left out of the batch, the others written
    to ``cells`` (``polarity``: whether each is a positive device). Returns the number of
    cells kept and the total number of pulses.
    """
    inputs, sel, cells = Inputs(*inputs), Selection(*sel), Cells(*cells)
    acts, local_error, origins = inputs.acts, inputs.local_error, sel.origins
    active, rows_sel, positive = sel.active, sel.post_rows, sel.positive
    n_active, n_rows = sel.sizes[0], sel.sizes[1]
    rows_out, cols_out, counts_out, polarity_out = (
        cells.rows,
        cells.cols,
        cells.counts,
        cells.polarity,
    )
    scale = levels / _raise_running_max(inputs, sel, running_max)
    k = 0
    total = 0
    d = 0
    for r in range(n_rows):
        i = rows_sel[r]
        e = abs(local_error[i]) * scale
        row, col0 = block_row(origins, i, positive[r])
        for t in range(n_active):
            j = active[t]
            count = int(np.floor(e * acts[j] + uniforms[d]))
            d += 1
            if count > 0:
                count = min(count, levels) * per_step
                rows_out[k] = row
                cols_out[k] = col0 + np.int64(j)
                counts_out[k] = count
                polarity_out[k] = positive[r]
                total += count
                k += 1
    return k, total


@njit(cache=True, nogil=True, inline="always")
def pair_index(origins, row, col, is_pos):  # pragma: no cover - compiled
    """The pair ``(i, j)`` (post, pre; unsigned) of crossbar cell ``(row, col)`` in its
    positive or negative block: the inverse of ``block_row``."""
    if is_pos:
        return np.uint64(np.int64(row) - origins[0]), np.uint64(np.int64(col) - origins[1])
    return np.uint64(np.int64(row) - origins[2]), np.uint64(np.int64(col) - origins[3])


@njit(cache=True, nogil=True)
def store_cells(cells, size, resistances, pairs):  # pragma: no cover - compiled
    """Like :func:`store`, for the first ``size`` cells of a batch listed cell by cell."""
    cells, pairs = Cells(*cells), Pairs(*pairs)
    rows, cols, polarity = cells.rows, cells.cols, cells.polarity
    for k in range(size):
        i, j = pair_index(pairs.origins, rows[k], cols[k], polarity[k])
        if polarity[k]:
            pairs.r_pos[i, j] = resistances[k]
        else:
            pairs.r_neg[i, j] = resistances[k]
        pair_weight(pairs, i, j)


@njit(cache=True, nogil=True, inline="always")
def pair_weight(pairs, i, j):  # pragma: no cover - compiled
    """Set pair ``(i, j)``'s weight ``c * (1/R+ - 1/R-)`` from its two stored resistances
    (``pairs``: a :class:`~.groups.Pairs`)."""
    x = np.float64(pairs.r_pos[i, j])
    y = np.float64(pairs.r_neg[i, j])
    pairs.weights[i, j] = pairs.c * (y - x) / (x * y)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True, inline="always")
def uniform(stream):  # pragma: no cover - compiled
    """The next uniform in [0, 1) of ``stream = [key, index]`` (SplitMix64; advances it).

    ``key + (index + 1) * golden`` through SplitMix64's finaliser (Steele, Lea and Flood 2014:
    the generator behind Java's ``SplittableRandom``, which passes BigCrush), top 53 bits. A
    compiled kernel draws exactly as many as it needs, which the Generator's bulk draws
    cannot give it.
    """
    index = stream[1] + np.uint64(1)
    stream[1] = index
    z = stream[0] + index * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(np.int64(z >> np.uint64(11))) * (1.0 / 9007199254740992.0)


def new_stream(generator: np.random.Generator) -> np.ndarray:
    """A ``[key, index]`` stream for :func:`uniform`, its key drawn from ``generator``."""
    return np.array([generator.integers(2**64, dtype=np.uint64), 0], dtype=np.uint64)


@njit(cache=True, nogil=True)
def learning_rate_cells(  # pragma: no cover - compiled
    inputs, sel, alpha, levels, cal, cells, stream
):
    """Pulse counts whose expected weight change is PES's ``alpha * |e_i| a_j``.

    For ``sel``'s last selection (:func:`select_pulses` without ``fill``), into ``cells``.
    ``alpha`` is ``learning_rate * dt / n_pre`` (Nengo's PES). ``cal.per_pos``/``per_neg``
    hold each device's weight change per SET pulse (kept up to date for the pulsed cells by
    the store, so no power is evaluated here), so the expected count is
    ``x = alpha |e_i| a_j / per_pulse``, rounded stochastically to ``floor(x)`` or
    ``floor(x) + 1`` with mean ``x``, and capped at ``levels``; cells with no pulse are left
    out of the batch. Returns the number of cells kept and the total number of pulses.

    How it stays cheap: at PES's learning rates ``x`` is far below one for nearly every
    candidate cell (at 1000x1000, about a thousand pulses among half a million candidates), so
    drawing a uniform for each would cost more than everything else. A row whose largest ``x``
    is below one is sampled by thinning: candidates are visited at geometric gaps with
    probability ``x_max`` (one uniform per visit), and a visited cell is kept with probability
    ``x / x_max``, so each cell is kept with probability ``x``, independently, as before; only
    a row with some ``x >= 1`` draws a uniform per cell. Uniforms come from ``stream``
    (:func:`uniform`), the operator's own.
    """
    inputs, sel, cells, cal = Inputs(*inputs), Selection(*sel), Cells(*cells), Calibration(*cal)
    acts, local_error, origins = inputs.acts, inputs.local_error, sel.origins
    active, rows_sel, positive = sel.active, sel.post_rows, sel.positive
    n_active, n_rows = sel.sizes[0], sel.sizes[1]
    per_pos, per_neg = cal.per_pos, cal.per_neg
    acts_active = np.empty(n_active, np.float64)
    for t in range(n_active):
        acts_active[t] = acts[active[t]]
    expected = np.empty(n_active, np.float64)
    k = 0
    total = 0
    for r in range(n_rows):
        i = rows_sel[r]
        e = abs(local_error[i]) * alpha
        per_pulse = per_pos[i] if positive[r] else per_neg[i]
        x_max = 0.0
        for t in range(n_active):  # one division a candidate: ~1.3 ns (profile_mpes --kernels)
            x = e * acts_active[t] / np.float64(per_pulse[active[t]])
            expected[t] = x
            x_max = max(x_max, x)
        if not x_max > 0.0:
            continue
        row, col0 = block_row(origins, i, positive[r])
        if x_max >= 1.0:  # whole pulses expected somewhere: one uniform per cell
            for t in range(n_active):
                count = np.int64(min(expected[t] + uniform(stream), levels))
                if count > 0:
                    k = keep_entry(cells, k, row, col0 + np.int64(active[t]), count, positive[r])
                    total += count
            continue
        log_miss = np.log1p(-x_max)  # visits at geometric gaps: P(visit) = x_max per cell
        t = np.int64(np.log(1.0 - uniform(stream)) / log_miss)
        while t < n_active:
            if uniform(stream) * x_max < expected[t]:
                k = keep_entry(cells, k, row, col0 + np.int64(active[t]), 1, positive[r])
                total += 1
            t += 1 + np.int64(np.log(1.0 - uniform(stream)) / log_miss)
    return k, total


@njit(cache=True, nogil=True, inline="always")
def keep_entry(cells, k, row, col, count, is_pos):  # pragma: no cover - compiled
    """Write one cell at position ``k`` of a cell-by-cell batch (a :class:`~.groups.Cells`);
    returns the next free position."""
    cells.rows[k] = row
    cells.cols[k] = col
    cells.counts[k] = count
    cells.polarity[k] = is_pos
    return k + 1
