"""ArrayCrossbar: reads and writes through the crossbar circuit, and the device effects."""

import numpy as np
import pytest
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.array import (
    ArrayCrossbar,
    ArrayOptions,
    DeviceEffects,
    NodalSystem,
    Wiring,
)
from memristor_hil.emulator.array.options import DRIFT_T0, READ_SCHEMES
from memristor_hil.emulator.array.writes import operations
from memristor_hil.emulator.state import crossbar_from_state

from memristor_hil import InvalidBatchError, PowerLaw, PulseBatch, open_crossbar

WIRE = Wiring(row_wire=3.0, col_wire=2.0, row_end=50.0, col_end=20.0)
LOW_R = PowerLaw(r0=200, r1=2e5, r_init=1e4, variability=0.3)  # wire drops that show


def _xbar(read="grounded", write="v2", wiring=WIRE, model=LOW_R, **kw):
    return ArrayCrossbar(
        5, 6, model, seed=2, array=ArrayOptions(wiring, read=read, write=write, **kw)
    )


def _direct_read(xbar, r, c, scheme):
    """One cell read by its own nodal solve, every line end set as the scheme says."""
    rows, cols = xbar.shape
    v = xbar.array.v_read
    bias = READ_SCHEMES[scheme]
    row_ends = np.full((rows, 2), np.nan)
    col_ends = np.full((cols, 2), np.nan)
    if bias is not None:
        row_ends[:, 0] = bias[0] * v
        col_ends[:, 1] = bias[1] * v
    row_ends[r, 0], col_ends[c, 1] = v, 0.0
    g = 1.0 / xbar.true_resistances()
    nodes = NodalSystem(rows, cols, xbar.array.wiring, method="lu").solve(g, row_ends, col_ends)
    return v / nodes.col_current[c, 1]


@pytest.mark.parametrize("scheme", sorted(READ_SCHEMES))
def test_reads_match_a_solve_of_each_read(scheme):
    xbar = _xbar(read=scheme)
    xbar.apply(PulseBatch([0, 1, 4, 4], [5, 2, 0, 3], pulses=[40, 5, 90, 1]))
    measured = xbar.read_all()
    expected = np.array([[_direct_read(xbar, r, c, scheme) for c in range(6)] for r in range(5)])
    np.testing.assert_allclose(measured, expected, rtol=1e-9)
    np.testing.assert_allclose(xbar.read([4, 0], [0, 5]), expected[[4, 0], [0, 5]], rtol=1e-9)


def test_grounded_read_without_wire_is_the_true_resistance():
    xbar = _xbar(read="grounded", write="ideal", wiring=Wiring())
    np.testing.assert_allclose(xbar.read_all(), xbar.true_resistances(), rtol=1e-12)


def test_v2_and_v3_reads_without_wire_add_the_column_sneak_currents():
    # Closed form: the sense amplifier of column c also collects the other rows' devices on
    # column c, biased at V/2 (V/2 scheme) or V/3 (V/3 scheme).
    for scheme, share in (("v2", 0.5), ("v3", 1 / 3)):
        xbar = _xbar(read=scheme, write="ideal", wiring=Wiring())
        g = 1.0 / xbar.true_resistances()
        expected = 1.0 / (g + share * (g.sum(axis=0, keepdims=True) - g))
        np.testing.assert_allclose(xbar.read_all(), expected, rtol=1e-12)


def test_floating_read_of_a_2x2_is_the_device_parallel_to_the_sneak_path():
    xbar = ArrayCrossbar(2, 2, LOW_R, seed=1, array=ArrayOptions(read="floating"))
    r = xbar.true_resistances()
    sneak = r[0, 1] + r[1, 1] + r[1, 0]
    expected = 1.0 / (1.0 / r[0, 0] + 1.0 / sneak)
    np.testing.assert_allclose(xbar.read([0], [0]), [expected], rtol=1e-12)


