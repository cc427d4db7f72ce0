"""Function-learning experiments: the published tasks, run with mPES beside Nengo's PES.

Used by ``memristor-hil demo`` and the scripts in ``examples/``. A task is a function of the
input to learn through a neuron-to-neuron connection ``pre -> post``. An error ensemble
computes ``post - f(input)`` and drives the rule while the schedule says "learn"; otherwise
it is inhibited, so those periods test what was learned (Tiotto et al. 2021: the first three
quarters learn, the last quarter tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nengo
import numpy as np

__all__ = [
    "PES_LEARNING_RATE",
    "Result",
    "build_network",
    "compare",
    "plot_results",
    "print_table",
    "run",
    "standard_rules",
]

#: PES's learning rate in the comparisons: the best of 1e-5, 3e-5 and 1e-4 (Nengo's default)
#: on paper 1's tasks with 100 neurons (30 s: test MSE for x 0.0041 / 0.0095 / tracking only).
PES_LEARNING_RATE = 1e-5

Schedule = Callable[[float], bool]


@dataclass
class Result:
    """One rule's run of a task: test-period metrics and the traces to plot."""

    rule: str
    task: str
    mse: float
    spearman: float
    wall: float
    t: np.ndarray = field(repr=False)
    output: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    testing: np.ndarray = field(repr=False)
    weights_t: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)


def build_network(
    rule_type: nengo.learning_rules.LearningRuleType,
    function: Callable[[np.ndarray], np.ndarray],
    stimulus: Callable[[float], Any],
    learning: Schedule,
    *,
    dimensions: int = 1,
    n_pre: int = 100,
    n_post: int = 100,
    n_error: int = 100,
    seed: int = 0,
    weights_every: float = 0.1,
    n_weights: int = 100,
) -> tuple[nengo.Network, dict[str, nengo.Probe]]:
    """The learning network; the same seed gives the same ensembles for every rule.

    Parameters
    ----------
    rule_type : nengo.learning_rules.LearningRuleType
        ``mPES(...)`` or ``nengo.PES(...)``.
    function : callable
        The function of the input to learn (vector in, scalar or vector out).
    stimulus : callable or nengo.Process
        ``t -> input`` (``dimensions`` values), or a process such as ``WhiteSignal``.
    learning : callable
        ``t -> bool``: learn (error on) or test (error inhibited).
    dimensions : int
        Input dimensions.
    n_pre, n_post, n_error : int
        Neurons of the pre, post and error ensembles.
    seed : int
        Network seed.
    weights_every : float
        Sampling period of the weights probe, in seconds.
    n_weights : int
        How many weights (a fixed random choice) to record over time.
    """
    out_dims = int(np.size(function(np.zeros(dimensions))))
    rng = np.random.default_rng(seed)
    picked = rng.choice(n_post * n_pre, size=min(n_weights, n_post * n_pre), replace=False)
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(stimulus, size_out=dimensions, label="input")
        pre = nengo.Ensemble(n_pre, dimensions, radius=np.sqrt(dimensions), label="pre")
        post = nengo.Ensemble(n_post, out_dims, label="post")
        error = nengo.Ensemble(n_error, out_dims, label="error")
        target = nengo.Node(size_in=out_dims, label="target")
        nengo.Connection(stim, pre, synapse=None)
        nengo.Connection(stim, target, function=function, synapse=None)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((n_post, n_pre)),
            learning_rule_type=rule_type,
        )
        nengo.Connection(post, error)
        nengo.Connection(target, error, transform=-1)
        nengo.Connection(error, conn.learning_rule)
        gate = nengo.Node(lambda t: 0.0 if learning(t) else 1.0, label="inhibit error")
        nengo.Connection(gate, error.neurons, transform=-20 * np.ones((n_error, 1)), synapse=None)
        probes = {
            "output": nengo.Probe(post, synapse=0.01),
            "target": nengo.Probe(target, synapse=0.01),
            "weights": nengo.Probe(conn, "weights", sample_every=weights_every),
        }
    net.picked_weights = picked
    return net, probes


def run(
    rule_name: str,
    rule_type: nengo.learning_rules.LearningRuleType,
    task: str,
    function: Callable[[np.ndarray], np.ndarray],
    stimulus: Callable[[float], Any],
    learning: Schedule,
    seconds: float,
    *,
    progress: bool = True,
    chunk: float = 1.0,
    **network: Any,
) -> Result:
    """Build and run one rule on one task, showing progress, and score the test periods."""
    net, probes = build_network(rule_type, function, stimulus, learning, **network)
    with nengo.Simulator(net, progress_bar=False) as sim:
        start = time.perf_counter()
        done = 0.0
        while done < seconds - 1e-9:
            step = min(chunk, seconds - done)
            sim.run(step)
            done += step
            if progress:
                _report(task, rule_name, done - step, done, seconds, time.perf_counter() - start)
        wall = time.perf_counter() - start
        if progress and sys.stderr.isatty():
            print(file=sys.stderr)
        t = sim.trange()
        output = sim.data[probes["output"]]
        target = sim.data[probes["target"]]
        weights_t = sim.trange(sample_every=probes["weights"].sample_every)
        weights = sim.data[probes["weights"]]
    weights = weights.reshape(len(weights), -1)[:, net.picked_weights]
    testing = np.array([not learning(ti) for ti in t])
    mse, rho = score(output[testing], target[testing])
    return Result(rule_name, task, mse, rho, wall, t, output, target, testing, weights_t, weights)


