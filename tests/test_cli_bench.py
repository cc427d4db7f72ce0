"""The bench subcommands end to end: info, characterize, fit, record show/export."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from memristor_hil import open_crossbar
from memristor_hil.cli import main
from memristor_hil.lab.record import Record

URL = "emulator://?rows=6&cols=5&seed=9&sigma=0.15"


def cli(*args, cwd):
    """Run ``memristor-hil ARGS`` as a real process; return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "memristor_hil", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_characterize_fit_show_export_end_to_end(tmp_path):
    code, out, err = cli("info", URL, "--json", cwd=tmp_path)
    assert code == 0, err
    info = json.loads(out)
    assert (info["rows"], info["cols"]) == (6, 5) and "EmulatedCrossbar" in info["identity"]
    assert info["limits"]["max_pulses"] == 65535
    assert not (tmp_path / "records").exists()  # info records nothing

    code, out, err = cli(
        "characterize", URL, "--cells", "0:4,1:5", "--pulses", "1000000", "--record", "c.sqlite",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "characterizing 16 cells" in out and "memristor-hil fit c.sqlite" in out
    assert "100%" in err  # the progress bar
    with Record.open(tmp_path / "c.sqlite") as record:
        assert record.parameters["pulses"] == 1_000_000 and record.parameters["cells"] == "0:4,1:5"
        assert record.url == URL
        readings = record.readings()
        assert set(np.unique(readings.cells)) == {r * 5 + c for r in range(4) for c in range(1, 5)}
        events = len(record)
        cells_logged = sum(e.cells.size for e in record.events())

    code, out, err = cli("fit", "c.sqlite", cwd=tmp_path)
    assert code == 0, err
    assert "fitted 16 of 16 devices" in out
    fitted = json.loads((tmp_path / "c-fit.json").read_text())
    assert fitted["fit"]["fitted"] == 16
    assert (tmp_path / "c-fit.png").read_bytes()[:4] == b"\x89PNG"
    # The parameter file drives an emulator whose devices look like the fitted ones.
    code, out, err = cli("info", "emulator://?rows=3&cols=3&params=c-fit.json", "--json",
                         cwd=tmp_path)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["model"] == fitted["model"]
    with open_crossbar(f"emulator://?rows=3&cols=3&params={tmp_path / 'c-fit.json'}") as xbar:
        assert xbar.model.r1 == pytest.approx(fitted["model"]["r1"])
        assert xbar.model.variability.a == pytest.approx(fitted["fit"]["summary"]["a"]["sigma"])

    code, out, err = cli("record", "show", "c.sqlite", "--events", "2", cwd=tmp_path)
    assert code == 0, err
    assert "EmulatedCrossbar,6x5,seed=9" in out and '"command": "characterize"' in out
    assert f"{events - 2} batches, 2 reads, 0 with errors" in out  # two reads before pulsing
    assert "#0      read" in out and f"... {events - 4} more ..." in out

    code, out, err = cli("record", "export", "c.sqlite", "--format", "csv", cwd=tmp_path)
    assert code == 0, err
    with open(tmp_path / "c.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cells_logged
    assert rows[0]["kind"] == "read" and rows[0]["pulses"] == ""
    code, out, err = cli(
        "record", "export", "c.sqlite", "--format", "npz", "--out", "c.npz", cwd=tmp_path
    )
    assert code == 0, err
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:
        assert npz["row"].size == cells_logged
        read = npz["resistance"][~np.isnan(npz["resistance"])]
        np.testing.assert_array_equal(read, readings.resistance)
        csv_r = np.array([float(r["resistance"]) for r in rows if r["resistance"]])
        np.testing.assert_array_equal(csv_r, read)  # CSV keeps every digit
        assert json.loads(str(npz["meta"]))["url"] == URL


def test_characterize_default_record_path_and_read_every(tmp_path):
    code, out, err = cli(
        "characterize", URL, "--cells", "2,3", "--pulses", "50", "--read-every", "10",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    (path,) = (tmp_path / "records").glob("*-emulator.sqlite")
    with Record.open(path) as record:
        pulses, r = record.history(2, 3)
    np.testing.assert_array_equal(pulses, [0, 0, 10, 20, 30, 40, 50])  # read twice at first
    assert r[0] == r[1] and np.all(np.diff(r[1:]) < 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["characterize", URL, "--cells", "9,0"], "rows '9' in '9,0' are outside the crossbar"),
        (["characterize", URL, "--cells", "0-3"], "must be ROWS,COLS"),
        (["characterize", URL, "--pulses", "0"], "--pulses must be at least 1"),
        (["characterize", "emulatr://?rows=2"], "unknown crossbar URL scheme 'emulatr'"),
        (["info", "emulator://?rows=2&colz=3"], "unknown emulator:// options ['colz']"),
        (["fit", "missing.sqlite"], "no record at missing.sqlite"),
        (["record", "show", "missing.sqlite"], "no record at missing.sqlite"),
    ],
)
def test_errors_name_the_problem_and_leave_nothing_behind(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"memristor-hil {argv[0]}: error: ") and message in err
    assert not (tmp_path / "records").exists()  # no empty record for a run that never started


def test_fit_of_a_file_that_is_not_a_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello " * 200)
    assert main(["fit", "notes.txt"]) == 2
    assert "is not a memristor-hil record" in capsys.readouterr().err


def test_export_never_overwrites_the_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with open_crossbar(URL, record="r.sqlite") as xbar:
        xbar.read_all()
    assert main(["record", "export", "r.sqlite", "--out", "r.sqlite"]) == 2
    assert "would overwrite the record" in capsys.readouterr().err
    with Record.open(tmp_path / "r.sqlite") as record:
        assert len(record) == 1


@pytest.mark.parametrize(
    "argv",
    [["info"], ["characterize"], ["fit"], ["record"], ["record", "show"], ["record", "export"]],
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: memristor-hil " + " ".join(argv)) and len(out) > 300


def test_record_show_lists_a_short_record_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with open_crossbar(URL, record="short.sqlite") as xbar:
        xbar.read_all()
        xbar.read([0], [0])
        xbar.read([1], [1])
    assert main(["record", "show", "short.sqlite", "--events", "5"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  #")] == [
        "#0", "#1", "#2"
    ]  # fmt: skip
    assert "more" not in out
