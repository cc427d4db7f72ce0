"""A sweep's summary: statistics over seeds per (task, rule, settings), as Markdown and PNGs.

For every group of runs that differ only in their seed: the number of seeds, mean and standard
deviation of the test MSE, the half-width of its 95% confidence interval (Student's t over
seeds), mean Spearman and Pearson correlations, mean final-block error, and the ratio of the
mean test MSE to the PES baseline of the same task: the PES learning rate with the lowest
mean test MSE on it (the published comparison takes the best of several rates), and to the
published rule (``mPES one``) of the same task where the sweep ran it; and the
constant-output baseline: the MSE the best constant output scores in the test period (the
target's variance). A group whose mean test MSE is not below half of it did not learn
(``memristor_hil.experiments.function_learning.LEARNED_BELOW``, the demo's rule):
``summary.md`` says so above its table, and the plot draws the baseline as a dashed line.

Plots: ``mse_by_rule.png`` (each seed's test MSE per rule, with mean and 95% CI, one panel
per task) and, for tasks with several testing blocks (paper 2), ``learning_curves.png``
(mean total absolute error per testing block, with the seeds' range as a band, per rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["summarize", "write_summary"]

#: What makes two runs the same experiment up to their seed.
GROUP = ["task", "stimulus", "n_pre", "n_post", "seconds", "label", "settings"]
#: What makes two runs the same task (the PES baseline is chosen per task).
TASK = ["task", "stimulus", "n_pre", "n_post", "seconds"]
#: The published rule's label (``pulses="one"``): the second ratio's reference.
PUBLISHED = "mPES one"


def _ci95(values: np.ndarray) -> float:
    from scipy.stats import t

    n = len(values)
    if n < 2:
        return float("nan")
    return float(t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def summarize(frame: Any) -> Any:
    """One row per (task, rule, settings) group of successful runs: statistics over seeds."""
    import pandas as pd

    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"].groupby(GROUP, dropna=False).size()
    rows = []
    for key, group in ok.groupby(GROUP, dropna=False, sort=True):
        mse = group["mse"].to_numpy(dtype=float)
        row = dict(zip(GROUP, key, strict=True))
        row.update(
            rule=group["rule"].iloc[0],
            learning_rate=group["learning_rate"].iloc[0],
            seeds=len(group),
            failed=int(failed.get(key, 0)),
            mse_mean=float(mse.mean()),
            mse_std=float(mse.std(ddof=1)) if len(mse) > 1 else float("nan"),
            mse_ci95=_ci95(mse),
            spearman=float(group["spearman"].mean()),
            pearson=float(group["pearson"].mean()),
            final_block_error=float(group["final_block_error"].mean()),
            pulses_applied=float(group["pulses_applied"].mean()),
            constant_mse=float(group["constant_mse"].mean())
            if "constant_mse" in group
            else float("nan"),
            wall_s=float(group["wall_s"].mean()),
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # PES first, by learning rate; then mPES by policy and settings
    table = table.sort_values(
        [*TASK, "rule", "learning_rate", "label", "settings"], na_position="last"
    ).reset_index(drop=True)
    baseline = {}
    for key, group in table.groupby(TASK, dropna=False):
        pes = group[group["rule"] == "PES"]
        if not pes.empty:
            best = pes.loc[pes["mse_mean"].idxmin()]
            baseline[key] = (best["label"], best["mse_mean"])
    table["baseline"] = [
        baseline.get(tuple(r[k] for k in TASK), (None,))[0] for _, r in table.iterrows()
    ]
    table["ratio_to_pes"] = [
        r["mse_mean"] / baseline[key][1]
        if (key := tuple(r[k] for k in TASK)) in baseline
        else np.nan
        for _, r in table.iterrows()
    ]
    published = {
        key: group.loc[group["label"] == PUBLISHED, "mse_mean"].iloc[0]
        for key, group in table.groupby(TASK, dropna=False)
        if (group["label"] == PUBLISHED).any()
    }
    table["ratio_to_one"] = [
        r["mse_mean"] / published[key]
        if (key := tuple(r[k] for k in TASK)) in published
        else np.nan
        for _, r in table.iterrows()
    ]
    return table


def _not_learned(table: Any) -> Any:
    """The groups whose mean test MSE is not below half the constant-output baseline."""
    from memristor_hil.experiments.function_learning import LEARNED_BELOW

    return table[table["mse_mean"] >= LEARNED_BELOW * table["constant_mse"]]


def _warning(table: Any) -> list[str]:
    if table.empty:
        return []
    failed = _not_learned(table)
    if failed.empty:
        return []
    return [
        f"**Warning: {len(failed)} of {len(table)} groups did not learn**: their mean test MSE "
        "is not below half the constant-output baseline (the MSE of the best constant output, "
        "the target's variance over the test period; column 'constant MSE'). Ratios among "
        "them compare failures. Runs too short to learn (try more --seconds) and learning "
        "rates too high for the task do this.",
        "",
    ]


def _markdown(table: Any, frame: Any, title: str) -> str:
    lines = [
        f"# Sweep {title}: summary",
        "",
        f"{len(frame)} runs: {int((frame['status'] == 'ok').sum())} finished, "
        f"{int((frame['status'] != 'ok').sum())} failed. Test MSE: mean ± 95% CI over seeds "
        "(Student's t); ratio: mean test MSE / that of the task's best PES rate; / one: mean "
        "test MSE / that of the published rule (mPES one) on the task; wall s: mean wall time "
        "per run; constant MSE: "
        "what the best constant output scores (a rule learned when its MSE is below half).",
        "",
        *_warning(table),
        "| task | input | neurons | s | rule | device settings | seeds | test MSE (mean ± CI95) "
        "| std | constant MSE | Spearman | Pearson | final block error | ratio to PES | / one "
        "| wall s | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ratio = "" if np.isnan(r["ratio_to_pes"]) else f"{r['ratio_to_pes']:.2f}"
        if r["label"] == r["baseline"]:
            ratio = "1.00 (baseline)"
        lines.append(
            f"| {r['task']} | {r['stimulus']} | {r['n_pre']}/{r['n_post']} | {r['seconds']:g} "
            f"| {r['label']} | {r['settings']} | {r['seeds']} "
            f"| {r['mse_mean']:.4g} ± {_num(r['mse_ci95'])} | {_num(r['mse_std'])} "
            f"| {r['constant_mse']:.4g} | {r['spearman']:.3f} | {r['pearson']:.3f} "
            f"| {r['final_block_error']:.4g} | {ratio} | {_ratio(r['ratio_to_one'])} "
            f"| {r['wall_s']:.1f} | {r['failed']} |"
        )
    failures = frame[frame["status"] != "ok"]
    if len(failures):
        lines += ["", "## Failed runs", ""]
        for _, r in failures.iterrows():
            lines.append(
                f"- `{r['run_id']}` {r['task']} {r['label']} seed {r['seed']}: {r['error']}"
            )
        lines.append("")
        lines.append("Tracebacks: the `traceback` column of `results.parquet`.")
    return "\n".join(lines) + "\n"


def _ratio(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.2f}"


def _num(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2g}"


def _panel_title(key: tuple) -> str:
    task, stimulus, n_pre, n_post, seconds = key
    return f"{task} ({stimulus}, {n_pre}/{n_post} neurons, {seconds:g} s)"


def _plot_spread(frame: Any, table: Any, path: Path) -> None:
    from matplotlib.figure import Figure

    ok = frame[frame["status"] == "ok"]
    panels = list(table.groupby(TASK, dropna=False, sort=True))
    cols = min(2, len(panels))
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(7 * cols, 3.6 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (key, group) in zip(axes.flat, panels, strict=False):
        names = [
            f"{r['label']}\n{r['settings']}" if r["settings"] != "-" else r["label"]
            for _, r in group.iterrows()
        ]
        for i, (_, r) in enumerate(group.iterrows()):
            runs = ok[(ok["label"] == r["label"]) & (ok["settings"] == r["settings"])]
            for k, v in zip(TASK, key, strict=True):
                runs = runs[runs[k] == v]
            color = "tab:gray" if r["rule"] == "PES" else "tab:red"
            x = i + rng.uniform(-0.15, 0.15, len(runs))
            ax.scatter(x, runs["mse"], s=12, color=color, alpha=0.5, zorder=2)
            err = 0 if np.isnan(r["mse_ci95"]) else r["mse_ci95"]
            ax.errorbar(
                i + 0.3, r["mse_mean"], yerr=err, fmt="D", color="black", ms=4, capsize=3, zorder=3
            )
        constant = group["constant_mse"].mean()
        if np.isfinite(constant):
            ax.axhline(constant, color="tab:blue", ls="--", lw=1, label="constant output")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("test MSE")
        ax.set_title(_panel_title(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Test MSE per seed (dots; grey PES, red mPES), mean ± 95% CI (black), "
        "best constant output (dashed)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_curves(frame: Any, path: Path) -> bool:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ok = frame[frame["status"] == "ok"]
    ok = ok[ok["block_errors"].map(len) > 1]
    if ok.empty:
        return False
    panels = list(ok.groupby(TASK, dropna=False, sort=True))
    fig = Figure(figsize=(8, 3.6 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (key, runs) in zip(axes.flat, panels, strict=True):
        runs = runs.sort_values(["rule", "learning_rate", "label", "settings"], na_position="last")
        for (label, settings), group in runs.groupby(["label", "settings"], sort=False):
            curves = np.array([list(b) for b in group["block_errors"]], dtype=float)
            blocks = np.arange(1, curves.shape[1] + 1)
            name = label if settings == "-" else f"{label} ({settings})"
            (line,) = ax.plot(
                blocks, curves.mean(axis=0), marker="o", ms=3, label=f"{name}, {len(curves)} seeds"
            )
            if len(curves) > 1:
                ax.fill_between(
                    blocks, curves.min(axis=0), curves.max(axis=0), color=line.get_color(),
                    alpha=0.15,
                )  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("testing block")
        ax.set_ylabel("total absolute error")
        ax.set_title(_panel_title(key), fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Error per testing block: mean over seeds (line), min to max (band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_summary(frame: Any, out: str | Path, title: str = "sweep") -> list[Path]:
    """Write ``summary.md``, ``mse_by_rule.png`` and (paper 2) ``learning_curves.png``.

    Returns the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(frame)
    written = [out / "summary.md"]
    written[0].write_text(_markdown(table, frame, title))
    if not table.empty:
        _plot_spread(frame, table, out / "mse_by_rule.png")
        written.append(out / "mse_by_rule.png")
        if _plot_curves(frame, out / "learning_curves.png"):
            written.append(out / "learning_curves.png")
    return written
