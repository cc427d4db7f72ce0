"""A new user's first hour (issue 15): compact records, export with progress and selection,
every --help shows its defaults, every error type importable, honest demo verdicts, and fresh
cells for each demo variant."""

from __future__ import annotations

import argparse
import csv
import inspect

import numpy as np
import pytest

import memristor_hil
from memristor_hil import errors
from memristor_hil.cli import build_parser, main
from memristor_hil.experiments import function_learning as fl
from memristor_hil.lab.record import Record
from memristor_hil.lab.record_codec import ReadingCodec


def _mpes_like_record(path, dtype, steps=200, wire=np.float64):
    """Power-law readings as a 100x100 mPES run reads them back: ~5000 cells a step, one pulse."""
    rng = np.random.default_rng(0)
    size = 100 * 200
    r1 = 2.3e8 * (1 + 0.15 * rng.standard_normal(size))
    a = -0.146 * (1 + 0.15 * rng.standard_normal(size))
    n = np.full(size, 300.0)
    active = rng.random(200) < 0.5
    sent = []
    with Record.create(path, identity="test", shape=(100, 200)) as record:
        for _ in range(steps):
            rows = np.flatnonzero(rng.random(100) < 0.5)
            cols = np.flatnonzero(active ^ (rng.random(200) < 0.05))
            cells = (rows[:, None] * 200 + cols[None, :]).reshape(-1)
            n[cells] += 1
            values = (200 + r1[cells] * n[cells] ** a[cells]).astype(dtype).astype(wire)
            record.log_apply(cells, np.ones(1, np.int64), 0.1, 1e-6, values, started=0.0,
                             duration=0.0)  # fmt: skip
            sent.append((cells, values))
    return sent


