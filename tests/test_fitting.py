"""Characterize an emulator with known devices, fit the record, recover the devices."""

import json

import numpy as np
import pytest
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.url import model_from_options

from memristor_hil import PowerLaw, PulseBatch, open_crossbar
from memristor_hil.lab.characterize import characterize, parse_cells, read_schedule
from memristor_hil.lab.fitting import fit_device, fit_devices, fit_record
from memristor_hil.lab.read_effects import read_effects
from memristor_hil.lab.record import Record

SIGMA = 0.15
# 400 devices: the sample spread of 400 draws is within about 3.5 % (one sd) of the sigma
# they were drawn with. 1e6 pulses: devices with a small |a| start near n0 = 5e5, and R0 is only
# separable from the power law when the train runs well past n0 (see fitting.py's notes).
URL = f"emulator://?rows=20&cols=20&seed=7&sigma={SIGMA}"
PULSES = 1_000_000


@pytest.fixture(scope="module")
def characterized(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "char.sqlite"
    with open_crossbar(URL, record=path) as xbar:
        rows, cols = parse_cells("all", xbar.shape)
        result = characterize(xbar, rows, cols, PULSES)
        params = xbar.inner.params
    with Record.open(path) as record:
        fit = fit_record(record)
    return path, params, result, fit


def test_characterize_reads_on_schedule_and_records_it(characterized):
    path, _, result, _ = characterized
    schedule = read_schedule(PULSES)
    np.testing.assert_array_equal(result.pulses, np.r_[0, schedule])
    assert result.resistance.shape == (schedule.size + 1, 400)
    assert np.all(np.diff(result.resistance, axis=0) < 0)  # every SET pulse lowers R
    with Record.open(path) as record:
        readings = record.readings()
        assert readings.cells.size == result.resistance.size + result.repeat_read.size
        pulses, r = record.history(3, 4)  # the repeated read of the untouched device second
        np.testing.assert_array_equal(pulses, np.r_[0, result.pulses])
        np.testing.assert_array_equal(r[0], result.resistance[0, 3 * 20 + 4])
        np.testing.assert_array_equal(r[1], result.repeat_read[3 * 20 + 4])
        np.testing.assert_array_equal(r[2:], result.resistance[1:, 3 * 20 + 4])
        # Batches never exceed the safety limit on pulses per cell.
        assert max(int(e.pulses.max()) for e in record.batches()) <= record.limits.max_pulses


def test_fit_recovers_every_device_within_2_percent(characterized):
    _, params, _, fit = characterized
    assert fit.ok.all() and fit.r0_fixed is None and not fit.notes
    np.testing.assert_array_equal(fit.cells, np.arange(400))
    for name in ("r0", "r1", "a"):
        np.testing.assert_allclose(fit.values[name], getattr(params, name), rtol=0.02)
    # In fact far better, on exact readings:
    np.testing.assert_allclose(fit.values["r1"], params.r1, rtol=1e-6)
    np.testing.assert_allclose(fit.values["a"], params.a, rtol=1e-6)


def test_fit_recovers_the_device_to_device_sigmas(characterized):
    _, params, result, fit = characterized
    summary = fit.summary()
    truth = {name: getattr(params, name) for name in ("r0", "r1", "a")}
    truth["r_init"] = result.resistance[0]
    for name, values in truth.items():
        actual_spread = np.std(values, ddof=1) / abs(np.median(values))
        assert summary[name]["sigma"] == pytest.approx(actual_spread, rel=0.01), name
        assert summary[name]["sigma"] == pytest.approx(SIGMA, rel=0.10), name
        assert summary[name]["median"] == pytest.approx(np.median(values), rel=0.01), name


def test_fitted_parameter_file_makes_an_emulator_like_the_devices(characterized, tmp_path):
    _, params, result, fit = characterized
    path = fit.write_json(tmp_path / "fitted.json")
    data = json.loads(path.read_text())
    assert set(data) == {"model", "fit", "array"} and data["fit"]["fitted"] == 400
    assert data["array"]["read_noise"] == 0 and data["array"]["stuck"] == 0  # ideal devices
    model = model_from_options({"params": str(path)})
    assert model == fit.model()
    assert model.v_ref == 0.1
    assert model.variability.r1 == pytest.approx(SIGMA, rel=0.1)
    # An emulator drawn from the fitted model spreads like the measured devices.
    with open_crossbar(f"emulator://?rows=40&cols=40&seed=1&params={path}") as twin:
        assert twin.model == model
        r = twin.read_all()
        assert np.median(r) == pytest.approx(np.median(result.resistance[0]), rel=0.05)
        assert np.std(r) / np.mean(r) == pytest.approx(SIGMA, rel=0.2)
        spread = np.std(twin.params.a) / abs(np.mean(twin.params.a))
        assert spread == pytest.approx(np.std(params.a) / abs(np.mean(params.a)), rel=0.2)
    png = fit.write_plot(tmp_path / "fit.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_r0_is_fixed_and_said_so_when_noisy_readings_cannot_determine_it():
    # Read noise of 1e-4 (relative): R0 (200 ohm under 1e8 ohm) is then lost, R1 and a are not.
    model = PowerLaw(variability=SIGMA)
    xbar = EmulatedCrossbar(4, 4, model, seed=11)
    rows, cols = parse_cells("all", xbar.shape)
    result = characterize(xbar, rows, cols, 100_000)
    rng = np.random.default_rng(0)
    noisy = result.resistance * (1 + 1e-4 * rng.standard_normal(result.resistance.shape))
    data = {c: (result.pulses, noisy[:, c]) for c in range(16)}
    free = fit_devices(data, xbar.shape, 0.1, r0="free")
    assert np.median(free.values["se_r0"]) > 200  # the fit knows it does not know R0
    fit = fit_devices(data, xbar.shape, 0.1)  # "auto"
    assert fit.r0_fixed == 200.0 and "R0 is not determined" in fit.notes[0]
    np.testing.assert_array_equal(fit.values["r0"], 200.0)
    np.testing.assert_allclose(fit.values["r1"], xbar.params.r1, rtol=0.01)
    np.testing.assert_allclose(fit.values["a"], xbar.params.a, rtol=0.01)
    assert fit.model().variability.r0 == 0.0


def test_fit_refuses_what_it_cannot_fit():
    assert fit_device(np.arange(3), np.array([3e8, 2e8, 1e8]))["ok"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        fit_device(np.arange(8), np.ones(7))
    with pytest.raises(ValueError, match="'auto', 'free'"):
        fit_devices({}, (1, 1), 0.1, r0="maybe")


def test_fit_record_refuses_mixed_voltages(tmp_path):
    path = tmp_path / "mixed.sqlite"
    with open_crossbar("emulator://?rows=2&cols=2", record=path) as xbar:
        characterize(xbar, [0], [0], 100, reads=10, voltage=0.1)
        characterize(xbar, [0], [0], 100, reads=10, voltage=0.2)
    with Record.open(path) as record, pytest.raises(ValueError, match="mixes pulse voltages"):
        fit_record(record)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", [(r, c) for r in range(3) for c in range(4)]),
        ("0:2,1:3", [(0, 1), (0, 2), (1, 1), (1, 2)]),
        ("2,3; 0,0 ;2,3", [(0, 0), (2, 3)]),
        (":,0", [(0, 0), (1, 0), (2, 0)]),
        ("1:,2:", [(1, 2), (1, 3), (2, 2), (2, 3)]),
    ],
)
def test_parse_cells(spec, expected):
    rows, cols = parse_cells(spec, (3, 4))
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("3,0", "outside the crossbar"), ("0:5,0", "outside"), ("1", "ROWS,COLS"),
     ("a,b", "number or START:STOP"), ("", "no cells"), ("2:1,0", "outside")],
)  # fmt: skip
def test_parse_cells_errors_say_what_is_accepted(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_cells(spec, (3, 4))


def test_read_schedule():
    np.testing.assert_array_equal(read_schedule(10, read_every=4), [4, 8, 10])
    log = read_schedule(100_000, reads=50)
    assert log[0] == 1 and log[-1] == 100_000 and np.all(np.diff(log) > 0)
    with pytest.raises(ValueError, match="--read-every"):
        read_schedule(10, read_every=0)
    with pytest.raises(ValueError, match="--pulses"):
        read_schedule(0)


def test_fit_measures_read_noise_and_finds_the_stuck_devices_of_an_emulated_array(tmp_path):
    # issue 26 item 5: "memristor-hil fit of a characterisation learns what it can" of the
    # array options: read noise from characterize's two reads of the untouched devices, and
    # the devices no pulse moved
    url = "emulator://?rows=16&cols=16&seed=1&sigma=0.15&read_noise=0.01&stuck=0.1"
    with open_crossbar(url, record=tmp_path / "c.sqlite") as xbar:
        characterize(xbar, *parse_cells("all", xbar.shape), 1_000_000)  # the walkthrough's
    with open_crossbar(url) as twin:  # the same devices, unrecorded: which ones are stuck
        before = twin.true_resistances()
        twin.apply(PulseBatch.from_flat(np.arange(256), 16, pulses=1000))
        truly_stuck = np.flatnonzero(twin.true_resistances() == before)
    assert truly_stuck.size == round(0.1 * 256)
    with Record.open(tmp_path / "c.sqlite") as record:
        result = fit_record(record)
    effects = result.effects
    assert effects.pairs == 256
    assert 0.0085 < effects.read_noise < 0.0115  # 256 pairs: about 4% standard error
    np.testing.assert_array_equal(effects.stuck, truly_stuck)
    assert not result.ok[np.isin(result.cells, truly_stuck)].any()  # left out of the fit
    assert effects.url_options() == f"read_noise={effects.read_noise:.3g}&stuck={26 / 256:.3g}"
    assert result.to_json()["array"]["stuck"] == truly_stuck.size / 256


def test_fit_of_ideal_devices_reports_no_read_noise_and_no_stuck_device():
    data = {
        cell: (np.array([0, 0, 10, 100]), np.array([1e8, 1e8, 9e7, 8e7]) * (1 + 0.01 * cell))
        for cell in range(20)
    }
    effects = read_effects(data)
    assert effects == (0.0, 20, effects.stuck, 20) and effects.stuck.size == 0
    assert effects.url_options() == ""
    # a record without repeated reads (older characterize) cannot tell read noise
    assert read_effects({k: (p[1:], r[1:]) for k, (p, r) in data.items()}).read_noise is None
