"""Paper 2's product task: learn x1 * x2 with mPES and with Nengo's PES.

Tiotto et al. (mPES, "A Robust Learning Rule for Memristor-based Synapses Competitive with
Supervised Learning"): 200 pre and 200 post neurons, 50 s, alternating 2.5 s blocks of
learning and testing (error inhibited while testing). The two inputs are sines of periods
4 s and 6.47 s (incommensurate, so over time they cover the square). Prints the testing
blocks' MSE and Spearman rho of each rule on the same network (mPES's default, mPES as
published, PES), plus the mean absolute error of the last testing block, and
writes a PNG.

Usage::

    python examples/learn_product.py                  # 50 s per rule
    python examples/learn_product.py --seconds 10     # a quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from memristor_hil.experiments import function_learning as fl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=50.0, help="simulated s per run")
    parser.add_argument("--neurons", type=int, default=200, help="pre and post neurons")
    parser.add_argument("--block", type=float, default=2.5, help="learning/testing block, s")
    parser.add_argument("--sigma", type=float, default=0.15, help="device variability")
    parser.add_argument(
        "--pes-rate", type=float, default=fl.PES_LEARNING_RATE, help="PES learning rate"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/learn_product.png"))
    args = parser.parse_args(argv)

    block = args.block

    def stimulus(t: float) -> list[float]:
        return [np.sin(2 * np.pi * t / 4), np.sin(2 * np.pi * t / 4 * 0.618 + 1.0)]

    task = fl.LearningTask(
        name="x1*x2",
        function=lambda x: x[0] * x[1],
        stimulus=stimulus,
        learning=lambda t: int(t // block) % 2 == 0,  # learn, test, learn, test, ...
        seconds=args.seconds,
    )
    results = fl.compare(
        fl.standard_rules(args.sigma, args.seed, pes_rate=args.pes_rate),
        task,
        dimensions=2,
        n_pre=args.neurons,
        n_post=args.neurons,
        seed=args.seed,
        weights_every=0.5,
    )
    fl.print_table(results)
    for r in results:
        last = r.testing & (r.t > r.t[r.testing][-1] - block)
        mae = np.mean(np.abs(r.output[last] - r.target[last]))
        print(f"{r.rule}: mean absolute error in the last testing block {mae:.4f}")
    fl.plot_results(results, args.out, "Paper 2: learning x1*x2 (2.5 s learn/test blocks)")
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