def _report(
    task: str, rule: str, before: float, done: float, seconds: float, elapsed: float
) -> None:
    """Progress on stderr: one updating line on a terminal, every ~10% otherwise."""
    line = f"  {task:<10} {rule:<12} {done:6.1f}/{seconds:g} s simulated, {elapsed:5.1f} s wall"
    if sys.stderr.isatty():
        print("\r" + line, end="", file=sys.stderr, flush=True)
    elif int(10 * done / seconds + 1e-9) > int(10 * before / seconds + 1e-9):
        print(line, file=sys.stderr, flush=True)


def score(output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean squared error and Spearman's rank correlation (over all output dimensions)."""
    from scipy.stats import spearmanr

    if len(output) == 0:
        raise ValueError("the schedule left no testing period to score")
    mse = float(np.mean((output - target) ** 2))
    rho = float(spearmanr(output.reshape(-1), target.reshape(-1)).statistic)
    return mse, rho


def standard_rules(
    sigma: float = 0.15,
    seed: int = 0,
    crossbar: Any = None,
    pes_rate: float = PES_LEARNING_RATE,
    stochastic_levels: int = 2,
) -> list[tuple[str, nengo.learning_rules.LearningRuleType]]:
    """The rules compared: mPES as published (one pulse), mPES with stochastic pulse counts,
    and Nengo's PES."""
    from memristor_hil import mPES

    return [
        ("mPES", mPES(variability=sigma, seed=seed, crossbar=crossbar)),
        (
            "mPES-stoch",
            mPES(
                variability=sigma,
                seed=seed,
                crossbar=crossbar,
                pulses="stochastic",
                max_pulses=stochastic_levels,
            ),
        ),
        ("PES", nengo.PES(learning_rate=pes_rate)),
    ]


def compare(
    rules: Sequence[tuple[str, nengo.learning_rules.LearningRuleType]],
    task: str,
    function: Callable[[np.ndarray], np.ndarray],
    stimulus: Callable[[float], Any],
    learning: Schedule,
    seconds: float,
    **kwargs: Any,
) -> list[Result]:
    """Run every rule on the same task and network."""
    return [
        run(name, rule, task, function, stimulus, learning, seconds, **kwargs)
        for name, rule in rules
    ]


def print_table(results: Sequence[Result]) -> None:
    """Print test-period MSE and Spearman rho of each rule, with mPES/PES ratios."""
    width = max(5, *(len(r.rule) for r in results))
    print(f"{'task':<10} {'rule':<{width}} {'test MSE':>10} {'Spearman':>9} {'wall s':>7}")
    by_task: dict[str, dict[str, Result]] = {}
    for r in results:
        by_task.setdefault(r.task, {})[r.rule] = r
        print(f"{r.task:<10} {r.rule:<{width}} {r.mse:>10.5f} {r.spearman:>9.4f} {r.wall:>7.1f}")
    for task, rules in by_task.items():
        pes = rules.get("PES")
        if pes is None:
            continue
        for name, r in rules.items():
            if name != "PES":
                ratio = r.mse / pes.mse
                verdict = "within" if ratio <= 2 else "NOT within"
                print(f"{task}: {name} test MSE / PES test MSE = {ratio:.2f} ({verdict} 2x)")


def plot_results(results: Sequence[Result], path: Path, title: str) -> None:
    """Write a PNG: decoded output against target, and sampled weights over time, per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(results), 2, figsize=(13, 2.8 * len(results)), squeeze=False)
    for (ax_out, ax_w), r in zip(axes, results, strict=True):
        ax_out.plot(r.t, r.target, color="black", lw=1, label="target")
        ax_out.plot(r.t, r.output, color="tab:red", lw=0.8, alpha=0.8, label="decoded output")
        _shade_testing(ax_out, r.t, r.testing)
        ax_out.set_title(f"{r.task}, {r.rule}: test MSE {r.mse:.4f}, Spearman {r.spearman:.3f}")
        ax_out.set_xlabel("time (s)")
        ax_out.legend(loc="upper right", fontsize=7)
        ax_w.plot(r.weights_t, r.weights, lw=0.6, alpha=0.6)
        _shade_testing(ax_w, r.t, r.testing)
        ax_w.set_title(f"{r.task}, {r.rule}: {r.weights.shape[1]} sampled weights")
        ax_w.set_xlabel("time (s)")
    fig.suptitle(title + " (shaded: testing, error inhibited)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shade_testing(ax: Any, t: np.ndarray, testing: np.ndarray) -> None:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], testing.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(t[start], t[stop - 1], color="0.85", zorder=0)
