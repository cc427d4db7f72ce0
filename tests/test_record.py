"""The experiment record and RecordingCrossbar: what goes in comes out; kill -9 loses nothing."""

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from record_writer import URL, batch_for

from memristor_hil import InvalidBatchError, PulseBatch, SafetyLimitError, open_crossbar
from memristor_hil.errors import UnsupportedError
from memristor_hil.lab.record import Record, RecordError, pack, unpack
from memristor_hil.lab.recording import RecordingCrossbar

HERE = Path(__file__).parent


def test_every_batch_and_read_comes_back_as_sent(tmp_path):
    path = tmp_path / "run.sqlite"
    inner = open_crossbar("emulator://?rows=6&cols=7&seed=2&sigma=0.15")
    twin = open_crossbar("emulator://?rows=6&cols=7&seed=2&sigma=0.15")
    sent = [
        PulseBatch([0, 5, 2], [6, 0, 3], pulses=4),
        PulseBatch([1, 1, 4], [2, 2, 5], pulses=[1, 2, 30], voltage=[0.1, 0.2, 0.3]),
        PulseBatch([3], [3], pulses=7, voltage=0.2, width=5e-6),
    ]
    with RecordingCrossbar(inner, path, parameters={"lr": 1e-4, "note": "x"}) as xbar:
        assert xbar.identity == inner.identity and xbar.shape == (6, 7)
        # the interface's optional capabilities are forwarded, except rewinding the devices
        # behind the record's back; nothing outside the interface is reached through it
        assert xbar.model is inner.model and inner.can_restore and not xbar.can_restore
        with pytest.raises(UnsupportedError, match="cannot"):
            xbar.restore(inner.snapshot())
        assert not hasattr(xbar, "params") and not hasattr(xbar, "load_state")
        out0 = xbar.apply(sent[0], read_back=True)
        assert xbar.apply(sent[1]) is None
        out2 = xbar.apply(sent[2], read_back=True)
        r_read = xbar.read([2, 0], [3, 6])
        r_region = xbar.read_region(1, 2, 2, 3)
        r_all = xbar.read_all()
    assert inner.closed
    for batch in sent:
        twin.apply(batch)
    np.testing.assert_array_equal(r_all, twin.read_all())  # forwarding changed nothing

    with Record.open(path) as record:
        assert record.identity == inner.identity and record.shape == (6, 7)
        assert record.parameters == {"lr": 1e-4, "note": "x"}
        assert record.limits == inner.limits
        assert len(record) == 6
        assert record.counts() == {"apply": 3, "read": 3, "errors": 0}
        events = list(record)
        assert [e.kind for e in events] == ["apply"] * 3 + ["read"] * 3
        assert [e.index for e in events] == list(range(6))
        assert [e.index for e in record.events(start=2, stop=4)] == [2, 3]
        assert [e.index for e in record.events("read", start=4)] == [4, 5]
        for event, batch in zip(events[:3], sent, strict=True):
            np.testing.assert_array_equal(event.rows, batch.rows)
            np.testing.assert_array_equal(event.cols, batch.cols)
            np.testing.assert_array_equal(event.pulses, batch.pulses)
            np.testing.assert_array_equal(event.voltage, np.broadcast_to(batch.voltage, len(batch)))
            np.testing.assert_array_equal(event.width, np.broadcast_to(batch.width, len(batch)))
            assert event.error is None and event.duration >= 0
        np.testing.assert_array_equal(events[0].resistance, out0)
        assert events[1].resistance is None
        np.testing.assert_array_equal(events[2].resistance, out2)
        np.testing.assert_array_equal(events[3].resistance, r_read)
        np.testing.assert_array_equal(events[4].resistance, r_region.reshape(-1))
        np.testing.assert_array_equal(events[4].rows, np.repeat([1, 2], 3))
        np.testing.assert_array_equal(events[5].resistance, r_all.reshape(-1))
        assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))

        # Histories: cell (1, 2) got 1 + 2 pulses in batch 1 and was read in event 4 and 5.
        pulses, resistance = record.history(1, 2)
        np.testing.assert_array_equal(pulses, [3, 3])
        np.testing.assert_array_equal(resistance, [r_region[0, 0], r_all[1, 2]])
        pulses, _ = record.history(3, 3)  # batch 2 read it back, then read_all
        np.testing.assert_array_equal(pulses, [7, 7])
        readings = record.readings()
        assert readings.cells.size == 3 + 1 + 2 + 6 + 42
        by_cell = record.readings().by_cell()
        np.testing.assert_array_equal(by_cell[0 * 7 + 6][0], [4, 4, 4])


def test_a_batch_the_device_rejects_is_recorded_with_its_error(tmp_path):
    path = tmp_path / "run.sqlite"
    with RecordingCrossbar(open_crossbar("emulator://?rows=2&cols=2"), path) as xbar:
        with pytest.raises(SafetyLimitError):  # refused before anything is sent: not recorded
            xbar.apply(PulseBatch([0], [0], voltage=9.0))
        with pytest.raises(InvalidBatchError, match="RESET"):  # the emulator refuses RESET
            xbar.apply(PulseBatch([0], [1], voltage=-0.5))
        xbar.apply(PulseBatch([1], [1], pulses=2), read_back=True)
    with Record.open(path) as record:
        events = list(record.batches())
        assert len(events) == 2
        assert "RESET" in events[0].error and events[0].resistance is None
        assert events[1].error is None
        assert record.counts()["errors"] == 1
        np.testing.assert_array_equal(record.history(0, 1)[0], [])  # a failed batch adds nothing


