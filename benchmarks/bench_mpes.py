"""mPES against Nengo's PES on the identical network, measured side by side in one process.

Network (shared/reference/baselines.md): a sine input drives ``pre`` (N neurons); a learned
neuron-to-neuron connection goes to ``post`` (N neurons); an error ensemble of 100 neurons
computes ``post - input**2`` and feeds the rule; dt = 1 ms. Each size is run with PES and with
mPES (in-process emulator), alternating, and the best of ``--repeats`` wall times of
``sim.run`` (build excluded) is compared. The seed's per-device-object Node
(``benchmarks/seed_node.py``) runs at 100x100 on a shorter run for the before/after.

Usage::

    python benchmarks/bench_mpes.py                    # 1 s simulated per run
    python benchmarks/bench_mpes.py --seconds 5 --repeats 3 --dtype float64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nengo
import numpy as np

from memristor_hil import PowerLaw, mPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_node  # noqa: E402 - the benchmark folder's own module


def build(n: int, rule_type: nengo.learning_rules.LearningRuleType, seed: int = 0):
    """The benchmark network with ``rule_type`` on the learned connection."""
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t / 4))
        pre = nengo.Ensemble(n, 1, seed=seed)
        post = nengo.Ensemble(n, 1, seed=seed + 1)
        error = nengo.Ensemble(100, 1, seed=seed + 2)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons, post.neurons, transform=np.zeros((n, n)), learning_rule_type=rule_type
        )
        nengo.Connection(post, error)
        nengo.Connection(stim, error, function=lambda x: x**2, transform=-1)
        nengo.Connection(error, conn.learning_rule)
    return net


def wall_time(net: nengo.Network, seconds: float) -> float:
    """Seconds of wall time for ``sim.run(seconds)``, build excluded."""
    with nengo.Simulator(net, progress_bar=False) as sim:
        start = time.perf_counter()
        sim.run(seconds)
        return time.perf_counter() - start


def seed_node_time(n: int, seconds: float) -> float:
    """Wall time of the seed's per-device-object Node network (``seed_node.py``)."""
    net = seed_node.build(n)
    with nengo.Simulator(net, progress_bar=False) as sim:
        start = time.perf_counter()
        sim.run(seconds)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="simulated s per run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per rule; best counts")
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32", "both"],
        default="both",
        help="emulator state precision (ms/step columns; ratio = mPES/PES wall time)",
    )
    parser.add_argument(
        "--node-seconds", type=float, default=0.3, help="simulated s for the seed Node (0: skip)"
    )
    args = parser.parse_args(argv)

    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    models = {dt: PowerLaw(dtype=dt) for dt in dtypes}
    for model in models.values():
        wall_time(build(20, mPES(model=model)), 0.01)  # load the compiled kernels once
    print(
        f"nengo {nengo.__version__}, numpy {np.__version__}; {args.seconds} s simulated, "
        f"dt = 1 ms, best of {args.repeats} alternating runs; mPES on the in-process emulator"
    )
    header = f"{'size':>11} {'PES ms/step':>12}"
    for dt in dtypes:
        header += f" {'mPES ' + dt:>14} {'ratio':>6}"
    print(header)
    pes_100 = None
    for n in args.sizes:
        times: dict[str, list[float]] = {"pes": [], **{dt: [] for dt in dtypes}}
        for repeat in range(args.repeats):
            times["pes"].append(wall_time(build(n, nengo.PES()), args.seconds))
            for dt, model in models.items():
                times[dt].append(wall_time(build(n, mPES(model=model)), args.seconds))
            print(f"  {n}x{n}: run {repeat + 1}/{args.repeats} done", file=sys.stderr)
        steps = round(args.seconds / 0.001)
        pes = min(times["pes"])
        if n == 100:
            pes_100 = pes
        row = f"{n:>5}x{n:<5} {1e3 * pes / steps:>12.3f}"
        for dt in dtypes:
            mpes = min(times[dt])
            row += f" {1e3 * mpes / steps:>14.3f} {mpes / pes:>5.2f}x"
        print(row)
    if args.node_seconds > 0:
        node = seed_node_time(100, args.node_seconds)
        pes = pes_100 if pes_100 is not None else wall_time(build(100, nengo.PES()), 1.0)
        pes_seconds = args.seconds if pes_100 is not None else 1.0
        per_s = node / args.node_seconds
        print(
            f"seed per-device Node, 100x100: {node:.2f} s for {args.node_seconds} s simulated "
            f"= {per_s / (pes / pes_seconds):.1f}x PES"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
