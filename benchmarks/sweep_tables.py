"""A finished sweep's published record: a per-run CSV and the Markdown tables of docs/results.md.

Reads a sweep's ``results.parquet`` (``memristor-hil sweep ... --out DIR``) and prints, per task,
the rules' mean test MSE with its 95% confidence interval, the ratios to tuned PES and to the
published rule (``memristor_hil.experiments.summary.summarize``), the mean CPU and wall seconds
per run; for tasks with several test blocks (paper 2) also the learning curve in numbers (mean
total absolute error per test block, over the seeds). ``--csv`` writes one row per run (the
columns the tables come from), small enough to commit.

Usage::

    python benchmarks/sweep_tables.py out/sweeps/paper-2-product/results.parquet \\
        --csv docs/results/paper-2-product-runs.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from memristor_hil.experiments.results import ResultTable
from memristor_hil.experiments.summary import TASK, summarize

#: The per-run columns kept in the CSV.
RUN_COLUMNS = [
    "task", "stimulus", "n_pre", "n_post", "seconds", "label", "settings", "seed", "mse",
    "constant_mse", "spearman", "final_block_error", "pulses_applied", "sim_cpu_s", "sim_wall_s",
    "wall_s", "block_errors",
]  # fmt: skip


def tables(frame: pd.DataFrame) -> str:
    """The Markdown tables of one sweep's runs (successful runs only)."""
    ok = frame[frame["status"] == "ok"]
    table = summarize(ok)
    lines = []
    for key, group in table.groupby(TASK, dropna=False, sort=True):
        task, stimulus, n_pre, n_post, seconds = key
        runs = ok[(ok[TASK] == pd.Series(key, index=TASK)).all(axis=1)]
        cpu = runs.groupby("label")["sim_cpu_s"].mean()
        lines += [
            f"**{task}** ({stimulus}, {n_pre}/{n_post} neurons, {seconds:g} s)",
            "",
            "| rule | seeds | test MSE (mean ± 95% CI) | / tuned PES | / published "
            "| CPU s | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, r in group.iterrows():
            mark = " \\*" if r["label"] == r["baseline"] else ""
            lines.append(
                f"| {r['label']}{mark} | {r['seeds']} | {r['mse_mean']:.4f} ± {r['mse_ci95']:.4f} "
                f"| {_ratio(r['ratio_to_pes'])} | {_ratio(r['ratio_to_one'])} "
                f"| {cpu[r['label']]:.1f} | {r['wall_s']:.1f} |"
            )
        lines += ["", "\\* tuned PES: the best of the PES rates on this task", ""]
        blocks = runs.groupby("label")["block_errors"].apply(
            lambda b: np.mean(np.stack([np.asarray(x, dtype=float) for x in b]), axis=0)
        )
        if blocks.map(len).max() > 1:
            n = blocks.map(len).max()
            lines += [
                "Learning curve: total absolute error of test block k (after k learning "
                "blocks), mean over the seeds:",
                "",
                "| rule | " + " | ".join(str(k + 1) for k in range(n)) + " |",
                "|---|" + "---|" * n,
            ]
            for label in group["label"]:
                curve = blocks[label]
                lines.append(f"| {label} | " + " | ".join(f"{v:.0f}" for v in curve) + " |")
            lines.append("")
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a sweep's results.parquet")
    parser.add_argument("--csv", help="write one row per run here")
    args = parser.parse_args(argv)
    frame = ResultTable(args.results).frame()  # older tables read in today's columns
    if args.csv:
        runs = frame[frame["status"] == "ok"][RUN_COLUMNS].copy()
        runs["block_errors"] = [" ".join(f"{v:.2f}" for v in b) for b in runs["block_errors"]]
        runs.sort_values(["task", "stimulus", "label", "seed"]).to_csv(
            args.csv, index=False, float_format="%.6g"
        )
    print(tables(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
