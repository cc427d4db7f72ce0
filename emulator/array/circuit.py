"""The nodal model of a passive crossbar: word-line and bit-line node voltages in one solve.

Every cell ``(i, j)`` joins word-line node ``u[i, j]`` to bit-line node ``w[i, j]`` through its
device conductance ``G[i, j]``. Consecutive nodes of a word line are joined by ``1 / row_wire``,
of a bit line by ``1 / col_wire``. Each line has two ends: a word line's end 0 sits before
column 0 and its end 1 after column ``cols - 1``; a bit line's end 0 sits before row 0 and its
end 1 after row ``rows - 1``. An end is floating (NaN) or held at a voltage (0 is grounded)
through the end resistance (``row_end`` for word lines: the driver's source resistance;
``col_end`` for bit lines: the driver's or sense amplifier's resistance). Kirchhoff's current
law at every node gives the symmetric system ``A x = b`` (Chen 2013; MemTorch's
``memtorch/bh/crossbar/Passive.py`` and badcrossbar's ``badcrossbar/computing/solve.py`` build
the same one). Two solvers, chosen per solve (``method="auto"``):

- where every line is held at exactly one end and the lines' coupling bound ``q`` (see
  :mod:`.lines`) is below :data:`LINE_COUPLING_LIMIT`, line sweeps in O(rows x cols) time and
  memory (:func:`.lines.solve_lines`), which stop once their error bound on every device
  voltage is below :data:`.lines.LINE_TOLERANCE` of the largest source voltage;
- otherwise a sparse LU (SuperLU through :mod:`scipy.sparse.linalg`), kept for the next solve
  while the conductances and the set of connected ends stay the same; refused with
  :class:`SolverLimitError` where its factor's estimated size exceeds :data:`LU_MEMORY_LIMIT`.

Zero resistances are exact, not approximated by large conductances: a line with zero wire
resistance is one node, an end with zero resistance fixes its node's voltage. Nodes that no
path joins to a held end (a floating line whose devices are all open) carry no current; they
are pinned at 0 V, which changes no current anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import splu

from .lines import LINE_TOLERANCE, coupling, solve_lines, solve_lines_many
from .options import Wiring

__all__ = [
    "LINE_COUPLING_LIMIT",
    "LU_MEMORY_LIMIT",
    "METHODS",
    "RESIDUAL_TOLERANCE",
    "NodalSystem",
    "Nodes",
    "SolveError",
    "SolverLimitError",
    "Wiring",
    "batch_size",
    "lu_bytes",
    "nodal_matrix",
]

#: Largest coupling bound ``q`` (:mod:`.lines`) at which ``method="auto"`` sweeps lines; the
#: sweeps contract by ``q`` each, so at this bound ~45 reach the tolerance. Above: the LU.
LINE_COUPLING_LIMIT = 0.5
#: Largest estimated LU factor (bytes) ``method="auto"`` or ``"lu"`` builds (see :func:`lu_bytes`).
LU_MEMORY_LIMIT = 1 << 30
#: Bytes of node voltages a batch of right-hand sides may hold at once (:func:`batch_size`).
BATCH_BYTES = 64 << 20
#: The solvers :class:`NodalSystem` knows.
METHODS = ("auto", "lines", "lu")


@dataclass(frozen=True)
class Nodes:
    """A solution: node voltages ``u`` (word lines) and ``w`` (bit lines), and end currents.

    ``u`` and ``w`` have shape ``(rows, cols)`` (plus a trailing axis for several right-hand
    sides); ``row_current[i, e]`` is the current flowing into word line ``i`` at its end ``e``
    from its source, ``col_current[j, e]`` the current flowing out of bit line ``j`` at end
    ``e`` into its source (so a sense amplifier on a grounded bit line reads
    ``col_current``). Floating ends carry 0.
    """

    u: np.ndarray
    w: np.ndarray
    row_current: np.ndarray
    col_current: np.ndarray

    @property
    def device_voltage(self) -> np.ndarray:
        """Voltage across each device, word line minus bit line."""
        return self.u - self.w


class NodalSystem:
    """The nodal equations of one ``rows x cols`` array with one :class:`Wiring`.

    With ``method="lu"`` (or ``"auto"`` where the line sweeps do not apply) :meth:`solve`
    factors the system for the conductances and connected ends it is given and keeps the
    factors: the next call with the same conductance ``version`` and the same floating ends
    reuses them (only the right-hand side changes). ``method="lines"`` always sweeps lines
    (a solve they cannot finish raises :class:`SolveError`); ``"auto"`` sweeps where every
    line is held at exactly one end and the coupling bound is below
    :data:`LINE_COUPLING_LIMIT`.
    """

    def __init__(self, rows: int, cols: int, wiring: Wiring, method: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} must be one of {', '.join(METHODS)}")
        self.shape = (int(rows), int(cols))
        self.wiring = wiring
        self.method = method
        self._key: tuple[object, ...] | None = None
        self._factor: _Factor | None = None
        self._coupling: tuple[object, float] | None = None
        #: LU factorisations, right-hand sides, line-swept right-hand sides and their sweeps
        #: so far (the benchmark reads them).
        self.factorisations = 0
        self.right_hand_sides = 0
        self.line_solves = 0
        self.sweeps = 0

    def coupling(self, conductance: np.ndarray, version: object = None) -> float:
        """The lines' coupling bound ``q`` for these conductances (:mod:`.lines`).

        Parameters
        ----------
        conductance : numpy.ndarray
            ``(rows, cols)`` device conductances (siemens).
        version : object, optional
            A token that changes whenever the conductances do: the bound is kept for it.
        """
        if version is not None and self._coupling is not None and self._coupling[0] == version:
            return self._coupling[1]
        rows, cols = self.shape
        wr, wc = self.wiring.row_wire, self.wiring.col_wire
        r_row = self.wiring.row_end + cols * wr
        r_col = self.wiring.col_end + rows * wc
        q_row, q_col = coupling(
            np.asarray(conductance, dtype=float), (np.full(rows, r_row), np.full(cols, r_col))
        )
        q = q_row + q_col
        self._coupling = (version, q)
        return q

    def solve(
        self,
        conductance: np.ndarray,
        row_ends: np.ndarray,
        col_ends: np.ndarray,
        version: object = None,
    ) -> Nodes:
        """Node voltages for device ``conductance`` (siemens, ``(rows, cols)``; 0 is open).

        Parameters
        ----------
        conductance : numpy.ndarray
            Device conductances, finite and >= 0.
        row_ends, col_ends : numpy.ndarray
            Source voltage at each line end, shape ``(rows, 2)`` and ``(cols, 2)`` (NaN:
            floating), optionally with a trailing axis of right-hand sides (the NaN pattern
            must then be the same along it).
        version : object, optional
            A value that changes whenever ``conductance`` does; with it, factors are reused
            while it and the floating ends stay the same. None never reuses.
        """
        rows, cols = self.shape
        row_ends = np.asarray(row_ends, dtype=float)
        col_ends = np.asarray(col_ends, dtype=float)
        if row_ends.shape[:2] != (rows, 2) or col_ends.shape[:2] != (cols, 2):
            raise ValueError(
                f"line ends must have shapes ({rows}, 2, ...) and ({cols}, 2, ...), got "
                f"{row_ends.shape} and {col_ends.shape}"
            )
        row_held = ~np.isnan(row_ends[:, :, 0] if row_ends.ndim == 3 else row_ends)
        col_held = ~np.isnan(col_ends[:, :, 0] if col_ends.ndim == 3 else col_ends)
        single = bool(np.all(row_held.sum(axis=1) == 1) and np.all(col_held.sum(axis=1) == 1))
        if self.method == "lines" and not single:
            raise ValueError("the line sweeps need every line held at exactly one end")
        if self.method != "lu" and single:
            q = self.coupling(conductance, version)
            if self.method == "lines" and not q < 1:
                raise SolveError(
                    f"the line sweeps cannot bound their error here: the lines' coupling bound "
                    f"q = {q:.3g} is not below 1 (the contraction they need); nothing was "
                    'solved. Use method="auto", which factors such arrays (sparse LU)'
                )
            if self.method == "lines" or q < LINE_COUPLING_LIMIT:
                return self._solve_lines(conductance, row_ends, col_ends, row_held, col_held, q)
            reason = f"the lines' coupling bound q = {q:.3g} >= {LINE_COUPLING_LIMIT}"
        else:
            reason = "a line held at both ends or at none" if not single else 'method="lu"'
        key = (version, row_held.tobytes(), col_held.tobytes())
        if version is None or key != self._key or self._factor is None:
            need = lu_bytes(rows, cols)
            if need > LU_MEMORY_LIMIT:
                raise SolverLimitError(
                    f"this {rows}x{cols} solve needs the sparse LU ({reason}), whose factor "
                    f"would take about {need / 2**30:.1f} GB, above LU_MEMORY_LIMIT = "
                    f"{LU_MEMORY_LIMIT / 2**30:g} GB; hold every line at one end (a biased "
                    "scheme, not floating) and keep the coupling low, or use a smaller array"
                )
            self._factor = _Factor(self.shape, self.wiring, conductance, row_held, col_held)
            self._key = key
            self.factorisations += 1
        self.right_hand_sides += int(np.prod(row_ends.shape[2:]))
        return self._factor.solve(conductance, row_ends, col_ends)

    def _solve_lines(
        self,
        conductance: np.ndarray,
        row_ends: np.ndarray,
        col_ends: np.ndarray,
        row_held: np.ndarray,
        col_held: np.ndarray,
        q: float,
    ) -> Nodes:
        """Every right-hand side by line sweeps (:func:`.lines.solve_lines`)."""
        rows, cols = self.shape
        g = np.asarray(conductance, dtype=float)
        if g.shape != self.shape:
            raise ValueError(f"conductance must have shape {self.shape}, got {g.shape}")
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError("device conductances must be finite and >= 0 (0 is an open device)")
        row_far, col_far = row_held[:, 1], col_held[:, 1]
        extra = row_ends.shape[2:]
        k = int(np.prod(extra)) if extra else 1
        w = self.wiring
        res = np.array([w.row_wire, w.row_wire + w.row_end, w.col_wire, w.col_wire + w.col_end])
        row_v, col_v = row_ends.reshape(rows, 2, k), col_ends.reshape(cols, 2, k)
        e_rows = np.where(row_far[:, None], row_v[:, 1], row_v[:, 0])
        e_cols = np.where(col_far[:, None], col_v[:, 1], col_v[:, 0])
        g_max = float(g.max(initial=0.0))
        factor = _stop_factor(q, g_max, res)
        if np.all(row_far == row_far[0]) and np.all(col_far == col_far[0]):
            # one orientation for all: mirror it to word lines at end 0, bit lines at end 1
            flip_j, flip_i = bool(row_far[0]), not col_far[0]
            cut_j = slice(None, None, -1) if flip_j else slice(None)
            cut_i = slice(None, None, -1) if flip_i else slice(None)
            u, wv, row_sum, col_sum, info = solve_lines_many(
                g[cut_i, cut_j], (e_rows[cut_i].T, e_cols[cut_j].T), res, factor
            )
            u = np.moveaxis(u[:, cut_i, cut_j], 0, -1)
            wv = np.moveaxis(wv[:, cut_i, cut_j], 0, -1)
            row_sum, col_sum = row_sum[:, cut_i].T, col_sum[:, cut_j].T
        else:
            u, wv, row_sum, col_sum, info = self._mixed_lines(
                g, (e_rows, e_cols), (row_far, col_far), res, factor
            )
        scales = np.maximum(np.abs(e_rows).max(axis=0), np.abs(e_cols).max(axis=0))
        self.sweeps += int(info[:, 0].sum())
        for i in np.argsort(-info[:, 1] / np.maximum(scales, np.finfo(float).tiny))[:1]:
            # the worst right-hand side (largest last change per source volt) decides
            _check_sweeps((g_max, res, q), (float(info[i, 1]), int(info[i, 0])), float(scales[i]))
        row_current = np.zeros((rows, 2, k))
        col_current = np.zeros((cols, 2, k))
        row_current[np.arange(rows), row_far.astype(int)] = row_sum
        col_current[np.arange(cols), col_far.astype(int)] = col_sum
        self.line_solves += k
        self.right_hand_sides += k
        if not extra:
            return Nodes(u[..., 0], wv[..., 0], row_current[..., 0], col_current[..., 0])
        return Nodes(u, wv, row_current, col_current)

    @staticmethod
    def _mixed_lines(
        g: np.ndarray,
        sources: tuple[np.ndarray, np.ndarray],
        far: tuple[np.ndarray, np.ndarray],
        res: np.ndarray,
        factor: float,
    ) -> tuple[np.ndarray, ...]:
        """Line sweeps for lines held at different ends, one right-hand side at a time."""
        e_rows, e_cols = sources
        k = e_rows.shape[1]
        rows, cols = g.shape
        u, wv = np.empty((rows, cols, k)), np.empty((rows, cols, k))
        row_sum, col_sum, info = np.empty((rows, k)), np.empty((cols, k)), np.empty((k, 2))
        for i in range(k):
            e_r, e_c = e_rows[:, i], e_cols[:, i]
            d, drop_r, drop_c, sweeps, change = solve_lines(g, (e_r, e_c), far, res, factor)
            u[..., i] = e_r[:, None] - drop_r
            wv[..., i] = e_c[None, :] + drop_c
            current = g * d
            row_sum[:, i], col_sum[:, i] = current.sum(axis=1), current.sum(axis=0)
            info[i] = sweeps, change
        return u, wv, row_sum, col_sum, info


class _Factor:
    """One assembled and factored system (see :class:`NodalSystem`)."""

    def __init__(
        self,
        shape: tuple[int, int],
        wiring: Wiring,
        conductance: np.ndarray,
        row_held: np.ndarray,
        col_held: np.ndarray,
        factor: bool = True,
    ) -> None:
        rows, cols = shape
        g = np.asarray(conductance, dtype=float)
        if g.shape != shape:
            raise ValueError(f"conductance must have shape {shape}, got {g.shape}")
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError("device conductances must be finite and >= 0 (0 is an open device)")
        self.shape, self.wiring = shape, wiring
        self.row_held, self.col_held = row_held, col_held
        # Merged node index of every word-line and bit-line node: a line without wire
        # resistance is one node.
        cell_i, cell_j = np.indices(shape)
        if wiring.row_wire > 0:
            u_id = cell_i * cols + cell_j
            n_u = rows * cols
        else:
            u_id = cell_i.copy()
            n_u = rows
        if wiring.col_wire > 0:
            w_id = n_u + cell_i * cols + cell_j
            n_w = rows * cols
        else:
            w_id = n_u + cell_j
            n_w = cols
        self.u_id, self.w_id, self.size = u_id, w_id, n_u + n_w
        # Ends: (node, conductance to the source or inf when held directly, which end)
        end_nodes, end_g, end_slot = [], [], []
        r_row = wiring.row_wire + wiring.row_end
        r_col = wiring.col_wire + wiring.col_end
        for e, node_col in ((0, 0), (1, cols - 1)):
            lines = np.flatnonzero(row_held[:, e])
            end_nodes.append(u_id[lines, node_col])
            end_g.append(np.full(lines.size, _conductance(r_row)))
            end_slot.append(lines * 2 + e)
        for e, node_row in ((0, 0), (1, rows - 1)):
            lines = np.flatnonzero(col_held[:, e])
            end_nodes.append(w_id[node_row, lines])
            end_g.append(np.full(lines.size, _conductance(r_col)))
            end_slot.append(2 * rows + lines * 2 + e)
        self.end_node = np.concatenate(end_nodes)
        self.end_g = np.concatenate(end_g)
        self.end_slot = np.concatenate(end_slot)
        # Laplacian of the wires and devices, on merged nodes
        a_idx, b_idx, gs = [u_id.ravel()], [w_id.ravel()], [g.ravel()]
        if wiring.row_wire > 0:
            a_idx.append(u_id[:, :-1].ravel())
            b_idx.append(u_id[:, 1:].ravel())
            gs.append(np.full((cols - 1) * rows, 1.0 / wiring.row_wire))
        if wiring.col_wire > 0:
            a_idx.append(w_id[:-1, :].ravel())
            b_idx.append(w_id[1:, :].ravel())
            gs.append(np.full((rows - 1) * cols, 1.0 / wiring.col_wire))
        a, b, gv = np.concatenate(a_idx), np.concatenate(b_idx), np.concatenate(gs)
        n = self.size
        lap = sparse.coo_matrix(
            (np.concatenate([-gv, -gv]), (np.concatenate([a, b]), np.concatenate([b, a]))),
            shape=(n, n),
        ).tocsr()
        diag = np.bincount(a, gv, n) + np.bincount(b, gv, n)
        self.elements = (lap + sparse.diags(diag.astype(float))).tocsr()  # wires and devices only
        finite = np.isfinite(self.end_g)
        lap = self.elements + sparse.diags(
            np.bincount(self.end_node[finite], self.end_g[finite], n).astype(float)
        )
        # Nodes held directly by a zero-resistance end are known; so are nodes no path joins
        # to any held end (pinned at 0 V: no current reaches them).
        fixed = np.zeros(n, bool)
        fixed[self.end_node[~finite]] = True
        edge = gv > 0
        joined = sparse.coo_matrix((np.ones(edge.sum()), (a[edge], b[edge])), shape=(n, n))
        count, label = csgraph.connected_components(joined, directed=False)
        anchored = np.zeros(count, bool)
        anchored[label[self.end_node]] = True
        reached = anchored[label]
        self.fixed = fixed | ~reached
        self.free = np.flatnonzero(~self.fixed)
        self.held = np.flatnonzero(self.fixed)
        self.lap = lap
        self.a_ff = lap[self.free][:, self.free].tocsc()
        self.coupling = lap[self.free][:, self.held]
        self.lu = _factorise(self.a_ff) if self.free.size and factor else None
        #: infinity norm of the free nodes' matrix (for the backward error of each solve)
        self.norm = float(abs(self.a_ff).sum(axis=1).max()) if self.free.size else 0.0

    def solve(self, conductance: np.ndarray, row_ends: np.ndarray, col_ends: np.ndarray) -> Nodes:
        rows, cols = self.shape
        extra = row_ends.shape[2:]
        k = int(np.prod(extra)) if extra else 1
        # source voltage per end slot (rows*2 word-line ends, then cols*2 bit-line ends)
        sources = np.concatenate(
            [row_ends.reshape(rows * 2, k), col_ends.reshape(cols * 2, k)], axis=0
        )
        end_v = sources[self.end_slot]  # (ends, k)
        if np.any(np.isnan(end_v)):
            raise ValueError("a held line end has no voltage (NaN) in some right-hand side")
        x = np.zeros((self.size, k))
        finite = np.isfinite(self.end_g)
        direct = ~finite
        if np.any(direct):
            nodes = self.end_node[direct]
            x[nodes] = end_v[direct]
            if np.any(x[nodes] != end_v[direct]):
                raise ValueError(
                    "two line ends hold one node (no wire resistance, no end resistance) "
                    "at different voltages: a short circuit"
                )
        if self.lu is not None:
            rhs = np.zeros((self.size, k))
            np.add.at(rhs, self.end_node[finite], self.end_g[finite, None] * end_v[finite])
            rhs = rhs[self.free] - self.coupling @ x[self.held]
            # one right-hand side at a time: SuperLU's multi-column solve took 5-20 ms per
            # column on the 40,000-unknown 100x200 system against 4-5 ms one by one
            rhs = np.asfortranarray(rhs)
            free = np.empty_like(rhs)  # Fortran order: each column contiguous
            for i in range(k):
                free[:, i] = self.lu.solve(rhs[:, i])
            _check_residual(self.a_ff, self.norm, free, rhs)
            x[self.free] = free
        u = x[self.u_id.ravel()].reshape(rows, cols, k)
        w = x[self.w_id.ravel()].reshape(rows, cols, k)
        # End currents: from the source into the line (word lines), out of the line into the
        # source (bit lines).
        current = np.zeros((2 * rows + 2 * cols, k))
        flow = np.zeros_like(end_v)
        flow[finite] = self.end_g[finite, None] * (end_v[finite] - x[self.end_node[finite]])
        if np.any(direct):
            flow[direct] = self._direct_flow(x, flow, direct)
        current[self.end_slot] = flow
        row_current = current[: 2 * rows].reshape(rows, 2, k)
        col_current = -current[2 * rows :].reshape(cols, 2, k)
        if not extra:
            u, w = u[..., 0], w[..., 0]
            row_current, col_current = row_current[..., 0], col_current[..., 0]
        return Nodes(u, w, row_current, col_current)

    def _direct_flow(self, x: np.ndarray, flow: np.ndarray, direct: np.ndarray) -> np.ndarray:
        """Currents from the sources of ends that hold their node directly (no resistance).

        KCL at the node: what its wires and devices draw, less what resistive ends at the same
        node supply, shared equally by the direct ends there (a line without wire resistance
        held directly at both ends: the split between them is not determined by the circuit).
        """
        nodes = self.end_node[direct]
        drawn = (self.elements @ x)[nodes]
        supplied = np.zeros((self.size, x.shape[1]))
        finite = ~direct
        np.add.at(supplied, self.end_node[finite], flow[finite])
        sharing = np.bincount(nodes, minlength=self.size)[nodes]
        return (drawn - supplied[nodes]) / sharing[:, None]


#: Largest backward error a solve may return, per right-hand side:
#: ``|A x - b| / (|A| |x| + |b|)`` in the infinity norm (a stable direct solve stays near the
#: machine epsilon, whatever the system's condition).
RESIDUAL_TOLERANCE = 1e-10


class SolveError(ArithmeticError):
    """A nodal solve whose backward error exceeds :data:`RESIDUAL_TOLERANCE` (its result is
    never returned)."""


class SolverLimitError(ValueError):
    """A solve that would need more memory than :data:`LU_MEMORY_LIMIT` (refused before any
    factorisation)."""


def batch_size(shape: tuple[int, int], most: int) -> int:
    """How many right-hand sides to solve together (at most ``most``): each holds about five
    ``rows x cols`` float64 arrays on their way out (node voltages, their copies, the device
    voltages), kept within :data:`BATCH_BYTES` (64 MB: one at a time at 1000x1000)."""
    return max(1, min(most, BATCH_BYTES // (40 * shape[0] * shape[1])))


def lu_bytes(rows: int, cols: int) -> float:
    """Estimated bytes of the SuperLU factor of a wired ``rows x cols`` array's system:
    ``26e6 (n / 40000) ** 1.39`` for ``n = 2 rows cols`` unknowns, fitted through two
    measurements here (100x200: 2.2 million nonzeros, ~26 MB; 1000x1000: ~6 GB)."""
    return 26e6 * (2 * rows * cols / 40000) ** 1.39


def _norm_bound(g_max: float, res: np.ndarray) -> float:
    """A lower bound on the nodal matrix's infinity norm: a row of a node holds twice the
    conductance of each element at it (diagonal and off-diagonal), the largest device or a
    wire segment."""
    return 2.0 * max([g_max] + [1.0 / r for r in res if r > 0])


def _stop_factor(q: float, g_max: float, res: np.ndarray) -> float:
    """What the line sweeps multiply their last change by to compare it with
    ``LINE_TOLERANCE`` times the largest source voltage: ``q / (1 - q)`` (the contraction
    bound on the error) or, where larger, what keeps the backward error below a tenth of
    :data:`RESIDUAL_TOLERANCE` (see :func:`_check_sweeps`); ``inf`` for ``q >= 1`` (no
    bound: :meth:`NodalSystem.solve` refuses to sweep then). With no conductance anywhere
    (every device open, no wire resistance) the first state is exact: 0."""
    if not q < 1:
        return math.inf
    norm = _norm_bound(g_max, res)
    if norm == 0:
        return 0.0
    return max(q / (1 - q), LINE_TOLERANCE * g_max / (0.1 * RESIDUAL_TOLERANCE * norm))


def _check_sweeps(
    system: tuple[float, np.ndarray, float], last: tuple[float, int], scale: float
) -> None:
    """Raise :class:`SolveError` unless the line sweeps met their tolerance and the state they
    return has a backward error within :data:`RESIDUAL_TOLERANCE`. Its KCL residual at a
    cell's two nodes is ``G (d_k - d_(k-1))`` (:mod:`.lines`), at most ``max G`` times the
    last change; ``|A|`` is at least twice the largest conductance at a node, ``|x|`` at
    least the largest source voltage ``scale``. ``system``: the largest conductance, the
    segments' resistances and ``q``; ``last``: the last change and the sweeps made."""
    g_max, res, q = system
    change, sweeps = last
    if not _stop_factor(q, g_max, res) * change <= LINE_TOLERANCE * scale:
        raise SolveError(
            f"the line sweeps did not reach their tolerance LINE_TOLERANCE = {LINE_TOLERANCE:g} "
            f"(of the largest source voltage) in {sweeps} sweeps (coupling bound q = {q:.3g}, "
            f"last change {change:.3g} V); no state was returned"
        )
    norm = _norm_bound(g_max, res)
    error = g_max * change / max(norm * scale, np.finfo(float).tiny)
    if not error <= RESIDUAL_TOLERANCE:
        raise SolveError(
            f"the nodal solve's backward error {error:.3g} exceeds its tolerance "
            f"RESIDUAL_TOLERANCE = {RESIDUAL_TOLERANCE:g}; no state was returned"
        )


