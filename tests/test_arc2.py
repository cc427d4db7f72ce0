"""arc2:// against EmulatedArC2, the stand-in for ``pyarc2.Instrument``: the stand-in's interface
checked against the real library, call sequences pinned in tables, failures, and learning."""

import gc
import inspect
import json

import numpy as np
import pyarc2
import pytest
from memristor_hil.drivers.arc2 import (
    COL_CHANNELS,
    ROW_CHANNELS,
    ArC2Crossbar,
    ChannelLayout,
    load_layout,
    open_arc2,
)
from memristor_hil.emulator.arc2 import EmulatedArC2
from test_hil_mpes import URL as MPES_URL
from test_hil_mpes import in_process, mpes_run

from memristor_hil import (
    AddressError,
    CrossbarTimeoutError,
    DeviceError,
    ProtocolError,
    PulseBatch,
    SafetyLimitError,
    cli,
    open_crossbar,
)
from memristor_hil.lab.recording import RecordingCrossbar

URL = "emulator://?rows=32&cols=32&seed=3&sigma=0.15&noise=0.05"
V = 0.2  # the driver's default read voltage


def connect(url=URL, cls=EmulatedArC2, layout="std32", **options):
    """An ArC2Crossbar on a stand-in over a fresh emulated crossbar; (crossbar, instrument)."""
    lay = load_layout(layout)
    inst = cls(open_crossbar(url), lay.rows, lay.cols)
    return ArC2Crossbar(inst, lay, **options), inst


def exercise(xbar):
    """Everything the driver does: few-row and many-row read-back, reads, read_all, close."""
    xbar.apply(PulseBatch([0, 0, 1], [0, 5, 2], pulses=[2, 1, 1]), read_back=True)
    xbar.apply(PulseBatch(np.arange(12), np.arange(12)), read_back=True)
    xbar.read([3], [4])
    xbar.read_all()
    xbar.close()


# ---------------------------------------------------------------- the stand-in is honest
def test_every_method_the_driver_calls_exists_in_pyarc2_with_the_same_signature():
    xbar, inst = connect()
    exercise(xbar)
    called = {name for name, _ in inst.calls}
    assert {"pulse_slice_masked", "execute", "busy", "wait", "ground_all"} <= called
    assert {"read_slice_masked", "read_all"} <= called
    for name in sorted(called):
        real = getattr(pyarc2.Instrument, name, None)
        assert real is not None, f"pyarc2.Instrument has no {name}"
        want = [p.name for p in inspect.signature(real).parameters.values()][1:]
        ours = [p.name for p in inspect.signature(getattr(EmulatedArC2, name)).parameters.values()]
        assert ours[1:] == want, f"{name}: stand-in takes {ours[1:]}, pyarc2 takes {want}"
    # what open_arc2 uses to find and connect an instrument
    assert list(inspect.signature(pyarc2.Instrument.__init__).parameters)[1:3] == [
        "port",
        "firmware",
    ]
    assert pyarc2.find_ids() == []  # no hardware here
    assert hasattr(pyarc2.BiasOrder, "Rows")


# ---------------------------------------------------------------- call sequences
def test_call_sequence_of_a_batch_with_read_back_and_of_close():
    xbar, inst = connect()
    xbar.apply(PulseBatch([1, 0, 0], [2, 5, 0], pulses=[1, 1, 2]), read_back=True)
    xbar.close()
    assert inst.calls == [
        # one buffered program: row 0 twice (cell (0,0) needs 2 pulses), row 1 once
        ("pulse_slice_masked", (0, 0.1, 1000, (16, 21))),
        ("pulse_slice_masked", (0, 0.1, 1000, (16,))),
        ("pulse_slice_masked", (1, 0.1, 1000, (18,))),
        ("execute", ()),
        ("busy", ()),
        ("wait", ()),
        # read-back: one masked slice per touched row, at the read voltage
        ("read_slice_masked", (0, (16, 21), V)),
        ("read_slice_masked", (1, (18,), V)),
        # close: every channel to ground
        ("ground_all", ()),
        ("execute", ()),
    ]
    assert inst.grounded


