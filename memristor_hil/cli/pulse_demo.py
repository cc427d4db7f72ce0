"""``memristor-hil pulse-demo``: pulse an emulated crossbar and show R(n)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    import numpy as np

    from memristor_hil import PulseBatch, open_crossbar

    from ._progress import progress_bar

    if args.pulses < 1 or args.steps < 1:
        raise ValueError("--pulses and --steps must be at least 1")
    totals = np.unique(np.geomspace(1, args.pulses, args.steps).round().astype(int))
    with open_crossbar(args.url) as xbar:
        rows, cols = np.divmod(np.arange(xbar.size), xbar.shape[1])
        print(f"{xbar.identity}: {xbar.shape[0]}x{xbar.shape[1]} cells")
        history = [xbar.read(rows, cols)]
        done = 0
        with progress_bar(int(totals[-1]), "pulses per cell", unit="pulse") as bar:
            for total in totals:
                batch = PulseBatch(rows, cols, pulses=int(total - done))
                history.append(xbar.apply(batch, read_back=True))
                bar.update(int(total - done))
                done = total
        print(f"{len(totals)} batches applied: {done} pulses per cell")
    counts = np.concatenate([[0], totals])
    r = np.array(history)  # (steps + 1, cells)
    median = np.median(r, axis=1)
    print(f"{'pulses':>8} {'median R (ohm)':>15} {'min R':>12} {'max R':>12}")
    for i in np.unique(np.linspace(0, len(counts) - 1, 8).round().astype(int)):
        print(f"{counts[i]:>8} {median[i]:>15.4g} {r[i].min():>12.4g} {r[i].max():>12.4g}")
    write_plot(counts, r, args.out, source=describe_source(args.url))
    print(f"plot: {args.out}")
    return 0


def describe_source(url: str) -> str:
    """Where the plotted devices come from, for the plot's title."""
    from memristor_hil.url_options import query_options

    scheme = url.partition("://")[0].lower()
    if scheme != "emulator":
        return f"measured on {url}"
    _, query = query_options(url)
    if "params" in query:
        return f"emulated, drawn from the fitted parameters in {Path(query['params']).name}"
    sigma = query.get("sigma", "0")
    return f"emulated, drawn from the default model (variability sigma = {sigma})"


def write_plot(counts: Any, r: Any, path: Path, source: str = "") -> None:
    """R against pulses of every device (one line each), their median, on a log pulse axis.

    The log axis cannot show 0 pulses: the initial reading is drawn at 0.5 and labelled 0.
    """
    import matplotlib
    import matplotlib.ticker
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = np.where(counts > 0, counts, 0.5)
    r = r / 1e6  # megaohm
    ax.plot(x, r, color="tab:blue", alpha=0.3, lw=0.8)
    ax.plot([], [], color="tab:blue", alpha=0.5, lw=0.8, label=f"each of {r.shape[1]} devices")
    ax.plot(x, np.median(r, axis=1), color="black", lw=2, label="median")
    ax.set_xscale("log")
    ticks = [0.5] + [10.0**k for k in range(0, int(np.log10(max(counts[-1], 1))) + 1)]
    ax.set_xticks(ticks, ["0"] + [f"$10^{{{int(np.log10(t))}}}$" for t in ticks[1:]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axvline(0.75, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("SET pulses applied (initial reading drawn at the left, labelled 0)")
    ax.set_ylabel("resistance (megaohm)")
    title = f"R(n) of {r.shape[1]} power-law memristors"
    ax.set_title(title + (f"\n{source}" if source else ""), fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
