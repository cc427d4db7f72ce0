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
from typing import Any, NamedTuple

import nengo
import numpy as np

__all__ = [
    "PES_LEARNING_RATE",
    "Result",
    "LearningTask",
    "Verdict",
    "build_network",
    "compare",
    "plot_results",
    "print_table",
    "run",
    "simulator",
    "standard_rules",
    "verdict",
]

#: PES's learning rate in the comparisons: the best of 1e-5, 3e-5 and 1e-4 (Nengo's default)
#: on paper 1's tasks with 100 neurons (30 s: test MSE for x 0.0041 / 0.0095 / tracking only).
PES_LEARNING_RATE = 1e-5

Schedule = Callable[[float], bool]


class LearningTask(NamedTuple):
    """One function-learning task: what to learn, from which input, when, and for how long.

    Attributes
    ----------
    name : str
        What results and progress bars call it (``"x^2"``).
    function : callable
        The function of the input that ``post`` learns to represent.
    stimulus : callable or nengo.Process
        The input: a function of time or a process (e.g. white noise).
    learning : callable
        The schedule: ``learning(t)`` is True while the rule learns; the other periods test.
    seconds : float
        Simulated seconds per run.
    """

    name: str
    function: Callable[[np.ndarray], np.ndarray]
    stimulus: Callable[[float], Any] | nengo.Process
    learning: Schedule
    seconds: float


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
    #: The input x (after the stimulus), sampled with ``t``; None for results made elsewhere.
    input: np.ndarray | None = field(default=None, repr=False)


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
            "input": nengo.Probe(stim, synapse=None),
            "output": nengo.Probe(post, synapse=0.01),
            "target": nengo.Probe(target, synapse=0.01),
            "weights": nengo.Probe(conn, "weights", sample_every=weights_every),
        }
    net.picked_weights = picked
    return net, probes


def simulator(net: nengo.Network, seed: int | None = None) -> nengo.Simulator:
    """A Nengo simulator of ``net`` whose build, and so whose run, is the same every time.

    Nengo's operator-merging optimizer is off. It merges operators in an order that follows
    their ids (``OpMergePass.might_merge`` is a ``set``), that is their memory addresses, so
    two builds of one network can compute the same dot product differently: a post
    ensemble's decoders merged with another connection's into a ``BsrDotInc`` (SciPy's
    sparse product) in one build, a ``DotInc`` of their own (a BLAS dot product) in the next.
    The two round differently in the last bit, about half the time, and a learning run
    amplifies that (docs/sweeps.md, "Reproducibility"). Unmerged, the step order and every
    operation are fixed by the network; the learning networks here run about as fast.

    Parameters
    ----------
    net : nengo.Network
        The network to build.
    seed : int, optional
        The simulator's seed (Nengo's default: drawn from the network's seed).
    """
    return nengo.Simulator(net, progress_bar=False, seed=seed, optimize=False)


def run(
    rule_name: str,
    rule_type: nengo.learning_rules.LearningRuleType,
    task: LearningTask,
    *,
    progress: bool = True,
    chunk: float = 1.0,
    **network: Any,
) -> Result:
    """Build and run one rule on one task, showing progress, and score the test periods.

    ``network`` goes to :func:`build_network` (neurons, dimensions, seed, ...).
    """
    net, probes = build_network(rule_type, task.function, task.stimulus, task.learning, **network)
    seconds = task.seconds
    with simulator(net) as sim:
        bar = _progress(f"{task.name} {rule_name}", seconds) if progress else None
        start = time.perf_counter()
        done = 0.0
        while done < seconds - 1e-9:
            step = min(chunk, seconds - done)
            sim.run(step)
            done += step
            if bar is not None:
                bar.update(step)
        wall = time.perf_counter() - start
        if bar is not None:
            bar.close()
        t = sim.trange()
        output = sim.data[probes["output"]]
        target = sim.data[probes["target"]]
        x = sim.data[probes["input"]]
        weights_t = sim.trange(sample_every=probes["weights"].sample_every)
        weights = sim.data[probes["weights"]]
    weights = weights.reshape(len(weights), -1)[:, net.picked_weights]
    testing = np.array([not task.learning(ti) for ti in t])
    mse, rho = score(output[testing], target[testing])
    return Result(
        rule_name, task.name, mse, rho, wall, t, output, target, testing, weights_t, weights, x
    )


