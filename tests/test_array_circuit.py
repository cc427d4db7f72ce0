"""The crossbar's nodal model (emulator/array/circuit.py) against a circuit simulator and an
independent sparse direct solve."""

import json
from pathlib import Path

import numpy as np
import pytest
from memristor_hil.emulator.array import NodalSystem, Wiring
from scipy import sparse
from scipy.sparse.linalg import spsolve

# Qucs DC results for 5x4 crossbars (and 1x1 ones) published with badcrossbar
# (github:joksas/badcrossbar, tests/qucs/*.pickle, read by tests/test_compute.py lines 122-151,
# drawn in tests/qucs/*.sch; extracted from Qucs's DAT files by tests/qucs/extract.py): word
# line i driven at its column-0 end with applied[i] through one word-line segment, bit lines
# grounded at their last-row end through one bit-line segment, other ends floating; null
# resistances are open devices. Numbers copied from the pickles (numpy arrays only).
_QUCS = json.loads((Path(__file__).parent / "badcrossbar_qucs.json").read_text())


def _fixture_solve(case: dict, method: str = "lu") -> tuple[object, np.ndarray]:
    r = np.array([[np.inf if x is None else x for x in row] for row in case["resistance"]])
    rows, cols = r.shape
    wiring = Wiring(row_wire=case["row_wire"], col_wire=case["col_wire"])
    system = NodalSystem(rows, cols, wiring, method=method)
    row_ends = np.full((rows, 2), np.nan)
    row_ends[:, 0] = case["applied"]
    col_ends = np.full((cols, 2), np.nan)
    col_ends[:, 1] = 0.0
    return system.solve(1.0 / r, row_ends, col_ends), r


def _q(case: dict) -> float:
    r = np.array([[np.inf if x is None else x for x in row] for row in case["resistance"]])
    wiring = Wiring(row_wire=case["row_wire"], col_wire=case["col_wire"])
    return NodalSystem(*r.shape, wiring).coupling(1.0 / r)


# the line sweeps where their contraction bound q is below 1 (the others: the LU alone)
_SWEEPABLE = [n for n in sorted(_QUCS) if _q(_QUCS[n]) < 1]
_CASES = [(n, "lu") for n in sorted(_QUCS)] + [(n, "lines") for n in _SWEEPABLE]