def test_ideal_write_scheme_without_wire_matches_the_ideal_emulator():
    ideal = EmulatedCrossbar(5, 6, LOW_R, seed=2)
    xbar = _xbar(read="ideal", write="ideal", wiring=Wiring())
    batch = PulseBatch([0, 3, 3, 4], [1, 2, 5, 5], pulses=[3, 7, 1, 2])
    back = xbar.apply(batch, read_back=True)
    np.testing.assert_allclose(back, ideal.apply(batch, read_back=True), rtol=1e-14)
    np.testing.assert_array_equal(xbar.pulse_counts, ideal.pulse_counts)
    np.testing.assert_allclose(xbar.read_all(), ideal.read_all(), rtol=1e-14)


@pytest.mark.parametrize("group", ["row", "cell"])
def test_v2_write_without_wire_half_selects_by_the_closed_form(group):
    # Selected cells get V (the ideal emulator's pulse); with row grouping the rest of the
    # row and the selected columns get V/2 for as many pulses as the slice lasts (a(V/2)),
    # every other device nothing.
    v = 0.4
    xbar = _xbar(write="v2", wiring=Wiring(), group=group, threshold=0.1)
    model, params = xbar.model, xbar.params
    n0 = xbar.pulse_counts.ravel()
    xbar.apply(PulseBatch([2], [3], pulses=5, voltage=v))
    n = xbar.pulse_counts.ravel()
    flat = 2 * 6 + 3
    half = [2 * 6 + c for c in range(6) if c != 3] + [r * 6 + 3 for r in range(5) if r != 2]

    def expect(cell, volts):
        p = type(params)(params.r0[[cell]], params.r1[[cell]], params.a[[cell]])
        return model.after_pulses(n0[[cell]], 5, volts, p)[0]

    np.testing.assert_allclose(n[flat], expect(flat, v), rtol=1e-12)
    for cell in half:
        np.testing.assert_allclose(n[cell], expect(cell, v / 2), rtol=1e-12)
    untouched = np.setdiff1d(np.arange(30), [flat, *half])
    np.testing.assert_array_equal(n[untouched], n0[untouched])


def test_below_the_threshold_half_selected_devices_keep_their_state():
    xbar = _xbar(write="v2", wiring=Wiring(), threshold=0.3)
    n0 = xbar.pulse_counts
    xbar.apply(PulseBatch([1], [1], pulses=4, voltage=0.4))
    changed = np.argwhere(xbar.pulse_counts != n0)
    assert changed.tolist() == [[1, 1]]


def test_v3_write_resets_the_unselected_devices_when_the_model_can():
    v = 0.6
    with_reset = LOW_R.replace(reset=True, reset_r3=1e6)
    for model, moves in ((with_reset, True), (LOW_R, False)):
        xbar = _xbar(write="v3", wiring=Wiring(), model=model, threshold=0.1)
        r0 = xbar.true_resistances()
        xbar.apply(PulseBatch([0], [0], pulses=3, voltage=v))
        r1 = xbar.true_resistances()
        # cell (3, 4) is neither in row 0 nor column 0: it sees -V/3, a RESET polarity
        assert bool(r1[3, 4] > r0[3, 4]) is moves
        assert r1[0, 0] < r0[0, 0] and r1[0, 3] < r0[0, 3]  # selected, half-selected: SET


def test_ir_drop_lowers_the_voltage_far_from_the_drivers():
    near = _xbar(write="v2", threshold=10.0)
    far = _xbar(write="v2", threshold=10.0)
    ideal = _xbar(write="v2", wiring=Wiring(), threshold=10.0)
    batch_near = PulseBatch([4], [0], pulses=20, voltage=0.3)  # next to both drivers
    batch_far = PulseBatch([0], [5], pulses=20, voltage=0.3)  # far from both
    for x, b in ((near, batch_near), (far, batch_far), (ideal, batch_far), (ideal, batch_near)):
        x.apply(b)
    drop_near = near.true_resistances()[4, 0] - ideal.true_resistances()[4, 0]
    drop_far = far.true_resistances()[0, 5] - ideal.true_resistances()[0, 5]
    assert 0 < drop_near < drop_far  # less SET where the device got less voltage


