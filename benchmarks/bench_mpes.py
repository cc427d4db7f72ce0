"""mPES against Nengo's PES on the identical network, measured side by side in one process.

Network (shared/reference/baselines.md): a sine input drives ``pre`` (N neurons); a learned
neuron-to-neuron connection goes to ``post`` (N neurons); an error ensemble of 100 neurons
computes ``post - input**2`` and feeds the rule; dt = 1 ms. Each size is run with PES and with
mPES (in-process emulator), alternating, and the best of ``--repeats`` wall times of
``sim.run`` (build excluded) is compared. The seed's per-device-object Node
(``benchmarks/seed_node.py``) runs at 100x100 on a shorter run for the before/after.

Times are the CPU time of this process (``--clock cpu``, the default: on a machine shared with
other jobs it is far steadier than wall time, which ``--clock wall`` measures instead); the
machine's load average is printed beside the table.

``--policies`` adds the scaled and stochastic pulse policies (``max_pulses=100``),
``learning_rate=1e-4`` and mPES's default (``learning_rate=1e-5`` with the pair refresh) to
the table (the main columns time the published ``pulses="one"``);
``--memory`` prints mPES's own arrays at 1000x1000 (emulator, operator, its signals) beside
PES's own signals, with their ratio, the model's resident memory, and checks with tracemalloc
that 1000 steps (after 200) allocate nothing that grows with the crossbar.

Usage::

    python benchmarks/bench_mpes.py                    # 1 s simulated per run
    python benchmarks/bench_mpes.py --seconds 5 --repeats 3 --dtype float64
    python benchmarks/bench_mpes.py --dtype float32 --policies --memory
    python benchmarks/bench_mpes.py --memory-only
    python benchmarks/bench_mpes.py --memory-only --memory-n 100 --memory-steps 10000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import nengo
import numpy as np

from memristor_hil import PowerLaw, mPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_node  # noqa: E402 - the benchmark folder's own module


def build(n: int, rule_type: nengo.learning_rules.LearningRuleType | None, seed: int = 0):
    """The benchmark network with ``rule_type`` on the learned connection (None: no learning,
    the error computed but not used)."""
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
        if rule_type is not None:
            nengo.Connection(error, conn.learning_rule)
    return net


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def wall_time(net: nengo.Network, seconds: float) -> float:
    """Seconds (of the chosen clock) for ``sim.run(seconds)``, build excluded."""
    with nengo.Simulator(net, progress_bar=False) as sim:
        start = clock()
        sim.run(seconds)
        return clock() - start


def _rss_mib() -> float:
    """Current resident memory of this process, MiB (from /proc; peak where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _arrays(obj: object, seen: dict[int, int]) -> None:
    """Record (in ``seen``: buffer address -> bytes) the NumPy arrays an object holds directly
    (attributes, and lists, tuples and dicts of them, one level down)."""
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    values += [
        getattr(obj, name) for name in getattr(type(obj), "__slots__", ()) if hasattr(obj, name)
    ]
    for value in values:
        items = value.values() if isinstance(value, dict) else value
        for item in items if isinstance(value, (list, tuple, dict)) else [value]:
            if isinstance(item, np.ndarray):
                base = (
                    item
                    if item.base is None or not isinstance(item.base, np.ndarray)
                    else item.base
                )
                seen[base.__array_interface__["data"][0]] = base.nbytes
            elif hasattr(item, "__dataclass_fields__"):
                _arrays(item, seen)


def _signal_bytes(sim: nengo.Simulator) -> dict[int, int]:
    """Buffer address -> bytes of every signal of a simulator (views counted once)."""
    signals: dict[int, int] = {}
    for value in sim.signals.values():
        base = value if not isinstance(value.base, np.ndarray) else value.base
        signals[base.__array_interface__["data"][0]] = base.nbytes
    return signals


def _model_bytes(sim: nengo.Simulator) -> dict[str, int]:
    """Bytes of NumPy arrays held by the emulator, the mPES operator(s) and Nengo's signals."""
    signals = _signal_bytes(sim)
    emulator: dict[int, int] = {}
    operator: dict[int, int] = {}
    for op, step in zip(sim.step_order, sim._steps, strict=True):
        if type(op).__name__ != "SimmPES":
            continue
        _arrays(op.use.crossbar, emulator)
        _arrays(op, operator)
        _arrays(op.use, operator)  # the build-time snapshot of the devices
        for cell in step.__closure__ or ():  # the per-connection runners make_step built
            contents = cell.cell_contents
            if isinstance(contents, np.ndarray):  # the step's read-back buffer
                operator[contents.__array_interface__["data"][0]] = contents.nbytes
            for runner in contents if isinstance(contents, list) else [contents]:
                if type(runner).__name__ == "PartRunner":
                    _arrays(runner, operator)
                    _arrays(runner.policy, operator)  # the pulse policy's own buffers
    for held in (emulator, operator):  # an operator's views of signals count as signals
        for address in set(held) & set(signals):
            del held[address]
    return {
        "emulator": sum(emulator.values()),
        "operator": sum(operator.values()),
        "signals": sum(signals.values()),
    }


def own_bytes(n: int) -> tuple[int, dict[str, int]]:
    """PES's own bytes and mPES's, by part, in the ``n x n`` network (built, not run).

    A rule's own signals are those its build adds to the same network without learning, plus
    the learned weights (which both rules update); mPES's own arrays add the emulator's and
    the operator's (its buffers, the policy's per-device state, the devices' snapshot).
    """
    sizes = {}
    for name, rule in (("none", None), ("PES", nengo.PES()), ("mPES", mPES())):
        with nengo.Simulator(build(n, rule), progress_bar=False) as sim:
            sim.run_steps(10)  # scratch buffers reach their size
            sizes[name] = sum(_signal_bytes(sim).values())
            if rule is not None and name == "mPES":
                parts = _model_bytes(sim)
    weights = n * n * 8  # the learned connection's float64 weights
    pes = sizes["PES"] - sizes["none"] + weights
    mpes = {
        "emulator": parts["emulator"],
        "operator": parts["operator"],
        "signals": sizes["mPES"] - sizes["none"] + weights,
    }
    return pes, mpes


def memory_report(n: int = 1000, steps: int = 1000, warmup: int = 200) -> None:
    """mPES's own arrays against PES's at ``n x n``, the model's resident memory, and
    tracemalloc's growth over ``steps`` after ``warmup`` steps."""
    pes, mpes = own_bytes(n)
    total = sum(mpes.values())
    print(
        f"memory, {n}x{n}: mPES's own arrays {total / 2**20:.1f} MiB ("
        + ", ".join(f"{name} {size / 2**20:.1f}" for name, size in mpes.items())
        + f"), PES's own signals {pes / 2**20:.1f} MiB: ratio {total / pes:.2f} "
        "(own: what the rule's build adds to the network without learning, plus the learned "
        "weights; mPES's also the emulator's and the operator's arrays)"
    )
    base = _rss_mib()
    net = build(n, mPES())
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(warmup)  # scratch buffers reach their size
        built = _rss_mib()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        sim.run_steps(steps)
        after = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    crossbar_bytes = 2 * n * n * 4
    print(
        f"    resident {built:.0f} MiB ({built - base:+.0f} MiB for the model and simulator); "
        f"over {steps} steps after {warmup}, tracemalloc: net growth {growth / 1024:.1f} KiB, "
        f"peak traced {peak / 2**20:.2f} MiB (crossbar state: {crossbar_bytes / 2**20:.1f} MiB)"
    )
    top = sorted(after.compare_to(before, "lineno"), key=lambda s: -abs(s.size_diff))[:3]
    for stat in top:
        print(f"    {stat}")
    verdict = "none" if abs(growth) < 0.01 * crossbar_bytes else "GROWS WITH THE CROSSBAR"
    print(
        f"    memory kept per step in proportion to the crossbar: {verdict}; largest transient "
        f"within a step: {peak / 2**20:.2f} MiB (the read-back goes into a buffer kept for "
        "the run; a refresh step's per-cell voltages are made when it comes)"
    )


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
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what is timed")
    parser.add_argument(
        "--policies", action="store_true", help="also time the scaled and stochastic policies"
    )
    parser.add_argument(
        "--memory", action="store_true", help="print a 1000x1000 model's memory (tracemalloc)"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the --memory report, no timings"
    )
    parser.add_argument("--memory-n", type=int, default=1000, help="--memory's network size")
    parser.add_argument(
        "--memory-steps", type=int, default=1000, help="steps --memory watches for growth"
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    if args.memory_only:
        memory_report(args.memory_n, args.memory_steps)
        return 0

    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    # the published one-pulse rule, whose hot path the main columns time
    rules = {dt: {"model": PowerLaw(dtype=dt), "pulses": "one"} for dt in dtypes}
    if args.policies:
        model = PowerLaw(dtype=dtypes[-1])
        for policy in ("scaled", "stochastic"):
            rules[policy] = {"model": model, "pulses": policy, "max_pulses": 100}
        rules["lr=1e-4"] = {"model": model, "learning_rate": 1e-4}
        rules["default"] = {}  # learning_rate=1e-5, read-back calibration, pair refresh
    for kwargs in rules.values():
        wall_time(build(20, mPES(**kwargs)), 0.01)  # load the compiled kernels once
    print(
        f"nengo {nengo.__version__}, numpy {np.__version__}; {args.seconds} s simulated, "
        f"dt = 1 ms, best of {args.repeats} alternating runs, {args.clock} time; mPES on the "
        f"in-process emulator ('scaled'/'stochastic': {dtypes[-1]} devices, max_pulses=100); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = f"{'size':>11} {'PES ms/step':>12}"
    for name in rules:
        label = "mPES " + name if name in dtypes else name
        header += f" {label:>14} {'ratio':>6}"
    print(header)
    pes_100 = None
    for n in args.sizes:
        times: dict[str, list[float]] = {"pes": [], **{name: [] for name in rules}}
        for repeat in range(args.repeats):
            times["pes"].append(wall_time(build(n, nengo.PES()), args.seconds))
            for name, kwargs in rules.items():
                times[name].append(wall_time(build(n, mPES(**kwargs)), args.seconds))
            print(f"  {n}x{n}: run {repeat + 1}/{args.repeats} done", file=sys.stderr)
        steps = round(args.seconds / 0.001)
        pes = min(times["pes"])
        if n == 100:
            pes_100 = pes
        row = f"{n:>5}x{n:<5} {1e3 * pes / steps:>12.3f}"
        for name in rules:
            mpes = min(times[name])
            row += f" {1e3 * mpes / steps:>14.3f} {mpes / pes:>5.2f}x"
        print(row)
    print(f"load average after the runs: {os.getloadavg()[0]:.1f}")
    if args.node_seconds > 0:
        node = seed_node_time(100, args.node_seconds)
        pes = pes_100 if pes_100 is not None else wall_time(build(100, nengo.PES()), 1.0)
        pes_seconds = args.seconds if pes_100 is not None else 1.0
        per_s = node / args.node_seconds
        print(
            f"seed per-device Node, 100x100: {node:.2f} s for {args.node_seconds} s simulated "
            f"= {per_s / (pes / pes_seconds):.1f}x PES"
        )
    if args.memory:
        memory_report(args.memory_n, args.memory_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
