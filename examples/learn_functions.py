"""Paper 1's task: learn f(x) = x and f(x) = x^2 with mPES and with Nengo's PES.

Tiotto et al. 2021 ("Learning to Approximate Functions Using Nb-doped SrTiO3 Memristors"):
pre, post and error ensembles; a learned pre.neurons -> post.neurons connection; a sine input
of period 4 s; 30 s at dt = 1 ms, the first 3/4 learning and the last 1/4 testing with the
error ensemble inhibited. Prints the test-period MSE and Spearman rho of each rule on the same
network (mPES as published, mPES with stochastic pulse counts, and PES) and writes a PNG
(decoded output against target; sampled weights over time).

Usage::

    python examples/learn_functions.py                 # 30 s per rule and function
    python examples/learn_functions.py --seconds 8     # a quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from memristor_hil.experiments import function_learning as fl

FUNCTIONS = {"x": lambda x: x, "x^2": lambda x: x**2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="simulated s per run")
    parser.add_argument("--neurons", type=int, default=100, help="pre and post neurons")
    parser.add_argument("--sigma", type=float, default=0.15, help="device variability")
    parser.add_argument(
        "--pes-rate", type=float, default=fl.PES_LEARNING_RATE, help="PES learning rate"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/learn_functions.png"))
    args = parser.parse_args(argv)

    learn_until = 0.75 * args.seconds
    results = []
    for name, function in FUNCTIONS.items():
        rules = fl.standard_rules(args.sigma, args.seed, pes_rate=args.pes_rate)
        task = fl.LearningTask(
            name=name,
            function=function,
            stimulus=lambda t: np.sin(2 * np.pi * t / 4),
            learning=lambda t: t < learn_until,
            seconds=args.seconds,
        )
        results += fl.compare(
            rules,
            task,
            n_pre=args.neurons,
            n_post=args.neurons,
            seed=args.seed,
        )
    fl.print_table(results)
    fl.plot_results(results, args.out, "Paper 1: learning x and x^2")
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
