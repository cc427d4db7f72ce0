"""arc2:// against EmulatedArC2, the stand-in for ``pyarc2.Instrument``: the stand-in's interface
checked against the real library, call sequences pinned in tables, failures, and learning."""

import gc
import inspect
import json

import numpy as np
import pyarc2
import pytest
from memristor_hil.drivers.arc2 import (
    STANDARD32,
    ArC2Crossbar,
    ChannelLayout,
    load_layout,
    open_arc2,
)
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.arc2 import ALL_BITS, ALL_WORDS, EmulatedArC2
from test_hil_mpes import URL as MPES_URL
from test_hil_mpes import in_process, mpes_run

from memristor_hil import (
    AddressError,
    CrossbarTimeoutError,
    DeviceError,
    ProtocolError,
    PulseBatch,
    SafetyLimitError,
    SafetyLimits,
    cli,
    open_crossbar,
)
from memristor_hil.lab.recording import RecordingCrossbar

URL = "emulator://?rows=32&cols=32&seed=3&sigma=0.15&noise=0.05"
V = 0.2  # the driver's default read voltage


def connect(url=URL, cls=EmulatedArC2, layout="standard32", **options):
    """An ArC2Crossbar on a stand-in over a fresh emulated crossbar; (crossbar, instrument),
    the instrument's call log cleared of the set-up at connect."""
    lay = load_layout(layout)
    inst = cls(open_crossbar(url), lay.rows, lay.cols)
    xbar = ArC2Crossbar(inst, lay, **options)
    inst.calls.clear()
    return xbar, inst


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
    called |= {"finalise_operation", "set_logic"}  # at connect
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
    assert hasattr(pyarc2.BiasOrder, "Cols") and hasattr(pyarc2.IdleMode, "SoftGnd")


# ---------------------------------------------------------------- call sequences
def test_call_sequence_of_a_batch_with_read_back_and_of_close():
    xbar, inst = connect()
    xbar.apply(PulseBatch([1, 0, 0], [2, 5, 0], pulses=[1, 1, 2]), read_back=True)
    xbar.close()
    # standard32: bitlines (rows) 15, 32, ...; wordlines (columns) 16, 63, 17, 62, 18, 61, ...
    # arc2control grounds after every pulse operation: widgets/app.py pulseSelectedSlices
    # (arc2control 52ba1f2, lines 678-680: pulse_slice_masked(...).ground_all().execute())
    assert inst.calls == [
        # one buffered program: row 0 twice (cell (0,0) needs 2 pulses), row 1 once
        ("pulse_slice_masked", (15, 0.1, 1000, (16, 61))),
        ("ground_all", ()),
        ("pulse_slice_masked", (15, 0.1, 1000, (16,))),
        ("ground_all", ()),
        ("pulse_slice_masked", (32, 0.1, 1000, (17,))),
        ("ground_all", ()),
        ("execute", ()),
        ("busy", ()),
        ("wait", ()),
        # read-back: one masked slice per touched row, at the read voltage
        ("read_slice_masked", (15, (16, 61), V)),
        ("read_slice_masked", (32, (17,), V)),
        # close: every channel to ground
        ("ground_all", ()),
        ("execute", ()),
    ]
    assert inst.grounded


def test_many_rows_are_read_back_with_one_read_all_and_big_batches_split_into_programs():
    xbar, inst = connect(max_instructions=5)
    xbar.apply(PulseBatch(np.arange(12), np.arange(12)), read_back=True)
    names = [name for name, _ in inst.calls]
    assert names.count("pulse_slice_masked") == 12 and names.count("ground_all") == 12
    assert names.count("execute") == 3  # 5 + 5 + 2 instructions, still one apply
    assert names.count("read_all") == 1 and "read_slice_masked" not in names
    assert names[-1] == "read_all" and inst.calls[-1][1] == (V, pyarc2.BiasOrder.Cols)


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