def test_write_uses_the_solved_voltage_of_each_device():
    xbar = _xbar(write="v2", threshold=10.0, group="cell")
    g = 1.0 / xbar.true_resistances()
    n0 = xbar.pulse_counts.ravel()
    row_ends = np.full((5, 2), np.nan)
    col_ends = np.full((6, 2), np.nan)
    row_ends[:, 0], col_ends[:, 1] = 0.25, 0.25
    row_ends[1, 0], col_ends[4, 1] = 0.5, 0.0
    dv = NodalSystem(5, 6, WIRE).solve(g, row_ends, col_ends).device_voltage
    assert 0.3 < dv[1, 4] < 0.5
    xbar.apply(PulseBatch([1], [4], pulses=6, voltage=0.5))
    p = xbar.params
    cell = 1 * 6 + 4
    expected = xbar.model.after_pulses(
        n0[[cell]], 6, dv[1, 4], type(p)(p.r0[[cell]], p.r1[[cell]], p.a[[cell]])
    )
    np.testing.assert_allclose(xbar.pulse_counts.ravel()[cell], expected[0], rtol=1e-12)


def test_row_grouping_splits_a_slice_by_pulse_count():
    ops = operations(
        np.array([0, 0, 0, 2, 0]),
        np.array([1, 3, 4, 0, 1]),
        np.array([2, 5, 2, 1, 1]),
        np.array(0.2),
        "row",
    )
    assert [(o.row, o.cols.tolist(), o.pulses) for o in ops] == [
        (0, [1, 3, 4], 2),
        (0, [1, 3], 1),  # (0, 1) was named twice: 2 + 1 pulses
        (0, [3], 2),
        (2, [0], 1),
    ]
    cells = operations(np.array([0, 0]), np.array([1, 3]), np.array([2, 5]), np.array(0.2), "cell")
    assert [(o.row, o.cols.tolist(), o.pulses) for o in cells] == [(0, [1], 2), (0, [3], 5)]


def test_reset_without_the_branch_is_refused_before_any_change():
    xbar = _xbar()
    before = xbar.pulse_counts
    with pytest.raises(InvalidBatchError, match="reset"):
        xbar.apply(PulseBatch([0], [0], voltage=-0.2))
    np.testing.assert_array_equal(xbar.pulse_counts, before)


# ---------------------------------------------------------------------- device effects
def _effects(**kw):
    return ArrayCrossbar(
        10, 10, LOW_R, seed=5, array=ArrayOptions(write="ideal"), effects=DeviceEffects(**kw)
    )


def test_stuck_devices_are_drawn_exactly_and_never_change():
    xbar = _effects(stuck=0.1)
    r = xbar.true_resistances()
    stuck = np.isin(r, [LOW_R.r0, LOW_R.r1])
    assert stuck.sum() == 10
    rows, cols = np.nonzero(np.ones((10, 10)))
    xbar.apply(PulseBatch(rows, cols, pulses=50, voltage=0.3))
    after = xbar.true_resistances()
    np.testing.assert_array_equal(after[stuck], r[stuck])
    assert np.all(after[~stuck] < r[~stuck])
    np.testing.assert_array_equal(xbar.read_all(), after)  # ideal reads see them too


def test_read_noise_is_fresh_per_read_seeded_and_proportional():
    a, b = _effects(read_noise=0.05), _effects(read_noise=0.05)
    first, second = a.read_all(), a.read_all()
    assert np.all(first != second)
    np.testing.assert_array_equal(first, b.read_all())
    ratio = a.true_resistances() / np.stack([a.read_all() for _ in range(40)])
    assert abs(ratio.std() - 0.05) < 0.005 and abs(ratio.mean() - 1) < 0.005


def test_drift_follows_the_power_law_and_restarts_at_each_write():
    # aihwkit's PCM drift (github:IBM/aihwkit, src/aihwkit/inference/noise/pcm.py lines
    # 138-142): t = t_inference + t_0, g = g_prog * (t / t_0) ** -nu, t_0 = 20 s (line 70);
    # in resistance R = R_prog * ((t + t0) / t0) ** nu, t counted from the device's last write
    xbar = _effects(drift=0.05)
    r_w = xbar.true_resistances()
    xbar.advance(100.0)
    np.testing.assert_allclose(
        xbar.true_resistances(), r_w * ((100.0 + DRIFT_T0) / DRIFT_T0) ** 0.05, rtol=1e-9
    )
    xbar.apply(PulseBatch([0], [0], pulses=1, voltage=0.1))
    written = xbar.true_resistances()[0, 0]
    xbar.advance(30.0)
    r = xbar.true_resistances()
    age = 1e-6  # the pulse's own 1 us, then 30 s
    np.testing.assert_allclose(
        r[0, 0], written * ((30 + age + DRIFT_T0) / (age + DRIFT_T0)) ** 0.05, rtol=1e-12
    )
    np.testing.assert_allclose(r[1, 1], r_w[1, 1] * ((130 + DRIFT_T0) / DRIFT_T0) ** 0.05)


