"""arc1:// end to end: ArC1Crossbar -> a real pseudo-terminal -> ``memristor-hil emulate
--serial --dialect arc1`` in its own process, against the in-process emulator.

ArC ONE answers resistances as float32, so a float64 emulator's readings arrive rounded to
float32 (compared exactly after that rounding); a float32 emulator's arrive exactly."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli_bench import cli
from test_hil_mpes import URL as MPES_URL
from test_hil_mpes import in_process, mpes_run
from workloads import EMULATOR_URL, assert_bitwise_equal, workload

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.lab.recording import RecordingCrossbar
from memristor_hil.testing import EmulatorService

FAST = "reset_delay=0&write_delay=0&timeout=1"

#: Why the vendor-client tests skip outside CI: libarc1 pins numpy < 2 in its metadata, so
#: the [test] extra cannot carry it; .ci/run installs it with --no-deps (and fails without it).
LIBARC1_MISSING = "libarc1 is not installed: pip install --no-deps libarc1==0.1.0"


def arc1_url(service, rows, cols, extra=""):
    return f"arc1://{service.where}?rows={rows}&cols={cols}&{FAST}{extra}"


def pulsing_workload(steps, seed, rows, cols):
    """workloads.workload with every entry pulsed at least once: ArC ONE sends nothing
    for an entry without pulses, so the emulated instrument draws no noise for it."""
    for batch, read_back in workload(steps, seed, rows, cols):
        pulses = np.maximum(batch.pulses, 1)
        yield PulseBatch(batch.rows, batch.cols, pulses, batch.voltage, batch.width), read_back


def run(xbar, steps=40, seed=0):
    seen = []
    for batch, read_back in pulsing_workload(steps, seed, *xbar.shape):
        result = xbar.apply(batch, read_back=read_back)
        if read_back:
            seen.append(result)
    seen.append(xbar.read_all())
    return seen


def as_float32(results):
    return [r.astype(np.float32).astype(np.float64) for r in results]


@pytest.mark.parametrize(
    "faults",
    [
        [],
        # a masked read is paced as the vendor paces it (one reply per cell), so a lossy link
        # loses a value of a 70-cell read far more often than a whole reply: 0.5 % per reply
        ["--drop-reply", "0.005", "--latency", "0.001", "--fault-seed", "4"],
    ],
    ids=["clean", "dropped-replies"],
)
def test_a_seeded_workload_matches_the_in_process_emulator_bit_for_bit(faults):
    service = EmulatorService("--serial", "--dialect", "arc1", *faults, url=EMULATOR_URL)
    try:
        url = arc1_url(service, 12, 10, "&retries=5")
        with open_crossbar(url, record=False, timeout=0.3) as xbar:
            got = run(xbar)
            retries = xbar.stats["retries"]
        service.stop()  # prints which faults it injected
    finally:
        service.kill()
    with open_crossbar(EMULATOR_URL) as local:
        want = as_float32(run(local))
    assert_bitwise_equal(got, want)
    if faults:
        assert retries > 0 and "dropped replies" in service.stderr, service.stderr
    assert "dropped a command" not in service.stderr, service.stderr  # never out of step


def test_malformed_input_never_crashes_the_service_or_touches_a_device():
    service = EmulatorService("--serial", "--dialect", "arc1", url=EMULATOR_URL)
    try:
        fd = os.open(service.where, os.O_RDWR | os.O_NOCTTY)
        junk = [
            b"7\nfoo\n",  # unknown job
            b"x" * 5000 + b"\n",  # an overlong line
            b"0\n50\n99\n99\n2\n0\n1\n0.5\n",  # a configuration the array cannot take
            b"02\n99\n99\n04\n0.1\n1e-06\n",  # a pulse outside the array
            b"04\nnan\n1e-06\n",  # not a finite voltage
            b"2\n2\n32\n32\n99999999999\n",  # a masked read of too many cells
            bytes(range(256)),
        ]
        for chunk in junk:
            os.write(fd, chunk)
        os.close(fd)
        with open_crossbar(arc1_url(service, 12, 10), record=False) as xbar:
            got = xbar.read_all()
        assert service.proc.poll() is None
    finally:
        service.kill()
    with open_crossbar(EMULATOR_URL) as local:
        want = local.read_all()
    assert got.tobytes() == want.astype(np.float32).astype(np.float64).tobytes()
    assert "dropped a command" in service.stderr


def test_seeded_mpes_run_through_arc1_has_the_in_process_weights():
    url = f"{MPES_URL}&dtype=float32"  # float32 devices: ArC ONE's float32 replies are exact
    service = EmulatorService("--serial", "--dialect", "arc1", url=url)
    try:
        with open_crossbar(arc1_url(service, 10, 20), record=False) as xbar:
            # the published rule (one pulse per cell): the default policy sends counts of
            # several pulses, which this dialect may split, and the devices' cycle-to-cycle
            # noise is drawn per pulse train, so only one-pulse batches repeat bit for bit
            weights, devices = mpes_run(xbar, pulses="one")
            assert xbar.stats["writes"] > 20  # it really went through the instrument's link
    finally:
        service.kill()
    want_weights, want_devices = in_process(url, pulses="one")
    assert not np.array_equal(want_weights[0], want_weights[-1])  # it learned something
    assert weights.tobytes() == want_weights.tobytes()
    assert devices.tobytes() == want_devices.astype(np.float64).tobytes()


def test_info_characterize_fit_on_arc1_and_recording_by_default(tmp_path):
    url6x5 = "emulator://?rows=6&cols=5&seed=9&sigma=0.15"
    service = EmulatorService("--serial", "--dialect", "arc1", url=url6x5)
    try:
        url = arc1_url(service, 6, 5)
        code, out, err = cli("info", url, cwd=tmp_path)
        assert code == 0, err
        assert "ArC ONE,6x5,firmware 9.3" in out and "6 x 5 (30 cells)" in out
        code, out, err = cli(
            "characterize", url, "--cells", "0:4,1:5", "--pulses", "2000", "--reads", "20",
            "--record", "a.sqlite", cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        code, out, err = cli("fit", "a.sqlite", cwd=tmp_path)
        assert code == 0, err
        assert "fitted 16 of 16 devices" in out
        with open_crossbar(url) as xbar:  # a hardware scheme: recorded unless told otherwise
            assert isinstance(xbar, RecordingCrossbar)
            xbar.apply(PulseBatch([0], [0]), read_back=True)
            assert xbar.record.path.parent == tmp_path / "records"
    finally:
        service.kill()


def test_the_board_is_reset_at_interpreter_exit_when_never_closed(tmp_path):
    service = EmulatorService("--serial", "--dialect", "arc1", url=EMULATOR_URL)
    try:
        script = (
            "from memristor_hil import PulseBatch, open_crossbar\n"
            f"x = open_crossbar({arc1_url(service, 12, 10)!r}, record=False)\n"
            "x.apply(PulseBatch([0], [0]))\n"  # ... and exit without closing
        )
        before = service.stderr.count("outputs safe")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 10
        while service.stderr.count("outputs safe") <= before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # one reset at connect, one at exit
        assert service.stderr.count("outputs safe") == before + 2
    finally:
        service.kill()


def test_a_dialect_is_refused_on_the_wrong_transport(tmp_path):
    code, _, err = cli("emulate", "--tcp", "127.0.0.1:0", "--dialect", "arc1", cwd=tmp_path)
    assert code == 2 and "--dialect arc1 needs --serial" in err


def test_the_vendors_own_library_reads_the_emulated_arc1(monkeypatch):
    """libarc1 (Arc Instruments' ArC ONE library, GPL-3; a test-only client, installed with
    ``pip install --no-deps libarc1``: its metadata pins numpy < 2) connects to the emulated
    instrument, reads firmware 9.3, a read-all and a paced masked read, each the devices'."""
    if os.environ.get("CI"):  # .ci/run installs it: there a missing library is a failure
        import libarc1.arc as libarc1_arc
    else:
        libarc1_arc = pytest.importorskip("libarc1.arc", reason=LIBARC1_MISSING)
    import serial

    opened = serial.Serial

    def no_parity(*args, **kwargs):  # a pseudo-terminal has no line settings
        return opened(*args, **{**kwargs, "parity": serial.PARITY_NONE})

    monkeypatch.setattr(libarc1_arc.serial, "Serial", no_parity)
    url = "emulator://?rows=4&cols=4&seed=1&sigma_r_init=0.5"
    service = EmulatorService("--serial", "--dialect", "arc1", url=url)
    try:
        arc = libarc1_arc.ArC1(service.where, config=libarc1_arc.ArC1Conf(words=4, bits=4))
        assert arc.firmware_version == (9, 3)
        every = [x for x in arc.read_all(4, 4) if isinstance(x, tuple)]
        masked = [x for x in arc.read_masked([(2, 3), (4, 1)]) if isinstance(x, tuple)]
        arc.close()
    finally:
        service.kill()
    with open_crossbar(url) as local:
        devices = local.read_all().astype(np.float32)
    assert [(w, b) for w, b, _ in every] == [(w, b) for w in range(1, 5) for b in range(1, 5)]
    assert np.array_equal([x for _, _, x in every], devices.ravel())
    assert [x for _, _, x in masked] == [devices[1, 2], devices[3, 0]]


