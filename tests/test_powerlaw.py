"""The power-law device model against the facts of model-facts.md."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memristor_hil import PowerLaw, Variability

MODEL = PowerLaw()


def test_worked_numbers_from_the_papers():
    # model-facts.md: R = 1e8 <-> n ~ 300; 1000 pulses -> 8.07e7; 1e5 pulses -> 4.28e7.
    n = MODEL.pulse_number(1e8)
    assert n[0] == pytest.approx(300.3, abs=0.1)
    assert MODEL.resistance(MODEL.after_pulses(n, 1000))[0] == pytest.approx(8.07e7, rel=1e-3)
    assert MODEL.resistance(MODEL.after_pulses(n, 1e5))[0] == pytest.approx(4.28e7, rel=1e-3)


def test_voltage_dependent_exponent_matches_published_fit():
    # a(V) = -0.093 - 0.53 V
    for v in (0.05, 0.1, 0.5, 1.0):
        assert MODEL.exponent(v) == pytest.approx(-0.093 - 0.53 * v, abs=1e-12)


@given(
    n=st.floats(1.0, 1e7),
    k=st.integers(0, 200),
    voltage=st.sampled_from([0.1, 0.05, 0.3, 0.8]),
)
def test_k_pulses_equal_k_single_pulses(n, k, voltage):
    once = MODEL.after_pulses(n, k, voltage)
    stepwise = MODEL.after_pulses(n, 0, voltage)  # clipped into [R0, R1] as any SET is
    for _ in range(k):
        stepwise = MODEL.after_pulses(stepwise, 1, voltage)
    assert once == pytest.approx(stepwise, rel=1e-9)


@given(r=st.floats(250.0, 2.3e8))
def test_resistance_pulse_number_round_trip(r):
    assert MODEL.resistance(MODEL.pulse_number(r))[0] == pytest.approx(r, rel=1e-9)


@given(n=st.floats(1.01, 1e9))
def test_pulse_number_resistance_round_trip(n):
    assert MODEL.pulse_number(MODEL.resistance(n))[0] == pytest.approx(n, rel=1e-6)


@given(
    r_init=st.floats(1e3, 2.3e8),
    pulses=st.lists(st.integers(0, 10_000), min_size=1, max_size=20),
    voltage=st.floats(0.01, 1.0),
)
def test_set_pulses_never_raise_resistance_and_stay_in_bounds(r_init, pulses, voltage):
    n = MODEL.pulse_number(r_init)
    r_prev = MODEL.resistance(n)[0]
    for k in pulses:
        n = MODEL.after_pulses(n, k, voltage)
        r = MODEL.resistance(n)[0]
        assert r <= r_prev * (1 + 1e-12)
        assert MODEL.r0 <= r <= r_init * (1 + 1e-12)
        r_prev = r


def test_conductance_normalisation_bounds():
    assert MODEL.conductance(MODEL.r1) == pytest.approx(0.0, abs=1e-15)
    assert MODEL.conductance(MODEL.r0) == pytest.approx(1.0)
    r = np.geomspace(MODEL.r0, MODEL.r1, 50)
    g = MODEL.conductance(r)
    assert np.all(np.diff(g) < 0)  # lower resistance, higher conductance
    assert np.all((g >= 0) & (g <= 1 + 1e-12))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"a": 0.0}, "negative"),
        ({"a": 0.2}, "negative"),
        ({"r0": 0.0}, "positive"),
        ({"r0": -5.0}, "positive"),
        ({"r1": 100.0}, "greater than r0"),
        ({"r1": 200.0}, "greater than r0"),
        ({"variability": -0.1}, ">= 0"),
        ({"noise": -1.0}, ">= 0"),
        ({"r_init": 100.0}, "r_init"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_invalid_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PowerLaw(**kwargs)


def test_negative_sigma_in_variability_is_rejected():
    with pytest.raises(ValueError, match="sigma r1"):
        Variability(r1=-0.2)


def test_same_seed_same_devices_and_different_seed_different():
    model = PowerLaw(variability=0.15)
    p1, n1 = model.sample_devices(1000, 7)
    p2, n2 = model.sample_devices(1000, 7)
    p3, n3 = model.sample_devices(1000, 8)
    for x, y in ((p1.r0, p2.r0), (p1.r1, p2.r1), (p1.a, p2.a), (n1, n2)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(n1, n3)


def test_no_variability_shares_one_set_of_parameters():
    params, n = MODEL.sample_devices(500, 0)
    assert not params.per_device
    np.testing.assert_allclose(MODEL.resistance(n, params), MODEL.r_init, rtol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.15])
def test_sampled_variability_matches_requested_sigma(sigma):
    model = PowerLaw(variability=sigma)
    params, n = model.sample_devices(200_000, 3)
    assert params.per_device
    for values, nominal in ((params.r0, model.r0), (params.r1, model.r1), (params.a, model.a)):
        assert np.mean(values) == pytest.approx(nominal, rel=0.01)
        assert np.std(values) / abs(nominal) == pytest.approx(sigma, rel=0.03)
    r_init = model.resistance(n, params)
    assert np.mean(r_init) == pytest.approx(model.r_init, rel=0.01)
    assert np.std(r_init) / model.r_init == pytest.approx(sigma, rel=0.03)
    # Truncation keeps every device physical.
    assert np.all(params.a < 0) and np.all(params.r0 > 0) and np.all(params.r1 >= params.r0.max())
    assert np.all((r_init > params.r0) & (r_init <= params.r1 * (1 + 1e-9)))


def test_float32_on_request():
    model = PowerLaw(dtype="float32")
    params, n = model.sample_devices(10, 0)
    assert n.dtype == np.float32 and params.a.dtype == np.float32
    assert model.resistance(n, params).dtype == np.float32


def test_cycle_to_cycle_noise_spreads_as_sqrt_k():
    model = PowerLaw(noise=0.2)
    rng = np.random.default_rng(0)
    n0 = np.full(50_000, 300.0)
    k = 100
    n1 = model.after_pulses(n0, k, noise_draws=rng.standard_normal(n0.size))
    added = n1 - n0
    assert np.mean(added) == pytest.approx(k, rel=0.01)
    assert np.std(added) == pytest.approx(0.2 * np.sqrt(k), rel=0.03)
    assert np.all(added >= 0)


def test_reset_branch_raises_resistance_towards_r3_and_is_opt_in():
    with pytest.raises(ValueError, match="reset=True"):
        MODEL.after_pulses(300.0, 1, voltage=-0.5)
    model = PowerLaw(reset=True)
    n = model.pulse_number(5e7)
    r = model.resistance(n)[0]
    for _ in range(5):
        n = model.after_pulses(n, 10, voltage=-0.5)
        r_new = model.resistance(n)[0]
        assert r < r_new < model.reset_r3
        r = r_new
    # and SET still lowers it again
    assert model.resistance(model.after_pulses(n, 10, voltage=0.1))[0] < r


def test_parameter_dict_round_trip():
    model = PowerLaw(r0=150, variability=Variability(0.1, 0.2, 0.05, 0.1), dtype="float32")
    assert PowerLaw.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="unknown PowerLaw parameters"):
        PowerLaw.from_dict({"r00": 1})


@settings(max_examples=50)
@given(ratio_v=st.floats(0.02, 1.2), n=st.floats(1.01, 1e6), k=st.integers(0, 1000))
def test_pulse_at_other_voltage_keeps_resistance_continuous(ratio_v, n, k):
    # Zero pulses at any voltage leave the resistance where it was.
    assert MODEL.resistance(MODEL.after_pulses(n, 0, ratio_v))[0] == pytest.approx(
        MODEL.resistance(n)[0], rel=1e-9
    )