def test_many_rows_are_read_back_with_one_read_all_and_big_batches_split_into_programs():
    xbar, inst = connect(max_instructions=5)
    xbar.apply(PulseBatch(np.arange(12), np.arange(12)), read_back=True)
    names = [name for name, _ in inst.calls]
    assert names.count("pulse_slice_masked") == 12
    assert names.count("execute") == 3  # 5 + 5 + 2 instructions, still one apply
    assert names.count("read_all") == 1 and "read_slice_masked" not in names
    assert names[-1] == "read_all" and inst.calls[-1][1][0] == V


def test_outputs_are_grounded_when_a_crossbar_is_dropped_unclosed():
    xbar, inst = connect()
    xbar.apply(PulseBatch([0], [0]))
    del xbar
    gc.collect()
    assert inst.calls[-2:] == [("ground_all", ()), ("execute", ())] and inst.grounded


def test_a_program_that_never_finishes_times_out_and_grounds_the_outputs():
    class Stuck(EmulatedArC2):
        def busy(self):
            self._log("busy")
            return True

    xbar, inst = connect(cls=Stuck, timeout=0.05)
    with pytest.raises(CrossbarTimeoutError, match="did not finish"):
        xbar.apply(PulseBatch([0], [0]))
    assert inst.calls[-2:] == [("ground_all", ()), ("execute", ())]


def test_a_garbled_reply_raises_a_protocol_error():
    class Garbled(EmulatedArC2):
        def read_slice_masked(self, chan, mask, vread):
            out = super().read_slice_masked(chan, mask, vread)
            out[:] = np.nan
            return out

        def read_all(self, vread, order):
            return super().read_all(vread, order)[:16]

    xbar, inst = connect(cls=Garbled)
    with pytest.raises(ProtocolError, match="garbled"):
        xbar.read([0], [0])
    with pytest.raises(ProtocolError, match="shape"):
        xbar.read_all()
    with pytest.raises(ProtocolError):
        xbar.apply(PulseBatch([0], [0]), read_back=True)
    assert inst.calls[-2:] == [("ground_all", ()), ("execute", ())]


def test_an_instrument_error_raises_a_device_error_and_grounds_the_outputs():
    xbar, inst = connect()
    inst.fail["pulse_slice_masked"] = RuntimeError("ArC2Error: FPGA write failed")
    with pytest.raises(DeviceError, match="FPGA write failed"):
        xbar.apply(PulseBatch([0], [0]))
    assert inst.calls[-2:] == [("ground_all", ()), ("execute", ())]


# ---------------------------------------------------------------- refused before any call
def test_unwired_cells_and_unsafe_pulses_are_refused_before_any_call(tmp_path):
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"rows": [0, 1, None], "cols": [16, None, 18]}))
    xbar, inst = connect(layout=str(path))
    assert xbar.shape == (3, 3)
    with pytest.raises(AddressError, match=r"cell \(0, 1\) is not wired"):
        xbar.apply(PulseBatch([0], [1]))
    with pytest.raises(AddressError, match=r"cell \(2, 0\) is not wired"):
        xbar.read([2], [0])
    with pytest.raises(AddressError, match="outside"):
        xbar.apply(PulseBatch([3], [0]))
    with pytest.raises(SafetyLimitError):
        xbar.apply(PulseBatch([0], [0], voltage=5.0))
    assert inst.calls == []
    block = xbar.read_all()
    assert np.isnan(block[2]).all() and np.isnan(block[:, 1]).all()
    assert np.isfinite(block[:2][:, [0, 2]]).all()


def test_bad_layouts_and_options_are_refused():
    with pytest.raises(ValueError, match="cannot be rows"):
        ChannelLayout((16,), (17,))
    with pytest.raises(ValueError, match="used twice"):
        ChannelLayout((0, 0), (16,))
    with pytest.raises(ValueError, match="neither a built-in"):
        load_layout("no-such-board")
    with pytest.raises(SafetyLimitError, match="outside what the instrument"):
        open_arc2("arc2://?v_max=20", instrument=object())
    with pytest.raises(ValueError, match="unknown arc2:// options"):
        open_arc2("arc2://?colour=red", instrument=object())
    with pytest.raises(Exception, match="no ArC TWO found"):
        open_arc2("arc2://?firmware=fw.bin")  # pyarc2 is installed; no instrument is


