"""``memristor-hil pulse-demo``: pulse an emulated crossbar and show R(n)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from memristor_hil import PulseBatch, open_crossbar

ORDER = 20
DEFAULT_URL = "emulator://?rows=4&cols=8&seed=0&sigma=0.15"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pulse-demo",
        help="pulse a crossbar and plot resistance against pulse count",
        description="Apply SET pulses to every cell of a crossbar in growing batches, read the "
        "resistances back after each batch, print a table and write a plot of R(n).",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="crossbar URL")
    parser.add_argument("--pulses", type=int, default=10_000, help="total pulses per cell")
    parser.add_argument("--steps", type=int, default=30, help="number of batches (log-spaced)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/pulse_demo_r_of_n.png"),
        help="where to write the plot",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    totals = np.unique(np.geomspace(1, args.pulses, args.steps).round().astype(int))
    with open_crossbar(args.url) as xbar:
        rows, cols = np.divmod(np.arange(xbar.size), xbar.shape[1])
        print(f"{xbar.identity}: {xbar.shape[0]}x{xbar.shape[1]} cells")
        history = [xbar.read(rows, cols)]
        done = 0
        for step, total in enumerate(totals, 1):
            batch = PulseBatch(rows, cols, pulses=int(total - done))
            history.append(xbar.apply(batch, read_back=True))
            done = total
            if sys.stdout.isatty():
                print(f"\r  batch {step}/{len(totals)}: {done} pulses per cell", end="", flush=True)
        print(f"\r  {len(totals)} batches applied: {done} pulses per cell")
    counts = np.concatenate([[0], totals])
    r = np.array(history)  # (steps + 1, cells)
    median = np.median(r, axis=1)
    print(f"{'pulses':>8} {'median R (ohm)':>15} {'min R':>12} {'max R':>12}")
    for i in np.unique(np.linspace(0, len(counts) - 1, 8).round().astype(int)):
        print(f"{counts[i]:>8} {median[i]:>15.4g} {r[i].min():>12.4g} {r[i].max():>12.4g}")
    write_plot(counts, r, args.out)
    print(f"plot: {args.out}")
    return 0


def write_plot(counts: np.ndarray, r: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(np.maximum(counts, 0.5), r, color="tab:blue", alpha=0.3, lw=0.8)
    ax.plot(np.maximum(counts, 0.5), np.median(r, axis=1), color="black", lw=2, label="median")
    ax.set_xscale("log")
    ax.set_xlabel("SET pulses applied")
    ax.set_ylabel("resistance (ohm)")
    ax.set_title(f"Power-law memristors: R(n) of {r.shape[1]} devices")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