def test_the_adc_rounds_the_read_current_to_its_steps():
    full = 1e-4
    xbar = _effects(adc_bits=4, adc_range=full)
    lsb = full / 16
    current = xbar.array.v_read / xbar.read_all()
    np.testing.assert_allclose(current / lsb, np.maximum(np.round(current / lsb), 0.5))
    exact = xbar.array.v_read / xbar.true_resistances()
    assert np.all(np.abs(current - exact) <= lsb / 2 + 1e-18)


def test_the_dac_rounds_pulse_voltages():
    a = _effects(dac_step=0.05)
    b = _effects()
    a.apply(PulseBatch([0], [0], pulses=3, voltage=0.1213))
    b.apply(PulseBatch([0], [0], pulses=3, voltage=0.1))
    np.testing.assert_array_equal(a.true_resistances(), b.true_resistances())


@pytest.mark.parametrize(
    "kw, option",
    [
        ({"stuck": 1.5}, "stuck"),
        ({"stuck": -0.1}, "stuck"),
        ({"adc_bits": 0}, "adc_bits"),
        ({"read_noise": float("nan")}, "read_noise"),
        ({"drift": -1.0}, "drift"),
    ],
)
def test_bad_effects_are_refused_naming_the_option(kw, option):
    with pytest.raises(ValueError, match=option):
        DeviceEffects(**kw)


@pytest.mark.parametrize(
    "kw, option",
    [({"read": "half"}, "read"), ({"write": "grounded"}, "write"), ({"group": "x"}, "group")],
)
def test_unknown_schemes_are_refused_naming_the_option(kw, option):
    with pytest.raises(ValueError, match=option):
        ArrayOptions(**kw)


# ---------------------------------------------------------------------- emulator:// options
def test_url_options_open_an_array_crossbar():
    url = (
        "emulator://?rows=4&cols=5&seed=3&wire=2&col_end=10&read=v2&write=v3&group=cell"
        "&read_noise=0.01&drift=0.05&stuck=0.1&adc_bits=12&dac_step=0.01&tick=0.001"
    )
    with open_crossbar(url) as xbar:
        assert isinstance(xbar, ArrayCrossbar) and xbar.shape == (4, 5)
        assert xbar.array == ArrayOptions(
            Wiring(row_wire=2, col_wire=2, col_end=10), read="v2", write="v3", group="cell"
        )
        assert xbar.effects == DeviceEffects(
            read_noise=0.01, drift=0.05, stuck=0.1, adc_bits=12, dac_step=0.01, tick=0.001
        )
        xbar.apply(PulseBatch([0], [0]))
        assert xbar.time == pytest.approx(0.001 + 1e-6)
    with open_crossbar("emulator://?rows=2&cols=2") as ideal:
        assert type(ideal) is EmulatedCrossbar  # no array option: the ideal emulator


@pytest.mark.parametrize(
    "query, option",
    [
        ("read=half", "read="),
        ("write=grounded", "write="),
        ("wire=-1", "wire="),
        ("wire=nan", "wire="),
        ("row_end=inf", "row_end="),
        ("col_wire=-0.5&read=v2", "col_wire="),
        ("stuck=1.5", "stuck="),
        ("stuck=nan", "stuck="),
        ("read_noise=-0.1", "read_noise="),
        ("adc_bits=0", "adc_bits="),
        ("adc_bits=1.5", "adc_bits="),
        ("wire=2", "read= or write="),
    ],
)
def test_bad_url_options_are_refused_at_open_naming_the_option(query, option):
    with pytest.raises(ValueError, match=f"option.*{option}.*emulator://|emulator://.*{option}"):
        open_crossbar(f"emulator://?rows=2&cols=2&{query}")