# ---------------------------------------------------------------- same devices as in process
def test_a_seeded_workload_changes_the_devices_exactly_as_in_process():
    """Batches of distinct cells in row-major order (what mPES sends), with device noise."""
    xbar, inst = connect()
    rng = np.random.default_rng(0)
    with open_crossbar(URL) as local:
        for step in range(30):
            flat = np.flatnonzero(rng.random(32 * 32) < 0.1)
            pulses = rng.integers(1, 4, len(flat)) if step % 2 else 1
            batch = PulseBatch.from_flat(flat, 32, pulses, voltage=0.1 + 0.05 * (step % 3))
            got = xbar.apply(batch, read_back=True)
            want = local.apply(batch, read_back=True)
            # the instrument measures float32 currents at V; the driver divides V by them
            measured = (V / want).astype(np.float32).astype(np.float64)
            assert got.tobytes() == (V / measured).tobytes()
        assert np.array_equal(inst.xbar.pulse_counts, local.pulse_counts)


def test_seeded_mpes_run_through_arc2_ends_with_the_in_process_weights():
    rows, cols = 10, 20
    layout = ChannelLayout(ROW_CHANNELS[:rows], COL_CHANNELS[:cols], "10x20")
    xbar, inst = connect(MPES_URL, layout=layout)
    # the published rule: its pulses do not depend on the read-back, which ArC TWO measures
    # as float32 currents (the default policy's counts follow the read-back, so they may not
    # repeat the in-process run's exactly)
    weights, devices = mpes_run(xbar, pulses="one")
    assert xbar.stats["programs"] > 20
    want_weights, want_devices = in_process(MPES_URL, pulses="one")
    assert not np.array_equal(want_weights[0], want_weights[-1])  # it learned something
    with open_crossbar(MPES_URL) as local:
        mpes_run(local, pulses="one")
        assert np.array_equal(inst.xbar.pulse_counts, local.pulse_counts)  # the same pulses
    # the weights differ only by ArC TWO's float32 current readings
    scale = np.abs(want_weights).max()
    np.testing.assert_allclose(weights, want_weights, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(devices, want_devices, rtol=1e-6)


# ---------------------------------------------------------------- the URL and the CLI
@pytest.fixture
def fake_pyarc2(monkeypatch):
    """pyarc2 finds one instrument, #3: an emulated ArC TWO on a 32x32 emulated crossbar."""
    made = []

    def instrument(port, firmware):
        assert port == 3 and firmware == "fw.bin"
        made.append(EmulatedArC2(open_crossbar("emulator://?rows=32&cols=32&seed=9&sigma=0.15")))
        return made[-1]

    monkeypatch.setattr(pyarc2, "find_ids", lambda: [3])
    monkeypatch.setattr(pyarc2, "Instrument", instrument)
    return made


def test_info_characterize_fit_on_arc2_and_recording_by_default(fake_pyarc2, tmp_path, capsys):
    url = "arc2://?firmware=fw.bin"
    assert cli.main(["info", url]) == 0
    out = capsys.readouterr().out
    assert "ArC TWO #3,layout std32" in out and "32 x 32 (1024 cells)" in out
    record = tmp_path / "c.sqlite"
    args = ["characterize", url, "--cells", "0:4,0:4", "--pulses", "2000", "--reads", "20"]
    assert cli.main([*args, "--record", str(record)]) == 0
    assert cli.main(["fit", str(record)]) == 0
    assert "fitted 16 of 16 devices" in capsys.readouterr().out
    assert all(inst.grounded for inst in fake_pyarc2)  # every session ended grounded
    with open_crossbar("arc2://3?firmware=fw.bin") as xbar:
        assert isinstance(xbar, RecordingCrossbar)
        assert xbar.record.path.parent == tmp_path / "records"
