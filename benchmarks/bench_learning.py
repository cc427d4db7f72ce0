"""Learning quality of mPES's pulse policies against tuned Nengo PES, on the published tasks.

For each task and seed, every rule runs on the identical network (``memristor_hil.experiments.
function_learning``: 100 pre and post neurons, device variability 0.15, float32 devices): PES at
1e-5, 3e-5 and 1e-4 (the best of them per task is "tuned PES"), mPES as published
(``pulses="one"``), mPES's default (``learning_rate`` policy at 1e-5 with the pair balance
and refresh), and any candidates named (``--candidates learning_rate=3e-5 mask=spikes``).
Prints the mean test MSE over the seeds, Spearman's rho, the ratio to tuned PES and to the
published one-pulse rule, and the mean wall time of each rule.

Tasks: ``x`` and ``x^2`` of a sine of period 4 s (paper 1: the first 3/4 learn, the last 1/4
tests), the same on white noise (``x-white``, ``x^2-white``), and ``x1*x2`` (paper 2: 2.5 s
learn/test blocks).

Usage::

    python benchmarks/bench_learning.py                          # x, x^2; 2 seeds of 12 s
    python benchmarks/bench_learning.py --tasks x x^2 x1*x2 x-white x^2-white \\
        --seeds 10 --seconds 30                                  # the full table (hours)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import nengo
import numpy as np

from memristor_hil import mPES
from memristor_hil.experiments import function_learning as fl

PES_RATES = (1e-5, 3e-5, 1e-4)


def _sine(t: float) -> float:
    return np.sin(2 * np.pi * t / 4)


def _two_sines(t: float) -> list[float]:
    return [np.sin(2 * np.pi * t / 4), np.sin(2 * np.pi * t / 4 * 0.618 + 1.0)]


def tasks(seconds: float, seed: int) -> dict[str, dict[str, Any]]:
    """Each task's function, stimulus, schedule and network options."""
    learn_until = 0.75 * seconds
    white = nengo.processes.WhiteSignal(period=max(seconds, 2.0), high=1.0, rms=0.5, seed=seed)
    paper1 = {"learning": lambda t: t < learn_until}
    return {
        "x": {"function": lambda x: x, "stimulus": _sine, **paper1},
        "x^2": {"function": lambda x: x**2, "stimulus": _sine, **paper1},
        "x-white": {"function": lambda x: x, "stimulus": white, **paper1},
        "x^2-white": {"function": lambda x: x**2, "stimulus": white, **paper1},
        "x1*x2": {
            "function": lambda x: x[0] * x[1],
            "stimulus": _two_sines,
            "learning": lambda t: int(t // 2.5) % 2 == 0,
            "dimensions": 2,
        },
    }


def rules(sigma: float, seed: int, candidates: list[str]) -> list[tuple[str, Any]]:
    """PES at each rate, mPES as published, and the mPES candidates named."""
    out: list[tuple[str, Any]] = [(f"PES {r:g}", nengo.PES(learning_rate=r)) for r in PES_RATES]
    out.append(("mPES one", mPES(variability=sigma, seed=seed, pulses="one")))
    out.append(("mPES default", mPES(variability=sigma, seed=seed)))
    for spec in candidates:
        kwargs: dict[str, Any] = {}
        for part in spec.split(","):
            key, value = part.split("=")
            if key in ("mask", "pulses"):
                kwargs[key] = value
            elif key == "balance":
                kwargs[key] = value not in ("0", "false", "False")
            else:
                kwargs[key] = None if value == "none" else float(value)
        if "max_pulses" in kwargs:
            kwargs["max_pulses"] = int(kwargs["max_pulses"])
        out.append((f"mPES {spec}", mPES(variability=sigma, seed=seed, **kwargs)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["x", "x^2"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0, help="simulated s per run")
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--sigma", type=float, default=0.15, help="device variability")
    parser.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        help="more mPES variants: comma-separated key=value (learning_rate, mask, max_pulses, "
        "pulses, refresh, voltage, balance; refresh=none turns the refresh off, balance=0 "
        "the balance)",
    )
    args = parser.parse_args(argv)

    results: dict[tuple[str, str], list[fl.Result]] = {}
    for seed in range(args.seeds):
        all_tasks = tasks(args.seconds, seed)
        for task in args.tasks:
            spec = dict(all_tasks[task])
            run_task = fl.LearningTask(
                name=task,
                function=spec.pop("function"),
                stimulus=spec.pop("stimulus"),
                learning=spec.pop("learning"),
                seconds=args.seconds,
            )
            for name, rule in rules(args.sigma, seed, args.candidates):
                r = fl.run(
                    name,
                    rule,
                    run_task,
                    progress=False,
                    n_pre=args.neurons,
                    n_post=args.neurons,
                    seed=seed,
                    **spec,
                )
                results.setdefault((task, name), []).append(r)
                print(f"  seed {seed} {task} {name}: MSE {r.mse:.5f}", file=sys.stderr)

    print(
        f"{args.seeds} seed(s), {args.seconds} s simulated per run, {args.neurons} neurons, "
        f"variability {args.sigma}, float32 devices; load average {os.getloadavg()[0]:.1f}"
    )
    header = f"{'task':<10} {'rule':<28} {'MSE':>9} {'Spearman':>9} {'/PES*':>7} {'/one':>6}"
    print(header + f" {'wall s':>7}")
    for task in args.tasks:
        mean = {
            name: np.mean([r.mse for r in rs]) for (t, name), rs in results.items() if t == task
        }
        tuned = min(v for k, v in mean.items() if k.startswith("PES"))
        best_rate = min((v, k) for k, v in mean.items() if k.startswith("PES"))[1]
        one = mean["mPES one"]
        for (t, name), rs in results.items():
            if t != task:
                continue
            rho = np.mean([r.spearman for r in rs])
            wall = np.mean([r.wall for r in rs])
            mark = " *" if name == best_rate else ""
            print(
                f"{task:<10} {name + mark:<28} {mean[name]:>9.5f} {rho:>9.4f} "
                f"{mean[name] / tuned:>6.2f}x {mean[name] / one:>5.2f}x {wall:>7.1f}"
            )
    print("* tuned PES: the best of the PES rates on that task")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
