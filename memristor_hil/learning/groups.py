"""The arrays the mPES kernels take, in named groups (:mod:`.kernels`, :mod:`.pairs`).

A kernel took 10 to 19 positional arrays, several of one type (``r_pos``/``r_neg``,
``per_pos``/``per_neg``, ``rows``/``cols``), so two swapped arguments ran silently. Each
group below is built once, by keyword, when the simulator starts, and the kernels read its
fields by name.

How they are passed: a kernel takes each group as the NamedTuple or as the plain tuple of its
fields, in the NamedTuple's order, and names it first thing (``cal = Calibration(*cal)``,
free in compiled code). The operator passes plain tuples (:func:`plain`): numba types a plain
tuple of arrays in C, a NamedTuple through Python (measured: 3.6 us more per call with four
groups, as much as a 100x100 step's whole selection), and the order of a plain tuple is the
NamedTuple's own, so nothing can be swapped on the way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Calibration", "Cells", "HostModel", "Inputs", "Pairs", "RefreshQueue", "Selection",
           "plain"]  # fmt: skip


class Inputs(NamedTuple):
    """What one connection's step reads from Nengo (its signals, views fixed per run).

    Attributes
    ----------
    acts : numpy.ndarray
        Filtered presynaptic activities, ``(n_pre,)``.
    local_error : numpy.ndarray
        Error per post neuron, ``(n_post,)``.
    threshold : numpy.ndarray
        Error threshold, ``(1,)`` or ``(n_post,)``.
    mask_source : numpy.ndarray
        What marks a pre neuron active, ``(n_pre,)`` (``acts`` or the spikes).
    """

    acts: np.ndarray
    local_error: np.ndarray
    threshold: np.ndarray
    mask_source: np.ndarray


class Selection(NamedTuple):
    """A step's candidate cells: active pre columns times pulsed post rows.

    Attributes
    ----------
    order : int
        Row order of the batch (``kernels.ORDER_*``).
    mask_threshold : float
        A pre neuron is active where its mask source exceeds this.
    origins : numpy.ndarray
        int64 ``[pos_row, pos_col, neg_row, neg_col]``: the blocks' top-left cells (the array
        of :attr:`Pairs.origins`: the choosing kernels take no ``Pairs``, since numba's
        dispatch costs about 0.1 us per array passed).
    active : numpy.ndarray
        uint64, ``(n_pre,)``: the active pre columns (unsigned: no wraparound checks).
    post_rows : numpy.ndarray
        uint64, ``(n_post,)``: the pulsed post rows, in batch order.
    positive : numpy.ndarray
        bool, ``(n_post,)``: whether each pulsed row pulses its positive devices.
    scratch : numpy.ndarray
        int, ``(n_pre,)``, of the batch's column type: scratch space.
    sizes : numpy.ndarray
        int64, ``(2,)``: ``[n_active, n_rows]`` of the last selection.
    """

    order: int
    mask_threshold: float
    origins: np.ndarray
    active: np.ndarray
    post_rows: np.ndarray
    positive: np.ndarray
    scratch: np.ndarray
    sizes: np.ndarray


class Pairs(NamedTuple):
    """A connection's device pairs: where they are and what the host read of them.

    Attributes
    ----------
    origins : numpy.ndarray
        int64 ``[pos_row, pos_col, neg_row, neg_col]``: top-left cells of the two blocks.
    r_pos, r_neg : numpy.ndarray
        Read-back resistances of the positive and negative devices, ``(n_post, n_pre)``.
    weights : numpy.ndarray
        The connection's weights, ``(n_post, n_pre)``: ``c * (1/R+ - 1/R-)``.
    c : float
        ``gain / (1/r0 - 1/r1)`` of the nominal model.
    """

    origins: np.ndarray
    r_pos: np.ndarray
    r_neg: np.ndarray
    weights: np.ndarray
    c: float


class Cells(NamedTuple):
    """A batch listed cell by cell (what a policy chooses and its store reads back).

    Attributes
    ----------
    rows, cols : numpy.ndarray
        Crossbar cells.
    counts : numpy.ndarray
        Pulses per cell.
    polarity : numpy.ndarray
        bool: whether each cell is a positive device.
    """

    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    polarity: np.ndarray


class Calibration(NamedTuple):
    """The ``learning_rate`` policy's knowledge of each device (:mod:`.pairs`).

    Attributes
    ----------
    per_pos, per_neg : numpy.ndarray
        Each device's weight change per SET pulse, ``(n_post, n_pre)``.
    ratio_pos, ratio_neg : numpy.ndarray
        Each device's running ratio of measured to nominal change, ``(n_post, n_pre)``.
    """

    per_pos: np.ndarray
    per_neg: np.ndarray
    ratio_pos: np.ndarray
    ratio_neg: np.ndarray


class HostModel(NamedTuple):
    """The nominal device model the host computes pulse counts with.

    Attributes
    ----------
    r0, r1 : float
        ``R = r0 + r1 * n**a`` (SET branch).
    inv_a : float
        ``1 / a``.
    r3, exponent : float
        The RESET branch ``R = r3 - r3 * m**exponent`` (NaN without a refresh).
    """

    r0: float
    r1: float
    inv_a: float
    r3: float = np.nan
    exponent: float = np.nan


class RefreshQueue(NamedTuple):
    """The pairs waiting for a refresh (:func:`.pairs.mark_saturated`).

    Attributes
    ----------
    pending : numpy.ndarray
        bool, ``(n_post, n_pre)``: a pair is queued (it is queued once).
    post, pre : numpy.ndarray
        uint32: the queued pairs' row and column in the weight matrix, in queue order.
    kinds : numpy.ndarray
        int8, one per entry of a refresh batch: ``pairs.KIND_RESET`` or ``pairs.KIND_SET``.
    """

    pending: np.ndarray
    post: np.ndarray
    pre: np.ndarray
    kinds: np.ndarray


def plain(group: tuple) -> tuple:
    """The plain tuple of a group's fields, in its order: what the operator passes a kernel."""
    return tuple(group)
