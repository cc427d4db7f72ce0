"""mPES in NengoDL (native TensorFlow builder) against ``nengo.Simulator``, side by side.

The network of ``bench_mpes.py`` (a sine drives ``pre``; the learned neuron-to-neuron
connection ``pre -> post`` of N x N devices; an error ensemble of 100 neurons feeds mPES;
dt = 1 ms; in-process emulator, float32 devices) runs in ``nengo.Simulator`` and in
``nengo_dl.Simulator`` with ``minibatch_size`` 1 and 32 (32 independent simulations, each
with its own devices). Printed: wall time per simulated second (build and the first,
graph-tracing call excluded), per minibatch item for NengoDL, and the device TensorFlow ran on
(a GPU when one is visible, else the CPU).

Needs the ``[dl]`` environment (docs/nengodl.md)::

    .venv-dl/bin/python benchmarks/bench_dl.py                 # 100 (0.2 s), 1000 (0.05 s)
    .venv-dl/bin/python benchmarks/bench_dl.py --sizes 100 --seconds 1
    .venv-dl/bin/python benchmarks/bench_dl.py --pulses one --minibatch 1
    .venv-dl/bin/python benchmarks/bench_dl.py --sizes 1000 --error-threshold 1  # sparse
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nengo  # noqa: E402
import nengo_dl  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from memristor_hil import mPES  # noqa: E402

DT = 0.001
# Nengo's decoder cache is shared between environments; the main one's (NumPy 2) entries
# cannot be read under this one's NumPy 1.24.
nengo.rc["decoder_cache"]["enabled"] = "False"


def build(n: int, rule: nengo.learning_rules.LearningRuleType, seed: int = 0):
    """The benchmark network (bench_mpes.py's) with ``rule`` on the learned connection."""
    with nengo.Network(seed=seed) as net:
        nengo_dl.configure_settings(stateful=True)
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t / 4))
        pre = nengo.Ensemble(n, 1, seed=seed)
        post = nengo.Ensemble(n, 1, seed=seed + 1)
        error = nengo.Ensemble(100, 1, seed=seed + 2)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((n, n)),
            learning_rule_type=rule,
        )
        nengo.Connection(post, error)
        nengo.Connection(stim, error, function=lambda x: x**2, transform=-1)
        nengo.Connection(error, conn.learning_rule)
        if isinstance(rule, mPES):
            net.p_pulses = nengo.Probe(conn.learning_rule, "pulses")
    return net


def numpy_time(n: int, seconds: float, rule: mPES) -> tuple[float, float]:
    """(wall s per simulated s, pulses per simulated s) in nengo.Simulator."""
    net = build(n, rule)
    with nengo.Simulator(net, dt=DT, progress_bar=False) as sim:
        sim.run_steps(10)  # first call: numba kernels load
        start = time.perf_counter()
        sim.run(seconds)
        wall = time.perf_counter() - start
        pulses = float(sim.data[net.p_pulses][10:].sum())
    return wall / seconds, pulses / seconds


def dl_time(
    n: int, seconds: float, minibatch: int, device: str, rule: nengo.learning_rules.LearningRuleType
) -> tuple[float, float]:
    """(wall s per simulated s for the whole minibatch, pulses per simulated s per item)."""
    net = build(n, rule)
    steps = round(seconds / DT)
    with nengo_dl.Simulator(
        net, dt=DT, minibatch_size=minibatch, device=device, progress_bar=False
    ) as sim:
        sim.run_steps(steps)  # the first call traces the graph
        sim.reset(include_probes=True)
        start = time.perf_counter()
        sim.run_steps(steps)
        wall = time.perf_counter() - start
        pulses = (
            0.0
            if not isinstance(rule, mPES)
            else float(np.asarray(sim.data[net.p_pulses]).sum()) / minibatch
        )
    return wall / seconds, pulses / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=0.2, help="simulated s per timed run")
    parser.add_argument(
        "--large-seconds",
        type=float,
        default=0.05,
        help="simulated s per timed run from 1000x1000 up (dense TF work grows as N^2 * items)",
    )
    parser.add_argument("--minibatch", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--pulses",
        default="scaled",
        help="mPES pulse policy (default scaled: the native builder runs 'one', 'scaled' and "
        "'stochastic'; the default 'learning_rate' runs through the host call, minibatch 1 only)",
    )
    parser.add_argument(
        "--error-threshold",
        type=float,
        default=None,
        help="mPES error_threshold (default the rule's, 1e-5): a larger one pulses fewer cells "
        "per step (1.0 pulses about 5%% of them at 1000x1000), where the native step, which "
        "computes only the pulsed cells, gains most",
    )
    args = parser.parse_args(argv)
    threshold = {} if args.error_threshold is None else {"error_threshold": args.error_threshold}
    rule = mPES(pulses=args.pulses, **threshold)

    gpus = tf.config.list_physical_devices("GPU")
    device = "/gpu:0" if gpus else "/cpu:0"
    where = gpus[0].name if gpus else f"CPU ({os.cpu_count()} cores visible)"
    print(
        f"TensorFlow {tf.__version__} on {device} = {where}; nengo {nengo.__version__}, "
        f"nengo-dl {nengo_dl.__version__}; {args.seconds} s simulated per run "
        f"({args.large_seconds} s from 1000x1000), dt = 1 ms; "
        f"mPES(pulses={args.pulses!r}, error_threshold={rule.error_threshold}) on the "
        "in-process emulator (float32 devices)"
    )
    print(
        f"{'size':>11} {'simulator':>22} {'wall s / sim s':>15} {'per item':>10} "
        f"{'vs NumPy':>9} {'pulses/s/item':>14}"
    )
    for n in args.sizes:
        seconds = args.seconds if n < 1000 else args.large_seconds
        base, pulses = numpy_time(n, seconds, rule)
        print(
            f"{n:>5}x{n:<5} {'nengo (NumPy)':>22} {base:>15.3f} {base:>10.3f} {1:>8.2f}x "
            f"{pulses:>14.3g}",
            flush=True,
        )
        wall, _ = dl_time(n, seconds, 1, device, rule=nengo.PES())
        print(
            f"{n:>5}x{n:<5} {'nengo_dl PES mb=1':>22} {wall:>15.3f} {wall:>10.3f} "
            f"{base / wall:>8.2f}x {'-':>14}",
            flush=True,
        )
        for mb in args.minibatch:
            wall, pulses = dl_time(n, seconds, mb, device, rule)
            label = f"nengo_dl mb={mb}"
            print(
                f"{n:>5}x{n:<5} {label:>22} {wall:>15.3f} {wall / mb:>10.3f} "
                f"{base / (wall / mb):>8.2f}x {pulses:>14.3g}",
                flush=True,
            )
    print(
        "wall s / sim s: for the whole minibatch; per item: divided by minibatch_size; "
        "vs NumPy: items simulated per unit of wall time relative to nengo.Simulator; "
        "nengo_dl PES: Nengo's own PES on the same network in NengoDL (its baseline cost)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