@pytest.mark.parametrize("scheme", ["v2", "v3"])
def test_closed_form_writes_without_wire_match_the_solved_ones(scheme):
    # The zero-wire shortcut (no solve) against the nodal solve of a vanishing wire
    batch = PulseBatch([0, 0, 2, 3, 3], [1, 4, 4, 0, 5], pulses=[2, 3, 1, 4, 4], voltage=0.5)
    model = LOW_R.replace(reset=True, reset_r3=1e6)
    fast = _xbar(write=scheme, wiring=Wiring(), model=model, threshold=0.1)
    solved = _xbar(
        write=scheme, wiring=Wiring(row_wire=1e-9, col_wire=1e-9), model=model, threshold=0.1
    )
    fast.apply(batch)
    solved.apply(batch)
    np.testing.assert_allclose(fast.pulse_counts, solved.pulse_counts, rtol=1e-6)


def test_an_array_crossbar_offers_no_independent_device_parameters():
    # nengo-dl simulates devices natively from device_parameters: not through a circuit
    assert _xbar().device_parameters is None
    assert EmulatedCrossbar(2, 2).device_parameters is not None


def test_a_saved_array_comes_back_as_the_same_array(tmp_path):
    # the emulator service restores its devices with crossbar_from_state
    xbar = ArrayCrossbar(
        5,
        6,
        LOW_R,
        seed=2,
        array=ArrayOptions(WIRE, read="v2", write="v3", group="cell", threshold=0.05),
        effects=DeviceEffects(drift=0.02, stuck=0.1),
    )
    xbar.apply(PulseBatch([1, 2], [3, 4], pulses=[5, 2], voltage=0.3))
    xbar.advance(12.5)
    xbar.save_state(tmp_path / "state.npz")
    back = crossbar_from_state(tmp_path / "state.npz")
    assert type(back) is ArrayCrossbar
    assert back.array == xbar.array and back.effects == xbar.effects
    assert back.time == xbar.time
    np.testing.assert_array_equal(back.pulse_counts, xbar.pulse_counts)
    np.testing.assert_array_equal(back.read_all(), xbar.read_all())
    ideal = EmulatedCrossbar(2, 2, seed=0)
    ideal.save_state(tmp_path / "ideal.npz")
    assert type(crossbar_from_state(tmp_path / "ideal.npz")) is EmulatedCrossbar
    with pytest.raises(ValueError, match="array crossbar"):  # never silently the ideal one
        EmulatedCrossbar.from_state(tmp_path / "state.npz")


class _NumPyWrites(ArrayCrossbar):
    """An array crossbar that always takes the NumPy write path (the compiled one's oracle)."""

    _compiled_writes = False


@pytest.mark.parametrize("scheme", ["v2", "v3"])
@pytest.mark.parametrize("group", ["row", "cell"])
def test_compiled_closed_form_writes_match_the_numpy_path(scheme, group):
    batch = PulseBatch(
        [0, 0, 2, 3, 3, 3], [1, 4, 4, 0, 5, 5], pulses=[2, 3, 1, 4, 4, 1], voltage=0.5
    )
    model = LOW_R.replace(reset=True, reset_r3=1e6)
    effects = DeviceEffects(stuck=0.2)
    array = ArrayOptions(Wiring(), write=scheme, group=group, threshold=0.1)
    fast = ArrayCrossbar(5, 6, model, seed=2, array=array, effects=effects)
    reference = _NumPyWrites(5, 6, model, seed=2, array=array, effects=effects)
    for xbar in (fast, reference):
        xbar.apply(batch)
        xbar.apply(PulseBatch([4], [2], pulses=3, voltage=-0.5))
    assert np.any(fast.pulse_counts != ArrayCrossbar(5, 6, model, seed=2).pulse_counts)
    np.testing.assert_allclose(fast.pulse_counts, reference.pulse_counts, rtol=1e-12)


@pytest.mark.parametrize("scheme", ["v2", "floating"])
def test_empty_batches_and_regions_read_like_the_whole_array(scheme):
    xbar = _xbar(read=scheme, write=scheme)
    before = xbar.pulse_counts
    assert xbar.apply(PulseBatch([], []), read_back=True).shape == (0,)
    np.testing.assert_array_equal(xbar.pulse_counts, before)
    np.testing.assert_allclose(xbar.read_region(1, 2, 3, 4), xbar.read_all()[1:4, 2:6], rtol=1e-12)
    out = np.empty(2)
    back = xbar.apply(PulseBatch([0, 4], [0, 5], pulses=2), read_back=True, out=out)
    assert back is out
    np.testing.assert_allclose(out, xbar.read([0, 4], [0, 5]), rtol=1e-12)