# ---------------------------------------------------------------- the vendor code as oracle
# libarc2 72f8c9f src/instrument.rs; pyarc2 b06691d src/lib.rs, pyarc2/__init__.py;
# arc2control 52ba1f2 arc2control/{mapper.py,mappings/*.toml,widgets/app.py,
# widgets/arc2connection_widget.py}.
ASYMMETRIC = "emulator://?rows=32&cols=32&seed=11&sigma=0.4"


def test_the_stand_in_lays_out_read_all_as_libarc2_does():
    """instrument.rs 1713-1728: read_all biases ALL_WORDS (16..31, 48..63) for
    BiasOrder::Rows and ALL_BITS (0..15, 32..47) for Columns, one read_slice (32 values of
    the other group, ascending) each; lib.rs 1034-1038 reshapes them row-major to (32, 32).
    Reads drive the low channel to -vread (instrument.rs 1621, 1631)."""
    inst = EmulatedArC2(open_crossbar(ASYMMETRIC))  # rows on ALL_BITS, columns on ALL_WORDS
    devices = inst.xbar.read_all()
    cols = np.asarray(inst.read_all(V, pyarc2.BiasOrder.Cols), dtype=np.float64)
    rows = np.asarray(inst.read_all(V, pyarc2.BiasOrder.Rows), dtype=np.float64)
    np.testing.assert_allclose(np.abs(V / cols), devices, rtol=1e-6)  # [bit, word]
    np.testing.assert_allclose(np.abs(V / rows), devices.T, rtol=1e-6)  # [word, bit]
    assert not np.allclose(devices, devices.T, rtol=1e-3)  # the test can tell them apart
    # a slice with a bitline low answers for the wordlines in channel order
    got = inst.read_slice_masked(ALL_BITS[3], [ALL_WORDS[7], ALL_WORDS[20]], V)
    assert np.isnan(got).sum() == 30
    np.testing.assert_allclose(np.abs(V / got[[7, 20]]), devices[3, [7, 20]], rtol=1e-6)
    with pytest.raises(TypeError, match="BiasOrder"):
        inst.read_all(V, "Rows, please")


def test_read_all_and_read_back_return_each_cells_own_device_at_either_polarity():
    """The driver reads each cell's own device on every path: read_all, many-row read-back,
    slice read-back; |vread / I| also for a negative vread (arc2control widgets/app.py 489,
    543, 962: np.abs(volt / curr))."""
    for vread in (V, -V):
        xbar, inst = connect(ASYMMETRIC, vread=vread)
        devices = inst.xbar.read_all()
        np.testing.assert_allclose(xbar.read_all(), devices, rtol=1e-6)
        rows, cols = np.divmod(np.arange(0, 1024, 7), 32)  # 32 rows: read back via read_all
        got = xbar.apply(PulseBatch(rows, cols, pulses=0), read_back=True)
        np.testing.assert_allclose(got, devices[rows, cols], rtol=1e-6)
        got = xbar.read([2, 2, 30], [31, 0, 5])  # three rows: slice reads
        np.testing.assert_allclose(got, devices[[2, 2, 30], [31, 0, 5]], rtol=1e-6)
        assert [n for n, _ in inst.calls].count("read_all") == 2
        volts = [a[0] if n == "read_all" else a[2] for n, a in inst.calls if n.startswith("read")]
        assert len(volts) == 4 and set(volts) == {vread}


def vendor_mapping(words, bits, extra="", size=None):
    """A mapping file in arc2control's format (arc2control/mapper.py from_toml, 177-214);
    ``size``: the (words, bits) its config uses, default every channel listed."""
    nwords, nbits = size or (len(words), len(bits))
    return (
        f'[config]\nname = "board"\nwords = {nwords}\nbits = {nbits}\n{extra}\n'
        '[ioconfs]\n[ioconfs.internal]\nname = "Socket"\nios = 0b0\n'
        'dir = ["out", "out", "out", "out"]\n'
        '[ioconfs.header]\nname = "Header"\nios = 0b1\ndir = ["out", "out", "out", "out"]\n'
        f"[mapping]\nwords = {list(words)}\nbits = {list(bits)}\n"
    )