def _check_residual(
    matrix: sparse.csc_matrix, norm_a: float, x: np.ndarray, rhs: np.ndarray
) -> None:
    """Raise :class:`SolveError` unless every column's backward error is within the
    tolerance (the LU is direct: this catches a factor that lost its accuracy); ``norm_a``
    is the matrix's infinity norm."""
    residual = np.abs(matrix @ x - rhs).max(axis=0)
    scale = norm_a * np.abs(x).max(axis=0) + np.abs(rhs).max(axis=0)
    error = residual / np.maximum(scale, np.finfo(float).tiny)
    worst = float(error.max()) if error.size else 0.0
    if not worst <= RESIDUAL_TOLERANCE:
        raise SolveError(
            f"the nodal solve's backward error {worst:.3g} exceeds its tolerance "
            f"RESIDUAL_TOLERANCE = {RESIDUAL_TOLERANCE:g}; no state was returned"
        )


def nodal_matrix(
    wiring: Wiring, conductance: np.ndarray, row_held: np.ndarray, col_held: np.ndarray
) -> sparse.csc_matrix:
    """The matrix of the free nodes' equations (what :class:`NodalSystem` factors), for
    conductances ``(rows, cols)`` and the held line ends (bool, ``(rows, 2)`` and
    ``(cols, 2)``); the benchmark hands it to the peers' solvers."""
    g = np.asarray(conductance, dtype=float)
    return _Factor(g.shape, wiring, g, row_held, col_held, factor=False).a_ff


def _factorise(matrix: sparse.csc_matrix) -> object:
    """SuperLU of the (symmetric positive definite) nodal matrix: minimum degree on
    ``A^T + A`` and diagonal pivots, as for a Cholesky factor (partial pivoting would only
    add fill: the diagonal dominates). The least fill of SuperLU's orderings on these grids."""
    return splu(
        matrix,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


def _conductance(resistance: float) -> float:
    return math.inf if resistance == 0 else 1.0 / resistance