def test_the_service_serves_an_array_and_restores_it_from_its_state(tmp_path):
    # memristor-hil emulate as its own process, over TCP through the project's driver: the
    # same emulator:// array options, the same readings (sneak currents) as in process, and
    # after a kill and restart from --state the same array, not the ideal one
    from memristor_hil.testing.service import EmulatorService

    options = {"wire": 2, "read": "v2", "write": "v2", "r1": 2e5, "r_init": 1e4}
    local = open_crossbar(
        "emulator://?rows=4&cols=5&seed=7&" + "&".join(f"{k}={v}" for k, v in options.items())
    )
    batch = PulseBatch([0, 2, 3], [1, 1, 4], pulses=[3, 2, 5], voltage=0.2)
    state = tmp_path / "state.npz"
    with EmulatorService.start(
        "tcp", rows=4, cols=5, seed=7, model=options, state=state, save_interval=0
    ) as service:
        with open_crossbar(service.url) as remote:
            back = remote.apply(batch, read_back=True)
            np.testing.assert_allclose(back, local.apply(batch, read_back=True), rtol=1e-12)
            np.testing.assert_allclose(remote.read_all(), local.read_all(), rtol=1e-12)
        service.restart()
        with open_crossbar(service.url) as remote:
            np.testing.assert_allclose(remote.read_all(), local.read_all(), rtol=1e-12)
            assert not np.allclose(local.read_all(), local.true_resistances())  # sneak paths


class _OperationWrites(ArrayCrossbar):
    """An array crossbar that applies a one-voltage batch operation by operation (the
    per-cell count path's oracle)."""

    def _apply_counted(self, batch, voltage, flat):
        return None


@pytest.mark.parametrize("scheme", ["v2", "v3"])
@pytest.mark.parametrize("group", ["row", "cell"])
@pytest.mark.parametrize("threshold", [0.03, 0.4])
def test_counted_writes_match_the_operations_one_by_one(scheme, group, threshold):
    # random batches with repeated cells and mixed counts on a 7x9 array with stuck devices;
    # at V/3 above the threshold the unselected cells' (alpha - beta) V would act between the
    # half-selects on a model with a RESET branch (that takes the operation path): no RESET then
    reset = scheme == "v2" or threshold > 0.5 / 3
    model = LOW_R.replace(reset=reset, reset_r3=1e6)
    array = ArrayOptions(Wiring(), write=scheme, group=group, threshold=threshold)
    kw = dict(seed=4, array=array, effects=DeviceEffects(stuck=0.1))
    fast = ArrayCrossbar(7, 9, model, **kw)
    slow = _OperationWrites(7, 9, model, **kw)
    counted = []
    apply_counted = fast._apply_counted
    fast._apply_counted = lambda *a: counted.append(apply_counted(*a)) or counted[-1]
    rng = np.random.default_rng(1)
    durations = []
    for voltage in (0.5, 0.5, -0.5 if reset else 0.5, 0.5):
        size = 25
        batch = PulseBatch(
            rng.integers(0, 7, size),
            rng.integers(0, 9, size),
            pulses=rng.integers(0, 4, size),
            voltage=voltage,
        )
        for xbar in (fast, slow):
            xbar.apply(batch)
        durations.append((fast.time, slow.time))
    taken = [c is not None for c in counted]
    assert all(taken)
    assert not np.allclose(fast.pulse_counts, ArrayCrossbar(7, 9, model, **kw).pulse_counts)
    np.testing.assert_allclose(fast.pulse_counts, slow.pulse_counts, rtol=1e-9)
    assert [a for a, _ in durations] == pytest.approx([b for _, b in durations])


