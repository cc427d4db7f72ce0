"""Wall time of one 24-run sweep three ways, side by side, and whether their numbers agree.

1. serially, in this process (``workers=0``);
2. on the default local cluster of 2 single-threaded ``dask worker`` processes (its start-up
   is included: it is what a user waits for);
3. on a ``dask scheduler`` and a ``dask worker --nworkers 2`` started beforehand as their own
   processes on loopback (their start-up is printed separately, not included).

The runs: paper 1's x^2 on a 4 s sine, 100/100 neurons, PES and three mPES policies x 6 seeds,
``--seconds`` simulated each (default 5 s instead of the paper's 30 s, to keep the shared
machine usable). The script prints how many runs gave bit-identical metrics each way (all of
them, on one machine: see docs/sweeps.md, Reproducibility), and the largest relative
difference.

Usage::

    python benchmarks/bench_sweep.py              # 24 runs of 5 s
    python benchmarks/bench_sweep.py --seconds 30 # the paper's length
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from memristor_hil.experiments.plan import SweepPlan
from memristor_hil.experiments.sweep import sweep
from memristor_hil.testing.dask_cluster import dask_cluster


def _plan(seconds: float, neurons: int) -> SweepPlan:
    return SweepPlan.from_dict(
        {
            "name": "bench",
            "seeds": 6,
            "tasks": ["x^2"],
            "neurons": [neurons],
            "seconds": seconds,
            "rules": [
                {"rule": "PES", "learning_rate": 1e-5},
                {"rule": "mPES", "pulses": "one"},
                {"rule": "mPES", "pulses": "scaled"},
                {"rule": "mPES", "pulses": "stochastic", "max_pulses": 2},
            ],
            "devices": {"sigma": 0.15},
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated s per run")
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    plan = _plan(args.seconds, args.neurons)
    n = len(plan.runs())
    print(
        f"{n} runs: x^2, {args.neurons}/{args.neurons} neurons, {args.seconds:g} s each; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tables, times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        tables["serial"] = sweep(plan, folder / "serial", workers=0, summarize=False)
        times["serial"] = time.perf_counter() - start
        print(f"serial, one process:           {times['serial']:7.1f} s", flush=True)

        start = time.perf_counter()
        tables["local"] = sweep(plan, folder / "local", workers=args.workers, summarize=False)
        times["local"] = time.perf_counter() - start
        print(
            f"local cluster, {args.workers} workers:      {times['local']:7.1f} s "
            "(start-up included)",
            flush=True,
        )

        start = time.perf_counter()
        with dask_cluster(args.workers) as address:
            startup = time.perf_counter() - start
            start = time.perf_counter()
            tables["scheduler"] = sweep(plan, folder / "remote", scheduler=address, summarize=False)
            times["scheduler"] = time.perf_counter() - start
        print(
            f"dask scheduler + worker:       {times['scheduler']:7.1f} s "
            f"(their start-up, {startup:.1f} s, not included)",
            flush=True,
        )

    print(f"serial / local cluster:    {times['serial'] / times['local']:.2f}x")
    print(f"serial / scheduler+worker: {times['serial'] / times['scheduler']:.2f}x")
    reference = tables["serial"].set_index("run_id").sort_index()
    for name in ("local", "scheduler"):
        other = tables[name].set_index("run_id").sort_index()
        for key in ("mse", "spearman", "pearson", "pulses_applied"):
            same = int((reference[key] == other[key]).sum())
            worst = float(((reference[key] - other[key]).abs() / reference[key].abs()).max())
            print(
                f"{name} vs serial, {key}: {same}/{len(other)} runs bit-identical, "
                f"max relative difference {worst:.1e}"
            )
    failed = sum(int((t["status"] != "ok").sum()) for t in tables.values())
    print(f"failed runs: {failed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