def test_records_are_never_overwritten_and_bad_files_are_named(tmp_path):
    path = tmp_path / "run.sqlite"
    RecordingCrossbar(open_crossbar("emulator://?rows=2&cols=2"), path).close()
    with pytest.raises(FileExistsError):
        RecordingCrossbar(open_crossbar("emulator://?rows=2&cols=2"), path)
    with pytest.raises(FileNotFoundError):
        Record.open(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(RecordError, match="not a memristor-hil record"):
        Record.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(RecordError):
        Record.open(other)
    with Record.open(path) as record, pytest.raises(RecordError, match="reading"):
        record.log_read(np.array([0]), np.array([1.0]), started=0.0, duration=0.0)


def test_blobs_hold_only_plain_numbers():
    for array in (
        np.arange(5, dtype=np.int8),
        np.array([1.5, -2e8]),
        np.array([1e8, 3.25], dtype=np.float32),
        np.zeros(0, np.int64),
    ):
        back = unpack(pack(array))
        assert back.dtype == array.dtype and back.flags.writeable
        np.testing.assert_array_equal(back, array)
        np.testing.assert_array_equal(unpack(pack(array, compress=True)), array)
    with pytest.raises(ValueError, match="records store"):
        pack(np.array([{"evil": 1}], dtype=object))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    for blob in (buffer.getvalue(), b"z" + zlib.compress(buffer.getvalue()), b"d123"):
        with pytest.raises(RecordError, match="damaged"):
            unpack(blob)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sigkill_mid_run_keeps_every_acknowledged_batch(tmp_path, synchronous):
    path = tmp_path / "killed.sqlite"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "record_writer.py"), str(path), synchronous],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged = -1
    deadline = time.monotonic() + 60
    try:
        while acknowledged < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        with Record.open(path) as live:  # WAL: readable while the writer is still going
            assert len(live) >= acknowledged + 1
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # lines printed before the kill landed are acknowledged too
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.split():
        acknowledged = int(line)
    assert acknowledged >= 40, "the writer did not get going"

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Record.open(path) as record:
        batches = list(record.batches())
        # Every acknowledged batch is there; at most one more was committed but not yet printed.
        assert acknowledged + 1 <= len(batches) <= acknowledged + 2
        replay = open_crossbar(URL)
        for i, event in enumerate(batches):
            batch = batch_for(i)
            expected = replay.apply(batch, read_back=True)
            np.testing.assert_array_equal(event.rows, batch.rows)
            np.testing.assert_array_equal(event.pulses, batch.pulses)
            np.testing.assert_array_equal(event.resistance, expected)


def test_float32_devices_are_recorded_exactly_in_float32(tmp_path):
    path = tmp_path / "f32.sqlite"
    url = "emulator://?rows=3&cols=3&seed=1&sigma=0.15&dtype=float32"
    with open_crossbar(url, record=path) as xbar:
        out = xbar.apply(PulseBatch([0, 2], [1, 2], pulses=3), read_back=True)
    assert out.dtype == np.float32
    with Record.open(path) as record:
        (event,) = record.batches()
        assert event.resistance.dtype == np.float32
        np.testing.assert_array_equal(event.resistance, out)
        assert record.readings().resistance.dtype == np.float64


def test_submitted_batches_are_committed_when_collected(tmp_path, crossbar_service_factory):
    """RecordingCrossbar.submit over a serial driver: the driver sends at once; each event is
    in the file once its result (or the next call) has collected it, with the read-back, the
    same as applying in turn in process; a batch whose reply never comes is recorded with its
    error."""
    from memristor_hil.drivers import SerialCrossbar

    from memristor_hil import CrossbarTimeoutError
    from memristor_hil.crossbar import Crossbar, PendingApply

    url = URL + "&dtype=float32"
    batches = [batch_for(i) for i in range(6)]
    with open_crossbar(url) as plain:
        want = [plain.apply(batch, read_back=True) for batch in batches]
    path = tmp_path / "submitted.sqlite"
    service = crossbar_service_factory("--serial", url=url)
    with RecordingCrossbar(SerialCrossbar(service.where, timeout=5), path) as xbar:
        handles = [xbar.submit(batch, read_back=True) for batch in batches]
        assert len(xbar.record) == 5  # the last one is not collected yet
        got = [handle.result() for handle in handles]
        assert len(xbar.record) == 6
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()
    with Record.open(path) as record:
        events = list(record.batches())
    assert [event.resistance.tobytes() for event in events] == [b.tobytes() for b in want]

    class Unanswered(Crossbar):
        """Sends (in spirit) and never hears back: result() raises."""

        def _submit(self, batch, cells, read_back):
            def finish():
                raise CrossbarTimeoutError("no reply within 1 s")

            return PendingApply(finish)

        def _apply(self, batch, cells, read_back):
            return self._submit(batch, cells, read_back).result()

        def _read(self, flat):
            return np.zeros(len(flat))

    lost = tmp_path / "lost.sqlite"
    with RecordingCrossbar(Unanswered((2, 2)), lost) as xbar:
        pending = xbar.submit(PulseBatch([1], [0], pulses=2), read_back=True)
        with pytest.raises(CrossbarTimeoutError):
            pending.result()
    with Record.open(lost) as record:
        (event,) = record.batches()
    assert "CrossbarTimeoutError: no reply" in event.error and event.resistance is None
