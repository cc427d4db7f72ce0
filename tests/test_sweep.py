"""Sweeps: the plan, bit-identical emulator runs, failures as rows, resume after a kill, a
separately started Dask scheduler and worker, and hardware runs serialised per URL.

Every run here is tiny (a few neurons, well under a second simulated), so that the tests check
the machinery, not the learning.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import memristor_hil
from memristor_hil.cli import main
from memristor_hil.experiments.plan import SweepPlan
from memristor_hil.experiments.sweep import run_one, sweep
from memristor_hil.experiments.tasks import RunSpec
from memristor_hil.testing.dask_cluster import dask_cluster

TINY = {"neurons": [12], "seconds": 0.4}


def _toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plan_expands_every_axis_and_runs_pes_once_per_device_setting():
    plan = SweepPlan.from_dict(
        {
            "name": "p",
            "seeds": 2,
            "tasks": ["x", "x^2"],
            "rules": [
                {"rule": "PES", "learning_rate": [1e-5, 1e-4]},
                {"rule": "mPES", "pulses": ["one", "stochastic"]},
            ],
            "devices": {"sigma": [0.0, 0.15]},
        }
    )
    runs = plan.runs()
    pes = [r for r in runs if r.rule == "PES"]
    mpes = [r for r in runs if r.rule == "mPES"]
    assert len(pes) == 2 * 2 * 2  # seeds x tasks x rates, not x sigma
    assert len(mpes) == 2 * 2 * 2 * 2  # seeds x tasks x policies x sigma
    assert len({r.run_id for r in runs}) == len(runs)
    assert {r.sigma for r in mpes} == {0.0, 0.15} and {r.sigma for r in pes} == {None}
    assert len(plan.limited(seeds=1, tasks=["x"]).runs()) == len(runs) // 4
    assert memristor_hil.sweep is sweep  # the public entry point, imported on first use


@pytest.mark.parametrize(
    "data, message",
    [
        ({"tasks": ["nope"], "rules": [{"rule": "PES"}]}, "unknown task"),
        ({"tasks": ["x"], "rules": [{"rule": "PES", "pulses": "one"}]}, "PES rules take"),
        ({"tasks": ["x"], "rules": [{"rule": "mPES"}], "devices": {"volts": 1}}, "takes"),
        ({"tasks": ["x"], "rules": [{"rule": "BCM"}]}, "rule = 'PES' or 'mPES'"),
        ({"tasks": ["x"], "rules": [{"rule": "PES"}], "seed": 3}, "unknown sweep keys"),
    ],
)
def test_a_bad_plan_is_refused_with_a_clear_message(data, message):
    with pytest.raises(ValueError, match=message):
        SweepPlan.from_dict(data)


def test_an_emulator_run_repeats_bit_for_bit():
    spec = RunSpec(
        "x^2",
        "mPES",
        seed=3,
        stimulus="white",
        seconds=0.5,
        n_pre=10,
        n_post=10,
        pulses="stochastic",
        max_pulses=2,
        sigma=0.15,
        noise=0.05,
    )
    first, second = run_one(spec), run_one(spec)
    assert first["status"] == "ok", first["traceback"]
    assert first["pulses_applied"] > 0
    assert first["pulses"] == "stochastic"  # the run's policy, not overwritten by the count
    for key in ("mse", "spearman", "pearson", "block_errors", "pulses_applied"):
        assert first[key] == second[key], key
    other = run_one(RunSpec(**{**spec.__dict__, "seed": 4}))
    assert other["mse"] != first["mse"]


def test_a_network_builds_to_the_same_operators_every_time():
    # Nengo's optimizer merges operators in the order of a set of them, that is of their
    # memory addresses: with it on (Nengo's default), no two of these builds gave the same
    # operators (in one build the post decoders are a BsrDotInc with another connection's, in
    # the next a DotInc of their own, which round differently), and the run above repeated
    # its test MSE in only about half the tries.
    import nengo

    from memristor_hil import mPES
    from memristor_hil.experiments.function_learning import build_network, simulator

    def operators() -> list[tuple[str, list[tuple[int, ...]]]]:
        stimulus = nengo.processes.WhiteSignal(0.5, high=5, seed=3)
        net, _ = build_network(
            mPES(seed=3),
            lambda x: x**2,
            stimulus,
            lambda t: t < 0.3,
            n_pre=10,
            n_post=10,
            n_error=10,
            seed=3,
        )
        with simulator(net, seed=3) as sim:
            return [(type(op).__name__, [s.shape for s in op.all_signals]) for op in sim.step_order]

    first = operators()
    assert any(name == "DotInc" for name, _ in first)
    assert operators() == first and operators() == first


def test_a_failing_run_is_a_row_with_its_traceback_and_the_sweep_goes_on(tmp_path):
    plan = {
        "name": "fails",
        "seeds": 1,
        "tasks": ["x"],
        **TINY,
        "rules": [{"rule": "PES"}, {"rule": "mPES"}],
        "devices": {"crossbar": ["emulator://?rows=12&cols=24", "emulator://?rows=2&cols=2"]},
    }
    frame = sweep(plan, tmp_path, workers=0).set_index("label")
    assert len(frame) == 3
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 1 and failed["crossbar"].iloc[0].endswith("rows=2&cols=2")
    assert "BuildError" in failed["error"].iloc[0]
    assert "Traceback" in failed["traceback"].iloc[0]
    assert (frame[frame["status"] == "ok"]["mse"] > 0).all()
    summary = (tmp_path / "summary.md").read_text()
    assert "## Failed runs" in summary and failed["run_id"].iloc[0] in summary
    assert (tmp_path / "mse_by_rule.png").stat().st_size > 0


def test_a_killed_sweep_resumes_without_rerunning_finished_runs(tmp_path):
    toml = _toml(
        tmp_path / "s.toml",
        'name = "resume"\nseeds = 6\ntasks = ["x"]\nneurons = [12]\nseconds = 0.6\n'
        '[[rules]]\nrule = "mPES"\n',
    )
    out = tmp_path / "out"
    results = out / "results.parquet"
    cmd = [sys.executable, "-m", "memristor_hil", "sweep", str(toml), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--workers", "0"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # one open, one snapshot: the sweep replaces the file while we poll, and pyarrow
            # opening the path twice (metadata, then pages) could read two different files
            if results.exists() and len(pd.read_parquet(io.BytesIO(results.read_bytes()))) >= 2:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = pd.read_parquet(results).set_index("run_id")
    assert 2 <= len(before) < 6, "the sweep should have been killed part-way"

    assert main([*cmd[3:], "--workers", "0"]) == 2  # no --resume: nothing is overwritten
    assert main([*cmd[3:], "--workers", "0", "--resume"]) == 0
    after = pd.read_parquet(results).set_index("run_id")
    assert len(after) == 6 and set(after["seed"]) == set(range(6))
    kept = after.loc[before.index]
    assert (kept["finished"] == before["finished"]).all()  # finished runs were not rerun
    assert (kept["mse"] == before["mse"]).all()


def test_a_table_of_paper_2_runs_reads_back_to_resume(tmp_path):
    """Paper 2's runs score several test blocks; read back from Parquet their block errors are
    an array, which ``--resume`` once took for a truth value (and stopped with a ValueError)."""
    from memristor_hil.experiments.results import ResultTable

    path = tmp_path / "results.parquet"
    table = ResultTable(path)
    table.add({"run_id": "a", "status": "ok", "mse": 0.1, "block_errors": [3.0, 2.0, 1.0]})
    table.add({"run_id": "b", "status": "failed", "mse": None, "block_errors": None})
    again = ResultTable(path)
    assert again.finished() == {"a"}
    assert again.rows["a"]["block_errors"] == [3.0, 2.0, 1.0]
    assert again.rows["b"]["block_errors"] == []


def test_an_older_table_reads_back_with_the_pulse_count_moved_out_of_the_policy(tmp_path):
    """Tables written before ``pulses_applied`` kept the count in ``pulses``, the policy's
    column; read back (to resume or to summarize) the count moves and the column means one
    thing again, so old and new rows of one resumed table agree."""
    from memristor_hil.experiments.results import ResultTable

    path = tmp_path / "results.parquet"
    old = [
        {"run_id": label, "status": "ok", "rule": label.split()[0], "label": label,
         "pulses": 5400.0, "block_errors": [1.0]}
        for label in ("mPES one", "mPES rate", "mPES stochastic/2", "PES 1e-05")
    ]  # fmt: skip
    pd.DataFrame(old).to_parquet(path, index=False)
    table = ResultTable(path)
    assert {r["label"]: r["pulses"] for r in table.rows.values()} == {
        "mPES one": "one",
        "mPES rate": None,
        "mPES stochastic/2": "stochastic",
        "PES 1e-05": None,
    }  # the policy read back from the label (None: the default, or PES), as new rows have it
    assert all(r["pulses_applied"] == 5400.0 for r in table.rows.values())
    table.add({"run_id": "new", "status": "ok", "label": "mPES one", "pulses": "one",
               "pulses_applied": 10.0, "block_errors": [1.0]})  # fmt: skip
    again = ResultTable(path).rows
    assert (again["new"]["pulses"], again["new"]["pulses_applied"]) == ("one", 10.0)
    assert (again["mPES one"]["pulses"], again["mPES one"]["pulses_applied"]) == ("one", 5400.0)
    # and every label a published plan makes reads back to its run's policy
    from memristor_hil.experiments.plan import load_plan
    from memristor_hil.experiments.results import upgrade_row

    tomls = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))
    assert tomls
    for toml in tomls:
        for spec in load_plan(toml).runs():
            row = upgrade_row({"label": spec.label, "pulses": 1.0})
            assert row["pulses"] == (None if spec.pulses == "learning_rate" else spec.pulses)


def test_a_run_records_the_commit_of_its_source_and_whether_that_source_was_changed(tmp_path):
    from memristor_hil.experiments.tasks import source_commit, versions

    commit = source_commit.__wrapped__  # uncached: the checkout changes below

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    repo = tmp_path / "clone"
    package = repo / "memristor_hil"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (repo / "docs").mkdir()
    (repo / "docs" / "a.md").write_text("a")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert commit(package) == head
    (repo / "docs" / "a.md").write_text("b")  # not the source: still that commit's code
    assert commit(package) == head
    (package / "new.py").write_text("")  # an untracked module the run may import
    assert commit(package) == head + "+dirty"
    (package / "new.py").unlink()
    (package / "__init__.py").write_text("x = 1")
    assert commit(package) == head + "+dirty"
    loose = tmp_path / "site-packages" / "memristor_hil"  # an installed copy, in no clone
    loose.mkdir(parents=True)
    (loose / "__init__.py").write_text("")
    assert commit(loose) == "unknown"
    inside = repo / ".venv" / "memristor_hil"  # an installed copy inside a clone: untracked
    inside.mkdir(parents=True)
    (inside / "__init__.py").write_text("")
    assert commit(inside) == "unknown"
    assert versions()["commit"] == source_commit()  # what every row records


def test_a_sweep_runs_on_a_separately_started_scheduler_and_worker(tmp_path):
    with dask_cluster(workers=1) as address:
        toml = _toml(
            tmp_path / "s.toml",
            'name = "remote"\nseeds = 2\ntasks = ["x1*x2"]\nneurons = [12]\nseconds = 0.4\n'
            '[[rules]]\nrule = "PES"\n[[rules]]\nrule = "mPES"\n'
            '[devices]\ncrossbar = ["emulator://", "emulator://?rows=2&cols=2"]\n',
        )
        out = tmp_path / "out"
        # exit status 1: the runs on the too-small crossbar fail, the others finish
        assert main(["sweep", str(toml), "--out", str(out), "--scheduler", address]) == 1
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # the cluster's processes were stopped
        socket.create_connection((host, int(port)), timeout=5).close()
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 6
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 2 and (failed["crossbar"] == "emulator://?rows=2&cols=2").all()
    assert failed["traceback"].str.contains("BuildError").all()
    pids = {int(w.rsplit(":", 1)[1]) for w in frame["worker"]}
    assert os.getpid() not in pids and len(pids) == 1  # ran on the worker process


def test_hardware_runs_on_one_url_never_overlap_and_each_gets_fresh_cells(
    tmp_path, crossbar_service_factory
):
    # 10 x 40 cells: room for two 8 x 16 blocks (8 post rows, 8 + 8 pre columns), not three
    service = crossbar_service_factory(transport="tcp", rows=10, cols=40, seed=1)
    try:
        plan = {
            "name": "hw",
            "seeds": 3,
            "tasks": ["x"],
            "neurons": [8],
            "seconds": 0.2,
            "rules": [{"rule": "mPES"}],
            "devices": {"crossbar": [service.visa_url]},
        }
        frame = sweep(plan, tmp_path, workers=2).sort_values("started")
    finally:
        service.kill()
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == 2, frame["error"].tolist()
    (first, second) = ok.itertuples()
    assert first.finished <= second.started  # one at a time on one instrument
    assert first.cells != second.cells
    refused = frame[frame["status"] == "failed"]
    assert len(refused) == 1 and "NoFreeCellsError" in refused["error"].iloc[0]
    assert "refusing to learn on pulsed cells" in refused["error"].iloc[0]
    assert len(list((tmp_path / "records").glob("*.sqlite"))) == 3


def test_the_summary_gives_mean_ci_and_the_ratio_to_the_best_pes_rate(tmp_path):
    from scipy.stats import t

    from memristor_hil.experiments.summary import summarize, write_summary

    base = {"task": "x", "stimulus": "sine", "n_pre": 10, "n_post": 10, "seconds": 1.0}
    rows = []
    for label, rule, rate, mses in [
        ("PES 1e-05", "PES", 1e-5, [0.2, 0.4, 0.3]),
        ("PES 0.0001", "PES", 1e-4, [0.1, 0.1, 0.1]),
        ("mPES one", "mPES", None, [0.3, 0.2, 0.1]),
    ]:
        for seed, mse in enumerate(mses):
            rows.append(
                {**base, "label": label, "rule": rule, "learning_rate": rate, "seed": seed,
                 "settings": "-", "status": "ok", "mse": mse, "spearman": 0.9, "pearson": 0.9,
                 "block_errors": [2.0, 1.0], "final_block_error": 1.0, "pulses_applied": 0.0,
                 "wall_s": 1.0, "run_id": f"{label}{seed}", "error": None}
            )  # fmt: skip
    frame = pd.DataFrame(rows)
    table = summarize(frame).set_index("label")
    assert table.loc["PES 1e-05", "mse_mean"] == pytest.approx(0.3)
    assert table.loc["PES 1e-05", "mse_ci95"] == pytest.approx(t.ppf(0.975, 2) * 0.1 / 3**0.5)
    assert table.loc["mPES one", "ratio_to_pes"] == pytest.approx(2.0)  # 0.2 / best PES 0.1
    # and to the published rule (mPES one) of the same task
    assert table.loc["PES 1e-05", "ratio_to_one"] == pytest.approx(1.5)  # 0.3 / 0.2
    assert table.loc["mPES one", "ratio_to_one"] == pytest.approx(1.0)
    assert (table["baseline"] == "PES 0.0001").all()
    written = write_summary(frame, tmp_path)
    assert [p.name for p in written] == ["summary.md", "mse_by_rule.png", "learning_curves.png"]
    assert "1.00 (baseline)" in (tmp_path / "summary.md").read_text()