def _progress(label: str, seconds: float) -> Any:
    """A tqdm bar over simulated seconds, on stderr (a widget in a notebook)."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=seconds,
        desc=f"  {label}",
        unit="s sim",
        file=sys.stderr,
        mininterval=0.2 if tty else 5.0,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:g} s simulated "
        "[{elapsed}<{remaining}]",
    )


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
) -> list[tuple[str, nengo.learning_rules.LearningRuleType]]:
    """The rules compared: mPES's default (PES's learning rate turned into pulse counts, with
    the pair refresh), mPES as published (one pulse, ``"mPES-one"``) and Nengo's PES."""
    from memristor_hil import mPES

    return [
        ("mPES", mPES(variability=sigma, seed=seed, crossbar=crossbar)),
        ("mPES-one", mPES(variability=sigma, seed=seed, crossbar=crossbar, pulses="one")),
        ("PES", nengo.PES(learning_rate=pes_rate)),
    ]


def compare(
    rules: Sequence[tuple[str, nengo.learning_rules.LearningRuleType]],
    task: LearningTask,
    **kwargs: Any,
) -> list[Result]:
    """Run every rule on the same task and network (``kwargs`` as for :func:`run`)."""
    return [run(name, rule, task, **kwargs) for name, rule in rules]


@dataclass(frozen=True)
class Verdict:
    """Whether a rule learned, judged against what no learning at all would score.

    Attributes
    ----------
    learned : bool
        The test MSE is below half the target's variance: the output explains more than half
        of the target's variation in the test period.
    explained : float
        ``1 - MSE / variance``: 1 is perfect, 0 is no better than the best constant output,
        negative is worse than it.
    variance : float
        The target's variance over the test period: the MSE of the best constant output.
    zero_mse : float
        The MSE of an output stuck at zero (what an untrained connection gives).
    """

    learned: bool
    explained: float
    variance: float
    zero_mse: float

    @property
    def text(self) -> str:
        """``"learned"`` or ``"did not learn"``, and how the MSE compares with a constant output.

        A share of the variance explained when there is one; a negative share reads as the
        MSE's multiple of a constant output's (``"... 2.2x the MSE of a constant output"``).
        """
        word = "learned" if self.learned else "did not learn"
        if self.explained >= 0:
            return f"{word} ({100 * self.explained:.0f}% of the target's variance explained)"
        times = 1.0 - self.explained
        return f"{word} (worse than a constant output: {times:.1f}x its MSE)"


#: A rule learned when its test MSE is below this fraction of the target's variance.
LEARNED_BELOW = 0.5


def verdict(result: Result) -> Verdict:
    """Judge one result against the baselines of its own test period (see :class:`Verdict`)."""
    target = result.target[result.testing]
    variance = float(np.mean((target - target.mean(axis=0)) ** 2))
    zero_mse = float(np.mean(target**2))
    explained = 1.0 - result.mse / variance if variance > 0 else float("-inf")
    return Verdict(result.mse < LEARNED_BELOW * variance, explained, variance, zero_mse)


def print_table(results: Sequence[Result]) -> None:
    """Print each rule's test-period MSE, Spearman rho and verdict, then mPES against PES.

    A rule "learned" when its test MSE is below half the target's variance (the MSE of the
    best constant output); the MSE of an all-zero output is printed beside it. mPES is
    compared with PES only when both learned: a ratio of two failures means nothing.
    """
    width = max(5, *(len(r.rule) for r in results))
    print(f"{'task':<10} {'rule':<{width}} {'test MSE':>10} {'Spearman':>9} {'wall s':>7}  verdict")
    by_task: dict[str, dict[str, Result]] = {}
    verdicts = {id(r): verdict(r) for r in results}
    for r in results:
        by_task.setdefault(r.task, {})[r.rule] = r
        print(
            f"{r.task:<10} {r.rule:<{width}} {r.mse:>10.5f} {r.spearman:>9.4f} {r.wall:>7.1f}  "
            f"{verdicts[id(r)].text}"
        )
    for task, rules in by_task.items():
        first = verdicts[id(next(iter(rules.values())))]
        print(
            f"{task}: baselines over the test period: a constant output scores MSE "
            f"{first.variance:.5f} (the target's variance), an all-zero output {first.zero_mse:.5f}"
        )
        pes = rules.get("PES")
        if pes is None:
            continue
        for name, r in rules.items():
            if name == "PES":
                continue
            ratio = r.mse / pes.mse
            head = f"{task}: {name} test MSE / PES test MSE = {ratio:.2f}"
            if not verdicts[id(r)].learned:
                print(f"{head} ({name} did not learn: no comparison)")
            elif not verdicts[id(pes)].learned:
                print(f"{head} (PES did not learn: no comparison)")
            else:
                print(f"{head} ({'within' if ratio <= 2 else 'NOT within'} 2x)")