def test_a_v3_batch_whose_third_voltage_acts_is_applied_operation_by_operation():
    model = LOW_R.replace(reset=True, reset_r3=1e6)
    array = ArrayOptions(Wiring(), write="v3", threshold=0.03)
    fast = ArrayCrossbar(4, 5, model, seed=1, array=array)
    slow = _OperationWrites(4, 5, model, seed=1, array=array)
    batch = PulseBatch([0, 2, 3], [1, 1, 4], pulses=[1, 2, 1], voltage=0.5)
    assert fast._apply_counted(batch, batch.voltage, np.array([1, 11, 19])) is None
    for xbar in (fast, slow):
        xbar.apply(batch)
    np.testing.assert_array_equal(fast.pulse_counts, slow.pulse_counts)


def test_a_sweep_run_on_an_emulator_url_draws_its_devices_from_the_run_seed():
    # the URL names no seed or sigma: the run's reach the emulator it opens, so the seeds of an
    # experiments/array.toml sweep draw their own devices, with the sweep's variability
    from memristor_hil.experiments.tasks import RunSpec, run_task

    def mse(seed, url):
        spec = RunSpec(
            task="x^2",
            rule="mPES",
            seed=seed,
            stimulus="sine",
            seconds=0.2,
            pulses="one",
            sigma=0.15,
            crossbar=url,
        )
        return run_task(spec)["mse"]

    url = "emulator://?read=v2&write=v2"
    assert mse(1, url) == mse(1, f"{url}&seed=1&sigma=0.15")
    assert mse(1, url) != mse(1, f"{url}&seed=0&sigma=0.15")


@pytest.mark.parametrize("sigma", [0.0, 0.2])
def test_float32_counted_sets_match_the_operations_one_by_one(sigma):
    # float32 states take float32 powers in the fused SET pass (as the ideal emulator's
    # float32 kernel): equal to the per-operation float64 arithmetic to float32 rounding
    model = LOW_R.replace(dtype="float32", variability=sigma)
    array = ArrayOptions(Wiring(), write="v2")
    fast = ArrayCrossbar(6, 8, model, seed=3, array=array)
    slow = _OperationWrites(6, 8, model, seed=3, array=array)
    rng = np.random.default_rng(2)
    for _ in range(5):
        batch = PulseBatch(
            rng.integers(0, 6, 20),
            rng.integers(0, 8, 20),
            pulses=rng.integers(0, 3, 20),
            voltage=0.4,
        )
        for xbar in (fast, slow):
            xbar.apply(batch)
    assert fast.pulse_counts.dtype == np.float32
    assert not np.allclose(fast.pulse_counts, ArrayCrossbar(6, 8, model, seed=3).pulse_counts)
    np.testing.assert_allclose(fast.pulse_counts, slow.pulse_counts, rtol=2e-5)


@pytest.mark.parametrize("query", ["read=grounded&write=v2", "read=v2&write=v3&group=cell"])
def test_line_sweeps_write_and_read_as_the_lu_does(monkeypatch, query):
    # the emulator's own Nb:STO-like devices (~1e8 ohm) on 5 ohm lines: weakly coupled, so
    # the array sweeps lines; the same batches through the sparse LU give the same states and
    # readings
    from functools import partial

    from memristor_hil.emulator.array import crossbar as module

    url = f"emulator://?rows=12&cols=20&seed=3&sigma=0.15&wire=5&threshold=0.1&{query}"
    swept = open_crossbar(url)
    monkeypatch.setattr(module, "NodalSystem", partial(NodalSystem, method="lu"))
    factored = open_crossbar(url)
    rng = np.random.default_rng(0)
    for _ in range(3):
        flat = rng.choice(240, 30, replace=False)
        batch = PulseBatch(flat // 20, flat % 20, pulses=rng.integers(1, 4, 30), voltage=1.0)
        readings = [x.apply(batch, read_back=True) for x in (swept, factored)]
        np.testing.assert_allclose(readings[0], readings[1], rtol=1e-9)
    np.testing.assert_allclose(swept.true_resistances(), factored.true_resistances(), rtol=1e-9)
    assert swept._system.line_solves > 0 and swept._system.factorisations == 0
    assert factored._system.factorisations > 0 and factored._system.line_solves == 0
    # and the wire did something: the far corner's devices saw less than the pulse voltage
    assert not np.allclose(
        swept.true_resistances(),
        open_crossbar(url.replace("wire=5&", "")).true_resistances(),
        rtol=1e-9,
    )
