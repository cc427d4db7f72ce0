"""What a new user met following docs/ from a fresh clone (issue 29), each pinned here: the
sweep quick look's folder, --resume of another plan, the stimulus in progress lines, the
header's estimate, --dry-run --resume, the constant-output baseline, the verdict's wording,
records a script did not ask for, a service still starting, negative R0, export sizes, and
``record show | head``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from memristor_hil.emulator import EmulatedCrossbar

from memristor_hil import PowerLaw, PulseBatch, open_crossbar
from memristor_hil.cli import main
from memristor_hil.experiments.function_learning import Verdict
from memristor_hil.experiments.plan import load_plan
from memristor_hil.experiments.summary import write_summary
from memristor_hil.experiments.sweep import default_out
from memristor_hil.lab.characterize import characterize, parse_cells
from memristor_hil.lab.fitting import fit_devices

ROOT = Path(__file__).resolve().parents[1]
PAPER1 = ROOT / "experiments" / "paper1.toml"


# ---------------------------------------------------------------------------- sweeps
def test_the_quick_look_has_its_own_folder_stimulus_and_an_honest_estimate(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    full = load_plan(PAPER1)
    quick = full.limited(seeds=2, seconds=8)
    assert default_out(quick) != default_out(full)
    assert default_out(quick) == Path("out/sweeps/paper-1-2seeds-8s")
    assert full.limited() == full  # nothing reduced: the same plan, the same folder

    assert main(["sweep", str(PAPER1), "--seeds", "2", "--seconds", "8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    header, *lines = out.splitlines()
    assert "out/sweeps/paper-1-2seeds-8s" in header
    assert "56 runs" in header and "reduced from 280 runs" in header
    assert "expected on 2 cores: about 50 min" not in header  # that is the full sweep's
    assert len(lines) == 56
    # the same rule and seed on two stimuli are told apart
    assert sum("x PES 1e-05 seed 0 (sine, 8 s)" in line for line in lines) == 1
    assert sum("x PES 1e-05 seed 0 (white, 8 s)" in line for line in lines) == 1
    assert not Path("out").exists()  # a dry run writes nothing


TINY = 'name = "tiny"\nseeds = 2\ntasks = ["x"]\nneurons = [12]\nseconds = 0.4\n'
TINY += '[[rules]]\nrule = "PES"\n'


def test_resume_refuses_another_plan_and_dry_run_lists_only_the_runs_left(tmp_path, capsys):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "out"
    base = ["sweep", str(toml), "--out", str(out), "--workers", "0"]
    assert main(base) == 0
    results = out / "results.parquet"
    before = results.read_bytes()
    table = pd.read_parquet(results)
    assert (table["constant_mse"] > 0).all()  # every run scores its baseline
    assert "(sine, 0.4 s)" in capsys.readouterr().out  # progress lines name the stimulus

    # other seconds: another plan, refused, the table untouched
    assert main([*base, "--resume", "--seconds", "0.5"]) == 2
    assert "does not have" in capsys.readouterr().err
    assert results.read_bytes() == before

    # more seeds extend the plan: the dry run lists only the one run left
    toml.write_text(TINY.replace("seeds = 2", "seeds = 3"))
    assert main([*base, "--resume", "--dry-run"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert "3 runs" in header and "1 left to run" in header
    assert len(lines) == 1 and "seed 2 " in lines[0]


def _summary_frame(constant_mse: float) -> pd.DataFrame:
    rows = []
    for label, rule, mses in [("PES", "PES", [0.10, 0.12]), ("mPES", "mPES", [0.11, 0.13])]:
        for seed, mse in enumerate(mses):
            rows.append(
                {"task": "x", "stimulus": "sine", "n_pre": 10, "n_post": 10, "seconds": 8.0,
                 "label": label, "rule": rule, "learning_rate": None, "seed": seed,
                 "settings": "-", "status": "ok", "mse": mse, "constant_mse": constant_mse,
                 "spearman": 0.5, "pearson": 0.5, "block_errors": [1.0], "final_block_error": 1.0,
                 "pulses_applied": 0.0, "wall_s": 1.0, "run_id": f"{label}{seed}", "error": None}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_summary_warns_when_runs_score_near_the_constant_output_baseline(tmp_path):
    write_summary(_summary_frame(constant_mse=0.125), tmp_path / "bad")
    text = (tmp_path / "bad" / "summary.md").read_text()
    assert "Warning: 2 of 2 groups did not learn" in text and "constant MSE" in text
    write_summary(_summary_frame(constant_mse=1.0), tmp_path / "good")
    assert "Warning" not in (tmp_path / "good" / "summary.md").read_text()


@pytest.mark.parametrize(
    "explained, text",
    [
        (0.62, "learned (62% of the target's variance explained)"),
        (-1.21, "did not learn (worse than a constant output: 2.2x its MSE)"),
    ],
)
def test_the_verdict_never_says_a_negative_share_of_variance(explained, text):
    assert Verdict(explained > 0.5, explained, 0.125, 0.2).text == text


# ---------------------------------------------------------------------------- records
def test_a_record_nobody_asked_for_is_announced_with_its_place_and_size(
    tmp_path, monkeypatch, caplog, crossbar_service_factory
):
    service = crossbar_service_factory(transport="tcp", rows=4, cols=4)
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", os.fspath(tmp_path / "recs"))
    with caplog.at_level(logging.WARNING, logger="memristor_hil.records"):
        with open_crossbar(service.visa_url) as xbar:
            xbar.apply(PulseBatch([0], [1]), read_back=True)
            path = xbar.record.path
        with open_crossbar(service.visa_url, record=tmp_path / "asked.sqlite"):
            pass
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # the record asked for is not announced
    assert str(path) in said[0] and "record=False" in said[0]
    assert str(path) in said[1] and "1 events" in said[1] and "kB" in said[1]


def test_a_refused_connection_suggests_the_service_may_still_be_starting(capsys):
    import socket

    with socket.socket() as s:  # a free port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"visa://TCPIP::127.0.0.1::{port}::SOCKET?timeout=0.5"
    assert main(["info", url]) == 2
    err = capsys.readouterr().err
    assert "may still be starting" in err and "--ready-file" in err


def test_emulate_writes_its_ready_file_once_serving_and_removes_it_on_stop(tmp_path):
    ready = tmp_path / "svc.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "memristor_hil", "emulate", "--tcp", "127.0.0.1:0", "--quiet",
         "--url", "emulator://?rows=4&cols=4", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = proc.stdout.readline().strip()
        assert ready.read_text() == address + "\n"  # written by the time the line is printed
        host, port = address.rsplit(":", 1)
        assert main(["info", f"visa://TCPIP::{host}::{port}::SOCKET"]) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not ready.exists()


# ---------------------------------------------------------------------------- fit, export
def test_fit_does_not_count_a_negative_r0_as_a_fitted_device():
    # the set-up of test_fitting's noisy case: R0 is lost in 1e-4 read noise
    xbar = EmulatedCrossbar(4, 4, PowerLaw(variability=0.15), seed=11)
    rows, cols = parse_cells("all", xbar.shape)
    result = characterize(xbar, rows, cols, 100_000)
    rng = np.random.default_rng(0)
    noisy = result.resistance * (1 + 1e-4 * rng.standard_normal(result.resistance.shape))
    data = {c: (result.pulses, noisy[:, c]) for c in range(16)}
    free = fit_devices(data, xbar.shape, 0.1, r0="free")
    negative = free.values["r0"] < 0
    assert negative.any()  # the noise does drive some fits below zero
    assert not free.ok[negative].any()
    assert any("negative R0" in note for note in free.notes)
    assert free.summary()["r0"]["median"] >= 0


@pytest.fixture
def uneven_record(tmp_path):
    """A record whose events touch cell (0, 0) far more often than the rest."""
    path = tmp_path / "uneven.sqlite"
    with open_crossbar("emulator://?rows=10&cols=10", record=path) as xbar:
        xbar.apply(PulseBatch(np.repeat(np.arange(10), 10), np.tile(np.arange(10), 10)))
        for _ in range(30):
            xbar.apply(PulseBatch([0], [0]), read_back=True)
    return path


def test_a_filtered_export_announces_its_exact_row_count_and_npz_its_real_size(
    uneven_record, tmp_path, capsys
):
    out = tmp_path / "cell.csv"
    assert main(["record", "export", str(uneven_record), "--cells", "0,0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "31 rows" in text.splitlines()[0]  # 1 + 30, not 131 x 1/100
    assert "wrote 31 rows" in text
    npz = tmp_path / "all.npz"
    assert main(["record", "export", str(uneven_record), "--format", "npz", "--out", str(npz)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "0.0 MB" not in last and ("kB" in last or "bytes" in last)


def test_an_export_that_selects_nothing_is_an_error_and_writes_no_file(
    uneven_record, tmp_path, capsys
):
    # events 1..30 read only cell (0, 0): a filter on another cell used to write an empty
    # file and report success ("wrote 0 rows"), which the lab-bench walkthrough once did
    out = tmp_path / "nothing.csv"
    args = ["record", "export", str(uneven_record), "--events", "1:31", "--cells", "5,5"]
    assert main([*args, "--out", str(out)]) != 0
    assert "nothing to export" in capsys.readouterr().err
    assert not out.exists()


def test_record_show_into_a_reader_that_leaves_ends_quietly(uneven_record):
    code = (
        "import sys; from memristor_hil.cli import main; "
        f"sys.exit(main(['record', 'show', {str(uneven_record)!r}, '--events', '40']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Broken pipe" not in err, err