@pytest.mark.parametrize("name, method", _CASES)
def test_output_currents_match_qucs(name, method):
    case = _QUCS[name]
    nodes, _ = _fixture_solve(case, method)
    # Qucs prints 16 significant digits; what is left is rounding in the two solvers
    np.testing.assert_allclose(
        nodes.col_current[:, 1], case["output_current"], rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize(
    "name, method", [(n, m) for n, m in _CASES if "word_line_voltage" in _QUCS[n]]
)
def test_node_voltages_and_device_currents_match_qucs(name, method):
    case = _QUCS[name]
    nodes, r = _fixture_solve(case, method)
    np.testing.assert_allclose(nodes.u, case["word_line_voltage"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nodes.w, case["bit_line_voltage"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        nodes.device_voltage / r, case["device_current"], rtol=1e-12, atol=1e-15
    )


def _reference(g, wiring, row_ends, col_ends):
    """The same circuit assembled independently (an incidence matrix over every node, one
    extra node per held end's source, Dirichlet rows for the sources) and solved by
    scipy.sparse.linalg.spsolve."""
    rows, cols = g.shape
    cells = rows * cols
    u = np.arange(cells).reshape(rows, cols)
    w = cells + u
    heads, tails, gs = [u.ravel()], [w.ravel()], [g.ravel()]
    heads += [u[:, :-1].ravel(), w[:-1, :].ravel()]
    tails += [u[:, 1:].ravel(), w[1:, :].ravel()]
    gs += [
        np.full((cols - 1) * rows, 1 / wiring.row_wire),
        np.full((rows - 1) * cols, 1 / wiring.col_wire),
    ]
    sources = []
    for ends, nodes, r_end in (
        (row_ends, (u[:, 0], u[:, -1]), wiring.row_wire + wiring.row_end),
        (col_ends, (w[0, :], w[-1, :]), wiring.col_wire + wiring.col_end),
    ):
        for e in (0, 1):
            held = ~np.isnan(ends[:, e])
            first = 2 * cells + len(sources)
            sources += list(ends[held, e])
            heads.append(nodes[e][held])
            tails.append(first + np.arange(held.sum()))
            gs.append(np.full(held.sum(), 1 / r_end))
    heads, tails, gs = np.concatenate(heads), np.concatenate(tails), np.concatenate(gs)
    total = 2 * cells + len(sources)
    edge = np.arange(heads.size)
    incidence = sparse.csr_matrix(
        (np.r_[np.ones(edge.size), -np.ones(edge.size)], (np.r_[edge, edge], np.r_[heads, tails])),
        shape=(edge.size, total),
    )
    lap = (incidence.T @ sparse.diags(gs) @ incidence).tocsc()
    inner = slice(0, 2 * cells)
    a_mat = lap[inner, inner]
    b = -lap[inner, 2 * cells :] @ np.asarray(sources)
    x = spsolve(a_mat, b)
    return x[:cells].reshape(rows, cols), x[cells:].reshape(rows, cols)


@pytest.mark.parametrize("floating", [False, True])
@pytest.mark.parametrize(
    "shape, seed", [((1, 1), 0), ((3, 7), 0), ((12, 9), 1), ((24, 31), 0), ((64, 64), 2)]
)
def test_random_arrays_agree_with_spsolve(shape, seed, floating):
    rng = np.random.default_rng(seed)
    rows, cols = shape
    g = 1.0 / rng.uniform(200, 1e8, shape) * rng.choice([0.0, 1.0], shape, p=[0.1, 0.9])
    wiring = Wiring(
        row_wire=rng.uniform(0.1, 5), col_wire=rng.uniform(0.1, 5), row_end=7.0, col_end=3.0
    )
    row_ends = rng.uniform(-1, 1, (rows, 2))
    col_ends = rng.uniform(-1, 1, (cols, 2))
    row_ends[rng.random((rows, 2)) < 0.4] = np.nan
    col_ends[rng.random((cols, 2)) < 0.4] = np.nan
    if not floating:  # every line held at one end at least
        row_ends[:, 0] = np.where(np.isnan(row_ends).all(axis=1), 0.3, row_ends[:, 0])
        col_ends[:, 1] = np.where(np.isnan(col_ends).all(axis=1), -0.2, col_ends[:, 1])
    row_ends[0, 0], col_ends[0, 1] = 0.7, 0.0  # at least one held end of each kind
    nodes = NodalSystem(rows, cols, wiring, method="lu").solve(g, row_ends, col_ends)
    u, w = _reference(g, wiring, row_ends, col_ends)
    current = g * (u - w)
    scale = np.abs(current).max()
    # device currents: what every reading is made of
    np.testing.assert_allclose(g * nodes.device_voltage, current, rtol=1e-9, atol=1e-9 * scale)
    # Node voltages: to 1e-9 where every line is held; a line held only through its devices
    # (1e-8 S against wires of 0.2-10 S) has a voltage whose condition number is ~1e9, so
    # two float64 solvers agree there to ~1e-7 only (its currents stay exact, above).
    rtol = 1e-7 if floating else 1e-9
    np.testing.assert_allclose(nodes.u, u, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(nodes.w, w, rtol=rtol, atol=rtol)


def test_end_currents_balance():
    rng = np.random.default_rng(4)
    g = 1.0 / rng.uniform(1e3, 1e5, (6, 5))
    system = NodalSystem(6, 5, Wiring(row_wire=2, col_wire=3, row_end=10, col_end=10))
    row_ends = rng.uniform(0, 1, (6, 2))
    col_ends = rng.uniform(0, 1, (5, 2))
    nodes = system.solve(g, row_ends, col_ends)
    assert (
        abs(nodes.row_current.sum() - nodes.col_current.sum())
        < 1e-12 * np.abs(nodes.row_current).sum()
    )


def test_factors_are_reused_for_the_same_version_and_ends():
    g = np.full((4, 4), 1e-3)
    system = NodalSystem(4, 4, Wiring(row_wire=1, col_wire=1), method="lu")
    ends_r = np.zeros((4, 2))
    ends_c = np.zeros((4, 2))
    ends_r[:, 1] = np.nan
    first = system.solve(g, ends_r, ends_c, version=1)
    ends_r2 = ends_r.copy()
    ends_r2[:, 0] = 1.0
    second = system.solve(g, ends_r2, ends_c, version=1)
    assert system.factorisations == 1
    assert np.all(first.u == 0) and np.all(second.u > 0)
    system.solve(g * 2, ends_r2, ends_c, version=2)
    assert system.factorisations == 2
    ends_r2[0, 1] = 0.0  # another end connected: another matrix
    system.solve(g * 2, ends_r2, ends_c, version=2)
    assert system.factorisations == 3


def test_several_right_hand_sides_match_one_at_a_time():
    rng = np.random.default_rng(2)
    g = 1.0 / rng.uniform(1e3, 1e5, (5, 6))
    system = NodalSystem(5, 6, Wiring(row_wire=1, col_wire=2, col_end=5))
    row_ends = np.full((5, 2, 3), np.nan)
    row_ends[:, 0, :] = rng.uniform(0, 1, (5, 3))
    col_ends = np.full((6, 2, 3), np.nan)
    col_ends[:, 1, :] = 0.0
    many = system.solve(g, row_ends, col_ends, version=0)
    for k in range(3):
        one = system.solve(g, row_ends[..., k], col_ends[..., k], version=0)
        np.testing.assert_allclose(many.u[..., k], one.u, rtol=1e-12)
        np.testing.assert_allclose(many.col_current[..., k], one.col_current, rtol=1e-12)


def test_zero_wire_is_exact_and_half_select_is_the_closed_form():
    # V/2 scheme without wire resistance: the selected device sees V, the rest of its row and
    # column V/2, every other device 0.
    g = 1.0 / np.random.default_rng(0).uniform(1e3, 1e5, (4, 5))
    v = 0.8
    row_ends = np.full((4, 2), np.nan)
    col_ends = np.full((5, 2), np.nan)
    row_ends[:, 0] = v / 2
    col_ends[:, 1] = v / 2
    row_ends[2, 0], col_ends[3, 1] = v, 0.0
    dv = NodalSystem(4, 5, Wiring()).solve(g, row_ends, col_ends).device_voltage
    expected = np.zeros((4, 5))
    expected[2, :] = v / 2
    expected[:, 3] = v / 2
    expected[2, 3] = v
    np.testing.assert_array_equal(dv, expected)


def test_a_floating_island_carries_no_current():
    g = np.full((3, 3), 1e-3)
    g[:, 2] = 0.0  # column 2: every device open, and the column floats
    row_ends = np.full((3, 2), np.nan)
    row_ends[:, 0] = 1.0
    col_ends = np.full((3, 2), np.nan)
    col_ends[:2, 1] = 0.0
    nodes = NodalSystem(3, 3, Wiring(row_wire=1, col_wire=1)).solve(g, row_ends, col_ends)
    assert np.all(np.isfinite(nodes.w)) and np.all(nodes.col_current[2] == 0)


def test_shorted_ends_are_refused():
    row_ends = np.array([[0.0, 1.0]])
    col_ends = np.full((2, 2), np.nan)
    with pytest.raises(ValueError, match="short circuit"):
        NodalSystem(1, 2, Wiring()).solve(np.ones((1, 2)), row_ends, col_ends)


@pytest.mark.parametrize(
    "field, value", [("row_wire", -1.0), ("col_wire", float("nan")), ("col_end", float("inf"))]
)
def test_bad_resistances_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Wiring(**{field: value})


def test_a_256x256_array_agrees_with_spsolve():
    rng = np.random.default_rng(0)
    g = 1.0 / rng.uniform(200, 1e8, (256, 256))
    row_ends = rng.uniform(-1, 1, (256, 2))
    col_ends = rng.uniform(-1, 1, (256, 2))
    wiring = Wiring(row_wire=1, col_wire=1, row_end=7, col_end=3)
    nodes = NodalSystem(256, 256, wiring, method="lu").solve(g, row_ends, col_ends)
    u, w = _reference(g, wiring, row_ends, col_ends)
    np.testing.assert_allclose(nodes.u, u, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(nodes.w, w, rtol=1e-9, atol=1e-9)


def test_a_solve_that_misses_its_tolerance_raises_naming_it():
    # the LU is direct; a factor that has lost its accuracy (here: one solve perturbed by
    # 1e-6) must raise, never hand back node voltages
    from memristor_hil.emulator.array.circuit import RESIDUAL_TOLERANCE, SolveError

    rng = np.random.default_rng(0)
    system = NodalSystem(4, 5, Wiring(row_wire=1.0, col_wire=1.0), method="lu")
    g = rng.uniform(1e-4, 1e-2, (4, 5))
    row_ends = np.full((4, 2), np.nan)
    row_ends[:, 0] = 1.0
    col_ends = np.zeros((5, 2))
    good = system.solve(g, row_ends, col_ends, version=1)
    factor = system._factor
    exact = factor.lu

    class Perturbed:
        def solve(self, b):
            return exact.solve(b) * (1 + 1e-6)

    factor.lu = Perturbed()
    with pytest.raises(SolveError, match=f"tolerance RESIDUAL_TOLERANCE = {RESIDUAL_TOLERANCE:g}"):
        system.solve(g, row_ends, col_ends, version=1)
    factor.lu = exact
    again = system.solve(g, row_ends, col_ends, version=1)
    np.testing.assert_array_equal(again.u, good.u)


# ---------------------------------------------------------------- the line sweeps (lines.py)


def _one_end_each(rng, rows, cols, orientation):
    """Line ends with every line held at exactly one end: "fixed" (word lines at end 0, bit
    lines at end 1, as reads and writes hold them), "mirrored" (the other two ends) or
    "mixed" (each line's end at random)."""
    row_far = {"fixed": np.zeros(rows, bool), "mirrored": np.ones(rows, bool)}.get(
        orientation, rng.random(rows) < 0.5
    )
    col_far = {"fixed": np.ones(cols, bool), "mirrored": np.zeros(cols, bool)}.get(
        orientation, rng.random(cols) < 0.5
    )
    row_ends = np.full((rows, 2), np.nan)
    col_ends = np.full((cols, 2), np.nan)
    row_ends[np.arange(rows), row_far.astype(int)] = rng.uniform(-1, 1, rows)
    col_ends[np.arange(cols), col_far.astype(int)] = rng.uniform(-1, 1, cols)
    return row_ends, col_ends


@pytest.mark.parametrize("orientation", ["fixed", "mirrored", "mixed"])
@pytest.mark.parametrize(
    "shape, r_low, r_high, wire",
    [
        ((1, 1), 1e3, 1e4, 1.0),
        ((3, 7), 1e6, 1e8, 2.0),  # weak coupling (q ~ 1e-5): Nb:STO-like devices
        ((24, 31), 1e5, 1e8, 5.0),
        ((64, 64), 1e3, 1e5, 0.5),
        ((12, 9), 200, 1e4, 2.0),  # strong coupling (q ~ 0.3): 15-20 sweeps
        ((256, 256), 1e7, 1e9, 1.0),
    ],
)
def test_line_sweeps_agree_with_spsolve(shape, r_low, r_high, wire, orientation):
    rng = np.random.default_rng(shape[0])
    rows, cols = shape
    # 10% open devices, a word-line wire different from the bit-line one, end resistances
    g = 1.0 / rng.uniform(r_low, r_high, shape) * rng.choice([0.0, 1.0], shape, p=[0.1, 0.9])
    wiring = Wiring(row_wire=wire, col_wire=0.7 * wire, row_end=7.0, col_end=3.0)
    row_ends, col_ends = _one_end_each(rng, rows, cols, orientation)
    system = NodalSystem(rows, cols, wiring, method="lines")
    assert system.coupling(g) < 0.5
    nodes = system.solve(g, row_ends, col_ends)
    assert system.line_solves == 1 and system.factorisations == 0
    u, w = _reference(g, wiring, row_ends, col_ends)
    current = g * (u - w)
    scale = np.abs(current).max()
    np.testing.assert_allclose(g * nodes.device_voltage, current, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(nodes.u, u, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nodes.w, w, rtol=1e-9, atol=1e-12)
    # each held end delivers its line's device currents (summed, not differenced: the sums
    # keep their precision where an LU's end voltage differences lose it)
    row_held = ~np.isnan(row_ends)
    np.testing.assert_allclose(nodes.row_current[row_held], current.sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(
        nodes.col_current[~np.isnan(col_ends)], current.sum(axis=0), rtol=1e-9, atol=1e-9 * scale
    )
    assert np.all(nodes.row_current[~row_held] == 0)


def test_zero_wire_lines_are_one_node_in_the_sweeps():
    # bit lines without wire resistance (one node each, behind their end resistance); word
    # lines with it: the sweeps handle both, against the independent solve
    rng = np.random.default_rng(3)
    g = 1.0 / rng.uniform(1e4, 1e6, (6, 5))
    wiring = Wiring(row_wire=2.0, col_wire=0.0, row_end=1.0, col_end=4.0)
    row_ends, col_ends = _one_end_each(rng, 6, 5, "fixed")
    nodes = NodalSystem(6, 5, wiring, method="lines").solve(g, row_ends, col_ends)
    lu = NodalSystem(6, 5, wiring, method="lu").solve(g, row_ends, col_ends)
    np.testing.assert_allclose(nodes.u, lu.u, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nodes.w, lu.w, rtol=1e-12, atol=1e-14)
    assert np.ptp(nodes.w, axis=0).max() == 0  # each bit line one voltage


def test_several_right_hand_sides_by_sweeps_match_one_at_a_time():
    rng = np.random.default_rng(5)
    g = 1.0 / rng.uniform(1e5, 1e7, (7, 9))
    system = NodalSystem(7, 9, Wiring(row_wire=2, col_wire=1, col_end=5), method="lines")
    row_ends = np.full((7, 2, 4), np.nan)
    row_ends[:, 0, :] = rng.uniform(0, 1, (7, 4))
    col_ends = np.full((9, 2, 4), np.nan)
    col_ends[:, 1, :] = rng.uniform(0, 0.5, (9, 4))
    many = system.solve(g, row_ends, col_ends)
    for k in range(4):
        one = system.solve(g, row_ends[..., k], col_ends[..., k])
        np.testing.assert_array_equal(many.u[..., k], one.u)
        np.testing.assert_array_equal(many.col_current[..., k], one.col_current)


def test_auto_sweeps_weakly_coupled_arrays_and_factors_the_rest():
    rng = np.random.default_rng(6)
    row_ends, col_ends = _one_end_each(rng, 8, 10, "fixed")
    wiring = Wiring(row_wire=2.0, col_wire=2.0)
    weak = NodalSystem(8, 10, wiring)
    weak.solve(1.0 / rng.uniform(1e6, 1e8, (8, 10)), row_ends, col_ends)
    assert (weak.line_solves, weak.factorisations) == (1, 0)
    assert 1 <= weak.sweeps <= 5  # q ~ 1e-5: a few sweeps from the no-wire voltages
    strong = NodalSystem(8, 10, wiring)
    g_strong = np.full((8, 10), 0.1)  # 10 ohm devices on 2 ohm segments
    assert strong.coupling(g_strong) >= 0.5
    strong.solve(g_strong, row_ends, col_ends)
    assert (strong.line_solves, strong.factorisations) == (0, 1)
    both_ends = row_ends.copy()
    both_ends[0, 1] = 0.2  # a word line held at both ends: not a line sweep
    mixed = NodalSystem(8, 10, wiring)
    mixed.solve(1.0 / rng.uniform(1e6, 1e8, (8, 10)), both_ends, col_ends)
    assert (mixed.line_solves, mixed.factorisations) == (0, 1)


def test_sweeps_that_cannot_meet_their_tolerance_raise_naming_it(monkeypatch):
    from memristor_hil.emulator.array import lines
    from memristor_hil.emulator.array.circuit import SolveError
    from memristor_hil.emulator.array.lines import LINE_TOLERANCE

    rng = np.random.default_rng(7)
    row_ends, col_ends = _one_end_each(rng, 60, 60, "fixed")
    system = NodalSystem(60, 60, Wiring(row_wire=1.0, col_wire=1.0), method="lines")
    # q just below 1: a contraction, but not one that two sweeps can certify
    g = np.full((60, 60), 1.0 / 7200.0 * 0.99)
    assert 0.95 < system.coupling(g) < 1
    with monkeypatch.context() as patch:
        patch.setattr(lines, "MAX_SWEEPS", 2)
        with pytest.raises(SolveError, match=f"LINE_TOLERANCE = {LINE_TOLERANCE:g}.* 2 sweeps"):
            system.solve(g, row_ends, col_ends)
    # q >= 1: no bound at all, refused before sweeping (it once swept 200 times, then blamed
    # the tolerance, even where the sweeps had converged)
    for r_device in (5e3, 1.0):  # q = 1.44 (the sweeps converge) and ~7e3 (they diverge)
        with pytest.raises(SolveError, match=r"coupling bound q = .* not below 1.*auto"):
            system.solve(np.full((60, 60), 1.0 / r_device), row_ends, col_ends)
    assert system.sweeps == 2  # only the first solve swept
    with pytest.raises(ValueError, match="exactly one end"):
        system.solve(g, np.zeros((60, 2)), col_ends)


@pytest.mark.parametrize("method", ["auto", "lines", "lu"])
def test_an_array_of_open_devices_on_ideal_wires_carries_no_current(method):
    """No conductance anywhere (every device open, no wire resistance): the sweeps' stopping
    rule once divided by the zero norm of the system."""
    rng = np.random.default_rng(3)
    row_ends, col_ends = _one_end_each(rng, 3, 4, "fixed")
    nodes = NodalSystem(3, 4, Wiring(0.0, 0.0), method=method).solve(
        np.zeros((3, 4)), row_ends, col_ends
    )
    assert not np.any(nodes.row_current) and not np.any(nodes.col_current)


def test_an_lu_past_the_memory_bound_is_refused_before_it_is_built():
    from memristor_hil.emulator.array.circuit import LU_MEMORY_LIMIT, SolverLimitError, lu_bytes

    assert lu_bytes(1000, 1000) > 4 * LU_MEMORY_LIMIT > lu_bytes(256, 256)
    rows = cols = 1000
    row_ends = np.full((rows, 2), np.nan)
    row_ends[:, 0] = 0.5
    col_ends = np.full((cols, 2), np.nan)
    col_ends[:, 1] = 0.0
    system = NodalSystem(rows, cols, Wiring(row_wire=2.0, col_wire=2.0))
    strong = np.full((rows, cols), 1e-4)  # 10 kohm devices: q ~ 400
    with pytest.raises(SolverLimitError, match=r"coupling bound q = .* LU_MEMORY_LIMIT"):
        system.solve(strong, row_ends, col_ends)
    row_ends[:, 1] = 0.5  # every word line held at both ends: the LU, refused again
    with pytest.raises(SolverLimitError, match="held at both ends or at none"):
        system.solve(np.full((rows, cols), 1e-8), row_ends, col_ends)
    assert system.factorisations == 0


def test_a_floating_scheme_too_large_for_the_lu_is_refused_at_open():
    from memristor_hil.emulator.array.circuit import SolverLimitError

    from memristor_hil import open_crossbar

    with pytest.raises(SolverLimitError, match="write=floating with wire resistance"):
        open_crossbar("emulator://?rows=1000&cols=1000&wire=2&read=grounded&write=floating")
    open_crossbar("emulator://?rows=1000&cols=1000&wire=2&read=grounded&write=v2")  # swept
    open_crossbar("emulator://?rows=64&cols=64&wire=2&read=floating")  # small: the LU