# arc2control mappings/standard32.toml, lines 22-35 (the [32NNA68] PLCC 32x32 board)
VENDOR_WORDS = [16, 63, 17, 62, 18, 61, 19, 60, 20, 59, 21, 58, 22, 57, 23, 56,
                24, 55, 25, 54, 26, 53, 27, 52, 28, 51, 29, 50, 30, 49, 31, 48]  # fmt: skip
VENDOR_BITS = [15, 32, 14, 33, 13, 34, 12, 35, 11, 36, 10, 37, 9, 38, 8, 39,
               7, 40, 6, 41, 5, 42, 4, 43, 3, 44, 2, 45, 1, 46, 0, 47]  # fmt: skip


def test_the_default_layout_is_arc2controls_standard32_and_mapping_files_load_as_given(tmp_path):
    """mapper.py 44-50: wb2ch[w][b] = (words[w], bits[b]) = (high, low); app.py 630-637
    stores reads as data[bitline][wordline]: crossbar cell (r, c) is bitline r, wordline c."""
    path = tmp_path / "standard32.toml"
    path.write_text(vendor_mapping(VENDOR_WORDS, VENDOR_BITS), encoding="utf-8")
    loaded = load_layout(str(path))
    assert loaded.rows == tuple(VENDOR_BITS) and loaded.cols == tuple(VENDOR_WORDS)
    assert loaded.logic == (0, ("out",) * 4)  # the first ioconf: what arc2control applies
    assert STANDARD32.rows == loaded.rows and STANDARD32.cols == loaded.cols
    assert load_layout("std32") is load_layout("standard32") is STANDARD32
    xbar, inst = connect(layout=str(path))
    xbar.apply(PulseBatch([4], [9]))
    assert inst.calls[0] == ("pulse_slice_masked", (13, 0.1, 1000, (59,)))
    # a crosspoint mask (sa-standard32.toml: [w, b] pairs) leaves the other cells unwired
    path.write_text(vendor_mapping(VENDOR_WORDS[:4], VENDOR_BITS[:3], "mask = [[0, 0], [3, 2]]"))
    xbar, inst = connect(layout=str(path))
    assert xbar.shape == (3, 4)
    with pytest.raises(AddressError, match=r"cell \(0, 3\) is not wired"):
        xbar.apply(PulseBatch([0], [3]))
    block = xbar.read_all()
    assert np.isfinite(block[[0, 2], [0, 3]]).all() and np.isnan(block).sum() == 10
    path.write_text(vendor_mapping([16], [0], 'mask = "all"'))
    with pytest.raises(ValueError, match="bad arc2control mapping"):
        load_layout(str(path))


def test_connect_grounds_and_sets_the_mapping_io_logic_as_arc2control_does():
    """arc2connection_widget.py 177-185 (then 112): Instrument(id, fw); finalise_operation
    with the idle mode; set_logic(ios, *directions) from the mapping's ioconf."""
    lay = load_layout("standard32")
    inst = EmulatedArC2(open_crossbar(URL), lay.rows, lay.cols)
    xbar = ArC2Crossbar(inst, lay)
    out = pyarc2.IODir.OUT
    assert inst.calls == [
        ("finalise_operation", (pyarc2.IdleMode.SoftGnd, None)),
        ("set_logic", (0, out, out, out, out)),
        ("execute", ()),
    ]
    assert inst.logic == (0, out, out, out, out) and inst.grounded
    xbar.close()


def test_widths_below_40_ns_are_refused_before_anything_is_sent():
    """instrument.rs 2399-2400: 'anything between 1 ns and 40 ns will be clamped to 40 ns'
    (the stand-in does so); the driver refuses such widths rather than stretch them."""
    xbar, inst = connect()
    assert xbar.limits.width_min == 40e-9
    with pytest.raises(SafetyLimitError, match="width"):
        xbar.apply(PulseBatch([0], [0], width=20e-9))
    assert inst.calls == []
    with pytest.raises(SafetyLimitError, match="outside what the instrument"):
        open_arc2("arc2://?width_min=1e-8", instrument=object())
    xbar.apply(PulseBatch([0], [0], width=40e-9))
    assert inst.calls[0][1][2] == 40
    batches = []
    apply = inst.xbar.apply
    inst.xbar.apply = lambda batch, **kw: (batches.append(batch), apply(batch, **kw))[1]
    inst.pulse_slice_masked(15, 0.1, 10, [16]).execute()
    assert np.all(batches[0].width == 40e-9)  # the stand-in ran the 10 ns pulse at 40 ns