def plot_results(results: Sequence[Result], path: Path, title: str) -> None:
    """Write a PNG with one row per rule: the run over time, the test period against the input,
    and a summary of the learned weights.

    Left: input x, target f(x) and decoded output against time, testing periods shaded.
    Middle: the test period's output against x with the target curve (for a multi-dimensional
    input: output against target, with the diagonal). Right: the distribution of the sampled
    weights over time (median, 25-75 % and 5-95 % bands) and three of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(
        len(results),
        3,
        figsize=(15, 3.3 * len(results)),
        squeeze=False,
        gridspec_kw={"width_ratios": [2.2, 1, 1.6]},
    )
    for (ax_t, ax_x, ax_w), r in zip(axes, results, strict=True):
        judged = verdict(r)
        if r.input is not None:
            ax_t.plot(r.t, r.input, color="0.55", lw=0.8, ls="--", label="input x")
        ax_t.plot(r.t, r.target, color="black", lw=1.1, label="target f(x)")
        ax_t.plot(r.t, r.output, color="tab:red", lw=0.8, alpha=0.85, label="decoded output")
        _shade_testing(ax_t, r.t, r.testing)
        ax_t.set_title(f"{r.rule}: test MSE {r.mse:.4f}, Spearman {r.spearman:.3f}, {judged.text}",
                       fontsize=9)  # fmt: skip
        ax_t.set_xlabel("time (s)")
        ax_t.set_ylabel("value (decoded, unitless)")
        ax_t.legend(loc="lower left", fontsize=7, ncol=3)
        _plot_against_input(ax_x, r)
        _plot_weight_summary(ax_w, r)
        _shade_testing(ax_w, r.t, r.testing)
    fig.suptitle(
        f"{title}. Shaded: testing (error inhibited). Weights: mPES's scale is set by its gain "
        "and device conductances, PES's by its learning rate, so the scales differ.",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_against_input(ax: Any, r: Result) -> None:
    """Test-period output against x (1-D input) or against the target (otherwise)."""
    test = r.testing
    output = r.output[test, 0]
    target = r.target[test, 0]
    one_d = r.input is not None and r.input.shape[1] == 1
    if one_d:
        x = r.input[test, 0]
        order = np.argsort(x)
        ax.plot(x, output, ".", ms=1.5, color="tab:red", alpha=0.4, label="decoded output")
        ax.plot(x[order], target[order], color="black", lw=1.2, label="target f(x)")
        ax.set_xlabel("input x")
        ax.set_ylabel("value (unitless)")
    else:
        ax.plot(target, output, ".", ms=1.5, color="tab:red", alpha=0.4, label="decoded output")
        lo, hi = float(target.min()), float(target.max())
        ax.plot([lo, hi], [lo, hi], color="black", lw=1.2, label="perfect (output = target)")
        ax.set_xlabel("target")
        ax.set_ylabel("decoded output")
    ax.set_title("test period: output against " + ("x" if one_d else "target"), fontsize=9)
    ax.legend(loc="upper left", fontsize=7, markerscale=6)


def _plot_weight_summary(ax: Any, r: Result) -> None:
    """Median, 25-75 % and 5-95 % bands of the sampled weights over time, and three of them."""
    w = r.weights
    p5, p25, p50, p75, p95 = np.percentile(w, [5, 25, 50, 75, 95], axis=1)
    ax.fill_between(r.weights_t, p5, p95, color="tab:blue", alpha=0.15, label="5-95 %")
    ax.fill_between(r.weights_t, p25, p75, color="tab:blue", alpha=0.35, label="25-75 %")
    ax.plot(r.weights_t, p50, color="tab:blue", lw=1.5, label="median")
    for i, k in enumerate(np.linspace(0, w.shape[1] - 1, 3).astype(int)):
        ax.plot(
            r.weights_t, w[:, k], color="0.3", lw=0.7, label="3 sample weights" if i == 0 else None
        )
    ax.set_title(f"{w.shape[1]} sampled weights (pre neuron to post neuron)", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("weight (input current per Hz)")
    ax.legend(loc="upper left", fontsize=7, ncol=2)


def _shade_testing(ax: Any, t: np.ndarray, testing: np.ndarray) -> None:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], testing.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(t[start], t[stop - 1], color="0.85", zorder=0)
