"""The fast CSV writer of ``record export`` (Arrow) writes what the reference (Python) writer
writes, row for row and value for value, and says clearly when pyarrow is missing."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest

from memristor_hil.cli import main
from memristor_hil.lab import record_export
from memristor_hil.lab.record import Record

pytest.importorskip("pyarrow", reason="the [export] extra (pyarrow) is part of [test]")
from memristor_hil.lab import record_export_arrow  # noqa: E402


def _varied_record(path):
    """Every kind of event export meets: constant and per-cell pulses/voltage/width, float32
    and float64 readings with special values, no read-back, reads, empty events, errors whose
    text needs quoting, cells in any order and repeated."""
    rng = np.random.default_rng(3)
    with Record.create(path, identity="test", shape=(6, 7)) as record:
        for step in range(40):
            n = int(rng.integers(0, 30))
            cells = rng.integers(0, 42, n) if step % 5 == 1 else np.sort(rng.choice(42, n, False))
            values = 1e3 + 1e8 * rng.random(n)
            if step % 4 == 0:
                values = values.astype(np.float32)
            if step == 6 and n >= 4:
                values[:4] = [np.inf, np.nan, 1e-300, 5e300]
            started = 1.7e9 + step * 0.1234567891
            if step % 7 == 3:
                record.log_read(cells, values, started=started, duration=1e-3)
                continue
            pulses = rng.integers(1, 4, n) if step % 3 == 0 else np.ones(1, np.int64)
            voltage = rng.choice([0.1, 1.1, -1.3], n) if step % 3 == 1 else 1.1
            width = 1e-6 if step % 2 else 1e-7 * rng.integers(1, 9, n)
            error = 'device said "no", twice' if step in (9, 30) else None
            record.log_apply(
                cells, pulses, voltage, width, None if step % 6 == 5 else values,
                started=started, duration=1e-3, error=error,
            )  # fmt: skip
        record.log_read(np.arange(5), None, started=1.8e9, duration=0.0, error="timeout, gave up")


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return (x == y and math.copysign(1, x) == math.copysign(1, y)) or (x != x and y != y)


def _export(path, out, writer, selection=None, progress=None):
    with Record.open(path) as record:
        return record_export.export_csv(
            record, out, selection or record_export.Selection(), progress or (lambda n: None),
            writer=writer,
        )  # fmt: skip


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("chunk_rows", [7, 100, 1 << 18])
@pytest.mark.parametrize(
    "selection",
    [
        record_export.Selection(),
        record_export.Selection(5, 31),
        record_export.Selection(0, None, np.arange(42) % 3 == 0),
    ],
    ids=["all", "events", "cells"],
)
def test_arrow_writer_writes_the_reference_rows_and_values(
    tmp_path, monkeypatch, chunk_rows, selection
):
    path = tmp_path / "r.sqlite"
    _varied_record(path)
    monkeypatch.setattr(record_export_arrow, "CHUNK_ROWS", chunk_rows)  # many chunks in flight
    reference, fast = tmp_path / "reference.csv", tmp_path / "fast.csv"
    seen: list[int] = []
    n_reference = _export(path, reference, "python", selection)
    n_fast = _export(path, fast, "pyarrow", selection, seen.append)
    assert n_fast == n_reference == sum(seen) > 0
    expected, got = _rows(reference), _rows(fast)
    assert got[0] == expected[0] == list(record_export.COLUMNS)
    assert len(got) == len(expected) == n_reference + 1
    for number, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert len(have) == len(want) == 10, number
        for column, a, b in zip(expected[0], want, have, strict=True):
            assert _same_value(a, b), f"row {number} {column}: reference {a!r}, pyarrow {b!r}"
    kinds = {row[1] for row in got[1:]}
    assert kinds == {"apply", "read"} or selection.start > 0
    if selection.stop is None and selection.cells is None:
        assert {row[9] for row in got[1:]} >= {'device said "no", twice', "timeout, gave up"}
        assert any(row[8] == "inf" for row in got) and any(row[8] == "nan" for row in got)


def test_a_float32_reading_is_written_as_text_that_reads_back_exactly(tmp_path):
    path = tmp_path / "r.sqlite"
    values = np.array([2.8012346e7, 1.2345678e8, 123.45678, 0.1], dtype=np.float32)
    with Record.create(path, identity="test", shape=(1, 4)) as record:
        record.log_read(np.arange(4), values, started=1.7e9, duration=0.0)
    _export(path, tmp_path / "out.csv", "pyarrow")
    rows = _rows(tmp_path / "out.csv")[1:]
    got = np.array([float(row[8]) for row in rows])
    assert got.tobytes() == values.astype(np.float64).tobytes()


def test_without_pyarrow_auto_falls_back_with_a_note_and_pyarrow_is_refused(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "r.sqlite"
    _varied_record(path)
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)  # import pyarrow.csv fails
    assert not record_export.has_pyarrow()
    out = tmp_path / "r.csv"
    assert main(["record", "export", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "pure Python" in captured.out and "memristor-hil[export]" in captured.out
    assert _rows(out)[0] == list(record_export.COLUMNS)
    code = main(["record", "export", str(path), "--out", str(out), "--writer", "pyarrow"])
    assert code == 2
    assert "needs pyarrow" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be one of"):
        _export(path, out, "fortran")
