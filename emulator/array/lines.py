"""The nodal system solved line by line: an O(rows x cols) iteration for weakly coupled arrays.

Where every word line and every bit line is held at exactly one end, a line's node voltages
follow from the currents its devices draw: the current through a segment is the sum of the
device currents beyond it (towards the floating end), and the node voltage is the source
voltage less the segments' ``R J`` up to it (cumulative sums along the line). So the device
voltages ``d = u - w`` solve the fixed point

    d = (E_row - E_col) - (L_row + L_col) G d

with ``L_row`` and ``L_col`` the lines' cumulative-sum operators and ``G`` the device
conductances. Each sweep (block Jacobi on the lines, one tridiagonal line solve being two
cumulative sums) costs O(rows x cols). In the infinity norm ``|(L_row + L_col) G| <= q`` with

    q = max_i R_i sum_j G[i, j] + max_j R_j sum_i G[i, j],

``R_i`` a line's whole resistance from its source (end plus every segment): the lines'
*coupling numbers*. For ``q < 1`` the sweeps contract by ``q`` each, and after sweep ``k``
the distance to the solution is at most ``q / (1 - q) |d_k - d_(k-1)|`` (the contraction
mapping theorem). Devices of ~1e8 ohm on 0.5-5 ohm wires have ``q`` ~ 1e-4..1e-3: a handful
of sweeps reach the tolerance from the no-wire voltages ``E_row - E_col``.

The sweep's KCL residual is exact in closed form: the lines carry the currents ``G d_(k-1)``,
so the residual at the nodes of cell ``(i, j)`` is ``+-G[i, j] (d_k - d_(k-1))[i, j]``; the
normwise backward error ``|A x - b| / (|A| |x| + |b|)`` of :mod:`.circuit` is computed from it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from memristor_hil import numba_cache

numba_cache.install()  # before any kernel here is compiled and cached: see that module

__all__ = ["LINE_TOLERANCE", "MAX_SWEEPS", "coupling", "solve_lines", "solve_lines_many"]

#: The line iteration stops once its bound on every device voltage's error,
#: ``q / (1 - q) |d_k - d_(k-1)|``, is below this fraction of the largest source voltage.
LINE_TOLERANCE = 1e-13
#: Sweeps after which a solve that has not met :data:`LINE_TOLERANCE` gives up.
MAX_SWEEPS = 200


class Stop(NamedTuple):
    """When the sweeps stop: once ``factor`` times the last sweep's largest change of a device
    voltage is at most ``target`` (volt), or after ``max_sweeps`` (the kernels take it as a
    plain tuple in this order, as the emulator's other kernels take their groups)."""

    factor: float
    target: float
    max_sweeps: int


class Drops(NamedTuple):
    """One right-hand side's state, updated in place: device voltages and each node's drop
    from its line's source, ``(rows, cols)`` each."""

    d: np.ndarray
    drop_row: np.ndarray
    drop_col: np.ndarray


class ManyOut(NamedTuple):
    """What :func:`_sweeps_many` writes for ``k`` right-hand sides: node voltages ``u``, ``w``
    ``(k, rows, cols)``, the line currents ``(k, rows)``, ``(k, cols)`` and ``info`` ``(k, 2)``
    (sweeps made, last change)."""

    u: np.ndarray
    w: np.ndarray
    row_current: np.ndarray
    col_current: np.ndarray
    info: np.ndarray


def coupling(
    conductance: np.ndarray, line_resistance: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """The word lines' and bit lines' largest coupling number ``R sum G`` (see the module).

    ``line_resistance`` holds each word line's and each bit line's whole resistance from its
    source, shape ``(rows,)`` and ``(cols,)``.
    """
    r_row, r_col = line_resistance
    q_row = float(np.max(r_row * conductance.sum(axis=1), initial=0.0))
    q_col = float(np.max(r_col * conductance.sum(axis=0), initial=0.0))
    return q_row, q_col


def solve_lines(
    conductance: np.ndarray,
    sources: tuple[np.ndarray, np.ndarray],
    far: tuple[np.ndarray, np.ndarray],
    resistances: np.ndarray,
    factor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """Device voltages of one right-hand side by line sweeps.

    Parameters
    ----------
    conductance : numpy.ndarray
        ``(rows, cols)`` device conductances (siemens).
    sources : tuple of numpy.ndarray
        Source voltage of each word line's and each bit line's held end.
    far : tuple of numpy.ndarray
        Per line, True where it is held at its end 1 (after its last node), else end 0.
    resistances : numpy.ndarray
        ``[row_wire, row_wire + row_end, col_wire, col_wire + col_end]``: a segment's
        resistance and the end segment's.
    factor : float
        The sweeps stop once ``factor`` times the last sweep's largest change of a device
        voltage is at most ``LINE_TOLERANCE`` times the largest source voltage: at least
        ``q / (1 - q)`` with ``q`` the coupling bound (:func:`coupling`, both kinds summed)
        for the error bound; ``inf`` where ``q >= 1`` (no bound: the sweeps run out).

    Returns
    -------
    d, drop_row, drop_col : numpy.ndarray
        Device voltages, and each node's drop from its line's source (``u = E_row -
        drop_row``, ``w = E_col + drop_col``), from the last sweep's currents.
    sweeps : int
        Sweeps made.
    change : float
        The last sweep's largest change of a device voltage (volt): the error bound is
        ``q / (1 - q)`` times it.
    """
    e_row, e_col = (np.ascontiguousarray(s, dtype=np.float64) for s in sources)
    g = np.ascontiguousarray(conductance, dtype=np.float64)
    scale = max(float(np.max(np.abs(s), initial=0.0)) for s in (e_row, e_col))
    target = LINE_TOLERANCE * scale
    d = e_row[:, None] - e_col[None, :]
    drop_row = np.zeros_like(g)
    drop_col = np.zeros_like(g)
    sweeps, change = _sweeps(
        g,
        (e_row, e_col),
        (far[0].astype(np.bool_), far[1].astype(np.bool_)),
        np.asarray(resistances, dtype=np.float64),
        tuple(Stop(factor=factor, target=target, max_sweeps=MAX_SWEEPS)),
        tuple(Drops(d, drop_row, drop_col)),
    )
    return d, drop_row, drop_col, sweeps, change


@njit(cache=True, nogil=True)
def _sweeps(g, sources, far, res, stop, state):  # pragma: no cover - compiled
    """Sweep until ``factor * max|d_k - d_(k-1)| <= target`` or ``max_sweeps`` (``stop``:
    :class:`Stop`), updating ``state`` (:class:`Drops`); returns the sweeps made and the last
    change. ``sources``: the word and bit lines' source voltages; ``far``: per line, whether
    it is held at its end 1."""
    e_row, e_col = sources
    row_far, col_far = far
    stop = Stop(*stop)
    factor, target, max_sweeps = stop.factor, stop.target, stop.max_sweeps
    state = Drops(*state)
    d, drop_row, drop_col = state.d, state.drop_row, state.drop_col
    rows, cols = g.shape
    seg_r, first_r, seg_c, first_c = res[0], res[1], res[2], res[3]
    current = np.empty((rows, cols))
    tmp = np.empty((rows, cols))
    acc = np.empty(cols)
    flow = np.empty(cols)
    any_top = False
    for j in range(cols):
        if not col_far[j]:
            any_top = True
    change = np.inf
    for sweep in range(1, max_sweeps + 1):
        for i in range(rows):
            for j in range(cols):
                current[i, j] = g[i, j] * d[i, j]
        # word lines: current from the source flows towards the floating end
        for i in range(rows):
            if not row_far[i]:  # source before column 0
                run = 0.0
                for j in range(cols - 1, -1, -1):
                    run += current[i, j]
                    tmp[i, j] = run * (first_r if j == 0 else seg_r)
                run = 0.0
                for j in range(cols):
                    run += tmp[i, j]
                    drop_row[i, j] = run
            else:  # source after the last column
                run = 0.0
                for j in range(cols):
                    run += current[i, j]
                    tmp[i, j] = run * (first_r if j == cols - 1 else seg_r)
                run = 0.0
                for j in range(cols - 1, -1, -1):
                    run += tmp[i, j]
                    drop_row[i, j] = run
        # bit lines, row by row (C order): current flows towards each one's source
        if any_top:  # sources before row 0: segment above node i carries rows >= i
            flow[:] = 0.0
            for i in range(rows - 1, -1, -1):
                r = first_c if i == 0 else seg_c
                for j in range(cols):
                    if not col_far[j]:
                        flow[j] += current[i, j]
                        tmp[i, j] = flow[j] * r
        flow[:] = 0.0
        acc[:] = 0.0
        for i in range(rows):
            r = first_c if i == rows - 1 else seg_c
            for j in range(cols):
                if col_far[j]:  # source after the last row: segment below i carries rows <= i
                    flow[j] += current[i, j]
                    tmp[i, j] = flow[j] * r
                else:
                    acc[j] += tmp[i, j]
                    drop_col[i, j] = acc[j]
        acc[:] = 0.0
        for i in range(rows - 1, -1, -1):
            for j in range(cols):
                if col_far[j]:
                    acc[j] += tmp[i, j]
                    drop_col[i, j] = acc[j]
        change = 0.0
        for i in range(rows):
            for j in range(cols):
                new = e_row[i] - e_col[j] - drop_row[i, j] - drop_col[i, j]
                step = abs(new - d[i, j])
                if step > change:
                    change = step
                d[i, j] = new
        if factor * change <= target:
            return sweep, change
        if not change < np.inf:  # diverged past the float range (or NaN)
            return sweep, np.inf
    return max_sweeps, change


def solve_lines_many(
    conductance: np.ndarray,
    sources: tuple[np.ndarray, np.ndarray],
    resistances: np.ndarray,
    factor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Several right-hand sides by line sweeps, word lines held at end 0 (before column 0)
    and bit lines at end 1 (after the last row), as reads and writes hold them.

    Parameters
    ----------
    conductance : numpy.ndarray
        ``(rows, cols)`` device conductances (siemens).
    sources : tuple of numpy.ndarray
        Source voltages of the word lines ``(k, rows)`` and bit lines ``(k, cols)``.
    resistances, factor
        As :func:`solve_lines`.

    Returns
    -------
    u, w : numpy.ndarray
        Node voltages, shape ``(k, rows, cols)``.
    row_current, col_current : numpy.ndarray
        Each word line's and bit line's total device current, ``(k, rows)`` and ``(k, cols)``.
    info : numpy.ndarray
        Per right-hand side, the sweeps made and the last sweep's largest change (volt).
    """
    e_row, e_col = (np.ascontiguousarray(s, dtype=np.float64) for s in sources)
    g = np.ascontiguousarray(conductance, dtype=np.float64)
    k = e_row.shape[0]
    rows, cols = g.shape
    u = np.empty((k, rows, cols))
    w = np.empty((k, rows, cols))
    row_current = np.empty((k, rows))
    col_current = np.empty((k, cols))
    info = np.empty((k, 2))
    _sweeps_many(
        g,
        (e_row, e_col),
        np.asarray(resistances, dtype=np.float64),
        tuple(Stop(factor=factor, target=LINE_TOLERANCE, max_sweeps=MAX_SWEEPS)),
        tuple(ManyOut(u, w, row_current, col_current, info)),
    )
    return u, w, row_current, col_current, info


@njit(cache=True, nogil=True)
def _sweeps_many(g, sources, res, stop, out):  # pragma: no cover - compiled
    """:func:`_sweeps` for word lines held at end 0 and bit lines at end 1, two passes a
    sweep (down the rows: device currents, word-line drops, bit-line currents; back up:
    bit-line drops and the new device voltages), every right-hand side in turn; the node
    voltages, line currents and (sweeps, last change) go to ``out`` (:class:`ManyOut`).
    ``stop.target`` is here a fraction of each right-hand side's largest source voltage."""
    e_row, e_col = sources
    stop = Stop(*stop)
    factor, tolerance, max_sweeps = stop.factor, stop.target, stop.max_sweeps
    out = ManyOut(*out)
    u, w, row_current, col_current, info = out.u, out.w, out.row_current, out.col_current, out.info
    rows, cols = g.shape
    seg_r, first_r, seg_c, first_c = res[0], res[1], res[2], res[3]
    d = np.empty((rows, cols))
    drop_row = np.empty((rows, cols))
    drop_col = np.empty((rows, cols))
    tmp = np.empty(cols)
    flow = np.empty(cols)
    for kk in range(e_row.shape[0]):
        er = e_row[kk]
        ec = e_col[kk]
        scale = 0.0
        for i in range(rows):
            scale = max(scale, abs(er[i]))
        for j in range(cols):
            scale = max(scale, abs(ec[j]))
        target = tolerance * scale
        for i in range(rows):
            for j in range(cols):
                d[i, j] = er[i] - ec[j]
        change = np.inf
        sweep = 0
        while sweep < max_sweeps:
            sweep += 1
            flow[:] = 0.0
            for i in range(rows):
                rc = first_c if i == rows - 1 else seg_c
                run = 0.0
                for j in range(cols - 1, -1, -1):
                    c = g[i, j] * d[i, j]
                    run += c
                    tmp[j] = run
                    flow[j] += c
                    drop_col[i, j] = flow[j] * rc
                run = tmp[0] * first_r
                drop_row[i, 0] = run
                for j in range(1, cols):
                    run += tmp[j] * seg_r
                    drop_row[i, j] = run
            flow[:] = 0.0  # now the running bit-line drop from the source up
            change = 0.0
            for i in range(rows - 1, -1, -1):
                for j in range(cols):
                    flow[j] += drop_col[i, j]
                    drop_col[i, j] = flow[j]
                    new = er[i] - ec[j] - drop_row[i, j] - flow[j]
                    step = abs(new - d[i, j])
                    if step > change:
                        change = step
                    d[i, j] = new
            if factor * change <= target or not change < np.inf:
                break
        info[kk, 0] = sweep
        info[kk, 1] = change
        col_current[kk, :] = 0.0
        for i in range(rows):
            total = 0.0
            for j in range(cols):
                c = g[i, j] * d[i, j]
                total += c
                col_current[kk, j] += c
                u[kk, i, j] = er[i] - drop_row[i, j]
                w[kk, i, j] = ec[j] + drop_col[i, j]
            row_current[kk, i] = total