def test_the_vendors_own_library_runs_its_modules_and_reads_the_right_devices(monkeypatch):
    """libarc1 runs each of its module jobs (Endurance, CurveTracer over 2 cycles, FormFinder,
    SwitchSeeker fast and slow, ConvergeToState, ChronoAmperometry, MultiBias read and write)
    against the emulated instrument, which runs none of them: each ends with no data, nothing
    is left half-read, and a masked read afterwards answers the devices asked for, unchanged."""
    if os.environ.get("CI"):  # .ci/run installs it: there a missing library is a failure
        import libarc1.arc as libarc1_arc
    else:
        libarc1_arc = pytest.importorskip("libarc1.arc", reason=LIBARC1_MISSING)
    import serial
    from libarc1.modules import (
        chronoamperometry,
        convergetostate,
        curvetracer,
        endurance,
        formfinder,
        multibias,
        switchseeker,
    )

    opened = serial.Serial
    monkeypatch.setattr(
        libarc1_arc.serial,
        "Serial",
        lambda *a, **k: opened(*a, **{**k, "parity": serial.PARITY_NONE, "timeout": 2}),
    )
    ss = switchseeker.SwitchSeeker
    mb = multibias.MultiBias
    runs = [
        (endurance.Endurance, endurance.Endurance.default_config),
        (curvetracer.CurveTracer, {**curvetracer.CurveTracer.default_config, "cycles": 2}),
        (formfinder.FormFinder, formfinder.FormFinder.default_config),
        (ss, {**ss.default_config, "algorithm": switchseeker.SS2_ALGO.FAST}),
        (ss, {**ss.default_config, "algorithm": switchseeker.SS2_ALGO.SLOW}),
        (convergetostate.ConvergeToState, convergetostate.ConvergeToState.default_config),
        (chronoamperometry.ChronoAmperometry, chronoamperometry.ChronoAmperometry.default_config),
    ]
    url = "emulator://?rows=4&cols=4&seed=1&sigma_r_init=0.5"
    service = EmulatorService("--serial", "--dialect", "arc1", url=url)
    try:
        arc = libarc1_arc.ArC1(service.where, config=libarc1_arc.ArC1Conf(words=4, bits=4))
        for module, conf in runs:
            data = []
            module(arc, sink=data.append)([(2, 3), (4, 1)], conf)  # in this thread
            assert data == [], module.name
        mb_read, mb_write = [], []
        mb(arc, sink=mb_read.append)(None, {**mb.default_config, "action": multibias.MB_RW.READ})
        mb(arc, sink=mb_write.append)(None, {**mb.default_config, "action": multibias.MB_RW.WRITE})
        masked = [x for x in arc.read_masked([(2, 3), (4, 1)]) if isinstance(x, tuple)]
        arc.close()
    finally:
        service.kill()
    with open_crossbar(url) as local:
        devices = local.read_all().astype(np.float32)
    assert len(mb_read) == 1 and np.isnan(mb_read[0][1])  # (bitline, current): no data
    assert len(mb_write) == 8 and all(np.isnan(x[2]) for x in mb_write)  # 2 per word
    assert [x for _, _, x in masked] == [devices[1, 2], devices[3, 0]]