def test_long_pulses_leave_no_voltage_on_the_lines():
    """instrument.rs 2081-2085, 2131-2133: pulses of 500 ms or more take the slow path and
    leave +-V/2 on the lines; arc2control grounds after every pulse (app.py 678-680)."""
    limits = SafetyLimits(width_min=40e-9, width_max=1.0)
    lay = load_layout("standard32")
    inst = EmulatedArC2(EmulatedCrossbar(32, 32, seed=1, limits=limits), lay.rows, lay.cols)
    xbar = ArC2Crossbar(inst, lay, limits=limits)
    inst.calls.clear()
    xbar.apply(PulseBatch([0, 1], [0, 1], width=0.5))
    names = [n for n, _ in inst.calls]
    assert names[:4] == ["pulse_slice_masked", "ground_all", "pulse_slice_masked", "ground_all"]
    assert inst.grounded  # nothing left biased after the program
    inst.pulse_slice_masked(15, 0.1, 500_000_000, [16]).execute()
    assert not inst.grounded  # what the stand-in reports when a driver forgets to ground


# ---------------------------------------------------------------- refused before any call
def test_unwired_cells_and_unsafe_pulses_are_refused_before_any_call(tmp_path):
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"rows": [15, 32, None], "cols": [16, None, 63]}))
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


def test_seeded_mpes_run_through_arc2_ends_with_the_in_process_weights(tmp_path):
    # the vendor's standard32 mapping in its own file format, configured for the first
    # 10 bitlines and 20 wordlines (arc2control mapper.py from_toml: config words/bits)
    path = tmp_path / "standard32-10x20.toml"
    path.write_text(vendor_mapping(VENDOR_WORDS, VENDOR_BITS, size=(20, 10)))
    layout = load_layout(str(path))
    assert layout.rows == STANDARD32.rows[:10] and layout.cols == STANDARD32.cols[:20]
    inst = EmulatedArC2(open_crossbar(MPES_URL), layout.rows, layout.cols)
    xbar = open_crossbar(f"arc2://?layout={path}", instrument=inst, record=False)
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
        # the same devices, cell for cell, and read_all is each cell's own (not a transpose)
        assert np.array_equal(inst.xbar.read_all(), local.read_all())
        np.testing.assert_allclose(xbar.read_all(), local.read_all(), rtol=1e-6)
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
        xbar = open_crossbar("emulator://?rows=32&cols=32&seed=9&sigma=0.15")
        made.append(EmulatedArC2(xbar, STANDARD32.rows, STANDARD32.cols))
        return made[-1]

    monkeypatch.setattr(pyarc2, "find_ids", lambda: [3])
    monkeypatch.setattr(pyarc2, "Instrument", instrument)
    return made


def test_info_characterize_fit_on_arc2_and_recording_by_default(fake_pyarc2, tmp_path, capsys):
    url = "arc2://?firmware=fw.bin"
    assert cli.main(["info", url]) == 0
    out = capsys.readouterr().out
    assert "ArC TWO #3,layout standard32" in out and "32 x 32 (1024 cells)" in out
    record = tmp_path / "c.sqlite"
    args = ["characterize", url, "--cells", "0:4,0:4", "--pulses", "2000", "--reads", "20"]
    assert cli.main([*args, "--record", str(record)]) == 0
    assert cli.main(["fit", str(record)]) == 0
    assert "fitted 16 of 16 devices" in capsys.readouterr().out
    assert all(inst.grounded for inst in fake_pyarc2)  # every session ended grounded
    with open_crossbar("arc2://3?firmware=fw.bin") as xbar:
        assert isinstance(xbar, RecordingCrossbar)
        assert xbar.record.path.parent == tmp_path / "records"