def test_float32_device_read_over_a_float64_wire_is_stored_5x_smaller_and_exact(tmp_path):
    path = tmp_path / "r.sqlite"
    sent = _mpes_like_record(path, np.float32)
    format1 = sum(8 * v.size + 20_000 // 8 for _, v in sent)  # float64 + plain bitmap
    assert path.stat().st_size * 5 <= format1
    with Record.open(path) as record:
        for (cells, values), event in zip(sent, record.events(), strict=True):
            np.testing.assert_array_equal(event.cells, cells)
            assert event.resistance.dtype == np.float64
            np.testing.assert_array_equal(event.resistance, values)
        late = list(record.events(start=150, stop=152))  # decoding from the middle is exact
    np.testing.assert_array_equal(late[0].resistance, sent[150][1])


def test_float64_readings_round_trip_bit_for_bit(tmp_path):
    path = tmp_path / "r.sqlite"
    sent = _mpes_like_record(path, np.float64, steps=30)
    with Record.open(path) as record:
        batches = list(record.batches())
    for (_, values), event in zip(sent, batches, strict=True):
        assert event.resistance.tobytes() == values.tobytes()


def test_codec_survives_repeated_cells_special_values_and_a_discarded_event():
    enc, dec = ReadingCodec(10), ReadingCodec(10)
    cells = np.array([3, 3, 7, 0])
    for values in (
        np.array([1.0, 2.0, np.inf, np.nan]),
        np.array([-0.0, 1e-45, 3e38, 3.0], dtype=np.float32),
    ):
        enc.encode(cells, values[::-1])  # encoded but never stored
        enc.discard()
        blob = enc.encode(cells, values)
        enc.commit()
        out = dec.decode(cells, blob)
        assert out.dtype == values.dtype and out.tobytes() == values.tobytes()


def test_export_shows_expected_size_and_progress_and_selects(tmp_path, capsys):
    path = tmp_path / "r.sqlite"
    sent = _mpes_like_record(path, np.float32, steps=20)
    out = tmp_path / "all.csv"
    assert main(["record", "export", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    total = sum(c.size for c, _ in sent)
    assert f"{total:,} rows" in captured.out and "expect about" in captured.out
    assert "exporting" in captured.err and "100%" in captured.err  # the progress bar
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == total
    first = [float(r["resistance"]) for r in rows[: sent[0][0].size]]
    np.testing.assert_array_equal(first, sent[0][1])  # exact
    some = tmp_path / "some.csv"
    args = ["--events", "5:7", "--cells", "0:10,0:200", "--out", str(some)]
    assert main(["record", "export", str(path), *args]) == 0
    with open(some) as f:
        picked = list(csv.DictReader(f))
    assert {int(r["event"]) for r in picked} == {5, 6}
    assert all(int(r["row"]) < 10 for r in picked)
    expected = sum(int(np.sum(c < 10 * 200)) for c, _ in sent[5:7])
    assert len(picked) == expected
    assert main(["record", "export", str(path), "--events", "x"]) == 2


def _parsers(parser: argparse.ArgumentParser, name: str = "memristor-hil"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from _parsers(child, f"{name} {child_name}")


def test_every_help_shows_every_default():
    checked = 0
    for name, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            shown = f"(default: {action.default})"
            assert shown in text, f"{name} {action.option_strings[0]} does not show {shown}"
            checked += 1
    assert checked >= 20


def test_every_error_type_is_importable_from_the_package():
    defined = {
        name
        for name, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, Exception) and value.__module__ == errors.__name__
    }
    assert defined <= set(memristor_hil.__all__)
    for name in defined:
        assert getattr(memristor_hil, name) is getattr(errors, name)


def test_verdict_says_did_not_learn_for_a_flat_output_and_learned_for_a_good_one():
    t = np.linspace(0, 4, 4001)
    target = (np.sin(np.pi * t) ** 2)[:, None]
    testing = t > 3
    flat = np.full_like(target, 0.2)

    def result(output):
        mse = float(np.mean((output[testing] - target[testing]) ** 2))
        return fl.Result("r", "x^2", mse, 0.0, 0.0, t, output, target, testing, t, target)

    assert not fl.verdict(result(flat)).learned
    assert "did not learn" in fl.verdict(result(flat)).text
    assert fl.verdict(result(target + 0.01)).learned


def test_demo_says_did_not_learn_when_nothing_can_learn(tmp_path, capsys):
    """0.4 s leaves 0.3 s of learning: no rule can learn x^2 from that."""
    out = tmp_path / "d.png"
    assert main(["demo", "--seconds", "0.4", "--neurons", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("did not learn (") == 3
    assert "within 2x" not in text
    assert out.exists()


def test_demo_gives_each_variant_fresh_cells_and_names_the_rule_in_its_record(tmp_path, capsys):
    records = tmp_path / "records"
    url = f"emulator://?rows=24&cols=20&seed=1&record={records}/demo.sqlite"
    # too small for two fresh 10x20 blocks below row 5: refused before anything is pulsed
    code = main(["demo", "--seconds", "0.2", "--neurons", "10", "--crossbar", url,
                 "--layout", "5,0", "--out", str(tmp_path / "d.png")])  # fmt: skip
    assert code == 2
    assert "needs 25x20" in capsys.readouterr().err
    assert not list(records.glob("*.sqlite"))


def test_demo_variants_pulse_disjoint_cells(tmp_path, monkeypatch, capsys):
    records = tmp_path / "records"
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", str(records))
    url = "emulator://?rows=40&cols=20&seed=1&record=1"
    assert main(["demo", "--seconds", "0.3", "--neurons", "10", "--crossbar", url,
                 "--layout", "8,0", "--out", str(tmp_path / "d.png")]) == 0  # fmt: skip
    paths = sorted(records.glob("*.sqlite"))
    assert len(paths) == 2
    touched = {}
    for path in paths:
        with Record.open(path) as record:
            rule = record.parameters["rule"]
            assert record.parameters["command"] == "demo"
            cells = np.concatenate([e.cells for e in record.batches()] or [np.empty(0, int)])
            touched[rule] = set(cells.tolist())
            settings = record.parameters["mpes"]
            assert settings["pulses"] == ("learning_rate" if rule == "mPES" else "one")
    assert set(touched) == {"mPES", "mPES-one"}
    assert touched["mPES"] and touched["mPES-one"]
    assert not touched["mPES"] & touched["mPES-one"]
    rows = {rule: {c // 20 for c in cells} for rule, cells in touched.items()}
    assert min(rows["mPES"]) >= 8 and max(rows["mPES"]) < 18
    assert min(rows["mPES-one"]) >= 18 and max(rows["mPES-one"]) < 28


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["record", "export", "-h"]])
def test_help_exits_cleanly(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_missing_or_bad_parameter_file_says_it_is_the_parameter_file(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["info", f"emulator://?rows=2&cols=2&params={missing}"]) == 2
    err = capsys.readouterr().err
    assert "no such parameter file" in err and "nope.json" in err
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert main(["info", f"emulator://?rows=2&cols=2&params={bad}"]) == 2
    assert "is not a parameter file" in capsys.readouterr().err
