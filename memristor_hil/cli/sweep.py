"""``memristor-hil sweep FILE``: run a declarative sweep of the learning tasks on Dask."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

ORDER = 15


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep",
        help="run a sweep (tasks x rules x seeds x device settings) from a TOML file on Dask",
        description="Run every run of a sweep file (see experiments/*.toml and docs/sweeps.md) "
        "on a local Dask cluster (one worker process per core) or on an existing one "
        "(--scheduler). Each finished run is a row of OUT/results.parquet at once; failed "
        "runs are rows with their traceback. At the end: OUT/summary.md and PNG plots. "
        "Needs the [sweep] extra: pip install -e '.[sweep]'.",
    )
    parser.add_argument("file", type=Path, help="the sweep's TOML file")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default out/sweeps/<name>)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue: skip the runs the table has finished"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="tcp://HOST:PORT of a running Dask scheduler (default $DASK_SCHEDULER_ADDRESS, "
        "else a local cluster)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per core; 0: serially in this process)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="only the first N seeds (a reduced sweep)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="simulated seconds per run (a reduced sweep)"
    )
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the file's tasks")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    parser.set_defaults(run=run)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


def _what(run: Any) -> str:
    """``x PES 1e-05 seed 0 (white, 8 s)``: what tells two runs apart in a progress line."""
    stimulus, seconds = run["stimulus"], float(run["seconds"])
    return f"{run['task']} {run['label']} seed {run['seed']} ({stimulus}, {seconds:g} s)"


def _spec_row(spec: Any) -> dict[str, Any]:
    return {"task": spec.task, "label": spec.label, "seed": spec.seed, **spec.resolved()}


def _header(plan: Any, full: Any, specs: list, todo: list, out: Path) -> str:
    line = (
        f"sweep {plan.name}: {len(specs)} runs ({len(plan.tasks)} tasks, {len(plan.seeds)} seeds)"
    )
    if len(todo) != len(specs):
        line += f", {len(todo)} left to run"
    line += f" -> {out}"
    if plan.expected_runtime:
        return f"{line}; expected on 2 cores: {plan.expected_runtime}"
    if plan.name != full.name and full.expected_runtime:
        return (
            f"{line}; reduced from {len(full.runs())} runs (the full sweep: "
            f"{full.expected_runtime} on 2 cores); the ETA below is this sweep's"
        )
    return line


def run(args: argparse.Namespace) -> int:
    try:
        import distributed  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        from memristor_hil.experiments.sweep import INSTALL_HINT

        print(f"memristor-hil sweep needs the [sweep] extra: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from memristor_hil.experiments.plan import load_plan
    from memristor_hil.experiments.sweep import SweepProgress, default_out, runs_left, sweep

    full = load_plan(args.file)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else ()
    plan = full.limited(seeds=args.seeds, seconds=args.seconds, tasks=tasks)
    out = args.out or default_out(plan)
    _, specs, todo = runs_left(plan, out, args.resume)  # a ValueError: main says it, status 2
    print(_header(plan, full, specs, todo, out), flush=True)
    if args.dry_run:
        for spec in todo:
            print(f"  {spec.run_id}  {_what(_spec_row(spec))}  {spec.settings}")
        return 0

    def progress(p: SweepProgress) -> None:
        row = p.row
        what = f"test MSE {row['mse']:.4g}" if row["status"] == "ok" else f"FAILED {row['error']}"
        print(
            f"[{p.done}/{p.total}] {_what(row)}: {what} "
            f"({row['wall_s']:.1f} s) | failures {p.failed} | elapsed "
            f"{_duration(p.elapsed)}, ETA {_duration(p.eta)}",
            flush=True,
        )

    frame = sweep(
        plan, out, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
        progress=progress,
    )  # fmt: skip
    failed = int((frame["status"] != "ok").sum())
    print(f"table: {out / 'results.parquet'} ({len(frame)} runs, {failed} failed)")
    print(f"summary: {out / 'summary.md'}")
    for png in sorted(out.glob("*.png")):
        print(f"plot: {png}")
    if failed:
        print(f"{failed} runs failed: see {out / 'summary.md'} and the traceback column")
    return 1 if failed else 0
