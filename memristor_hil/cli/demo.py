"""``memristor-hil demo``: learn x^2 with mPES on emulated memristors, beside Nengo's PES."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="learn f(x) = x^2 with mPES on emulated memristors and compare with PES",
        description="Learn f(x) = x^2 through a neuron-to-neuron connection whose weights are "
        "pairs of power-law memristors (mPES, on the built-in emulator), and through the same "
        "network with Nengo's PES. The first 3/4 of the run learns, the last 1/4 tests with "
        "the error inhibited. Prints test-period MSE and Spearman rho, writes a plot.",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="simulated seconds per rule (default 20)"
    )
    parser.add_argument("--neurons", type=int, default=100, help="pre and post neurons")
    parser.add_argument(
        "--crossbar",
        default=None,
        help="crossbar URL for mPES (default: an in-process emulator sized to the connection)",
    )
    parser.add_argument(
        "--sigma", type=float, default=0.15, help="device-to-device variability (default 0.15)"
    )
    parser.add_argument(
        "--pes-rate", type=float, default=1e-5, help="PES learning rate (default 1e-5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="network and device seed")
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo_x_squared.png"), help="where to write the plot"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from memristor_hil.experiments import function_learning as fl

    if args.seconds <= 0 or args.neurons <= 0:
        raise ValueError("--seconds and --neurons must be positive")
    learn_until = 0.75 * args.seconds
    rules = fl.standard_rules(args.sigma, args.seed, args.crossbar, args.pes_rate)
    print(
        f"learning f(x) = x^2 with {args.neurons}x{args.neurons} learned weights: "
        f"{learn_until:g} s learning, {args.seconds - learn_until:g} s testing"
    )
    results = fl.compare(
        rules,
        "x^2",
        lambda x: x**2,
        lambda t: np.sin(2 * np.pi * t / 4),
        lambda t: t < learn_until,
        args.seconds,
        n_pre=args.neurons,
        n_post=args.neurons,
        seed=args.seed,
    )
    fl.print_table(results)
    fl.plot_results(results, args.out, "Learning x^2: mPES (memristors) and PES")
    print(
        "mPES: one SET pulse per active synapse per ms, as published; mPES-stoch: pulse "
        "counts rounded stochastically from |e_i a_j| (mPES(pulses='stochastic', max_pulses=2))"
    )
    print(f"plot: {args.out}")
    return 0
