"""The published learning tasks as data, and one run of one task as a function.

A :class:`Task` says what to learn (a function of the input), on which network (pre and
post neurons), for how long, and on which schedule: paper 1 learns for the first three
quarters and tests in the last quarter; paper 2 alternates 2.5 s blocks of learning and
testing (Tiotto et al. 2021 and the mPES paper; see ``docs/sweeps.md``). :func:`run_task`
builds the network of ``.function_learning`` for one task, rule, device setting and seed,
runs it and returns one flat row of metrics: the row a sweep writes to its table.

Everything a run depends on is in its :class:`RunSpec`, and every random draw is seeded from
it, so an emulator run repeats bit for bit.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from hashlib import sha1
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TASKS",
    "RunSpec",
    "Task",
    "circular_convolution",
    "run_task",
    "versions",
]


@dataclass(frozen=True)
class Task:
    """One published learning task.

    Attributes
    ----------
    name : str
        The name sweeps use (``"x^2"``, ``"x1*x2"``, ``"cconv2"``...).
    function : callable
        ``x -> f(x)``: the function of the input vector to learn.
    dimensions : int
        Input dimensions.
    n_pre, n_post : int
        Pre and post neurons of the learned neuron-to-neuron connection.
    seconds : float
        Simulated seconds at dt = 1 ms.
    schedule : {"tail", "blocks"}
        ``"tail"``: learn for the first 3/4, test (error inhibited) in the last 1/4 (paper 1).
        ``"blocks"``: alternate ``block``-second periods of learning and testing (paper 2).
    stimulus : {"sine", "white"}
        The default input: sines of period 4 s (phase-shifted, incommensurate periods across
        dimensions), or band-limited white noise.
    block : float
        Block length of the ``"blocks"`` schedule, in seconds.
    paper : int
        1 or 2.
    """

    name: str
    function: Callable[[np.ndarray], Any]
    dimensions: int
    n_pre: int
    n_post: int
    seconds: float
    schedule: str = "tail"
    stimulus: str = "sine"
    block: float = 2.5
    paper: int = 1

    def learning(self, seconds: float) -> Callable[[float], bool]:
        """``t -> bool``: whether the error drives learning at time ``t`` of a run."""
        if self.schedule == "tail":
            until = 0.75 * seconds
            return lambda t: t < until
        block = self.block
        return lambda t: int(t // block) % 2 == 0


def circular_convolution(x: np.ndarray) -> np.ndarray:
    """``a (*) b`` of the two halves ``a, b`` of ``x`` (circular convolution, via the FFT)."""
    a, b = np.split(np.asarray(x, dtype=float), 2)
    return np.real(np.fft.ifft(np.fft.fft(a) * np.fft.fft(b)))


def _tasks() -> dict[str, Task]:
    paper1 = [
        Task("x", lambda x: x, 1, 100, 100, 30.0),
        Task("x^2", lambda x: x**2, 1, 100, 100, 30.0),
        Task("x^3", lambda x: x**3, 1, 100, 100, 30.0),
        Task("sin(pi x)", lambda x: np.sin(np.pi * x), 1, 100, 100, 30.0),
        Task("x1*x2", lambda x: x[0] * x[1], 2, 100, 100, 30.0),
    ]
    paper2 = [
        Task("product", lambda x: x[0] * x[1], 2, 200, 200, 50.0, "blocks", paper=2),
        Task(
            "two-products",
            lambda x: x[0] * x[1] + x[2] * x[3],
            4,
            400,
            400,
            100.0,
            "blocks",
            paper=2,
        ),
        Task(
            "three-products",
            lambda x: [x[0] * x[1], x[0] * x[2], x[1] * x[2]],
            3,
            300,
            300,
            100.0,
            "blocks",
            paper=2,
        ),
        Task("cconv2", circular_convolution, 4, 400, 400, 200.0, "blocks", paper=2),
        Task("cconv3", circular_convolution, 6, 600, 300, 400.0, "blocks", paper=2),
    ]
    return {task.name: task for task in paper1 + paper2}


#: The task library: paper 1 (``x``, ``x^2``, ``x^3``, ``sin(pi x)``, ``x1*x2``; 100/100
#: neurons, 30 s, 3/4 learning) and paper 2 (``product`` = x1*x2 200/200 50 s,
#: ``two-products`` = x1*x2 + x3*x4 400/400 100 s, ``three-products`` = [x1x2, x1x3, x2x3]
#: 300/300 100 s, ``cconv2`` 400/400 200 s, ``cconv3`` 600/300 400 s; 2.5 s blocks).
TASKS: dict[str, Task] = _tasks()

#: Periods of the sine inputs, per input dimension, relative to 4 s: incommensurate, so that
#: over a run the inputs cover their square (cube...) instead of one diagonal.
_SINE_RATIOS = (1.0, 0.618, 0.786, 0.545, 0.899, 0.691)


def _stimulus(kind: str, dimensions: int, seconds: float, seed: int) -> Any:
    if kind == "sine":
        ratios = np.array(_SINE_RATIOS[:dimensions])
        phases = np.arange(dimensions, dtype=float)
        return lambda t: np.sin(2 * np.pi * t / 4 * ratios + phases)
    if kind == "white":
        import nengo

        return nengo.processes.WhiteSignal(period=seconds, high=5, rms=0.5, seed=seed)
    raise ValueError(f"unknown stimulus {kind!r}: use 'sine' or 'white'")


@dataclass(frozen=True)
class RunSpec:
    """Everything one run depends on: a row of a sweep's plan.

    ``rule`` is ``"PES"`` (uses ``learning_rate``) or ``"mPES"`` (uses ``pulses``,
    ``learning_rate`` (its ``"learning_rate"`` policy, the default), ``max_pulses``, ``gain``
    and the device settings ``sigma``, ``exponent``, ``dtype``,
    ``noise`` and ``crossbar``). ``None`` means the task's or the rule's default.
    """

    task: str
    rule: str
    seed: int
    stimulus: str | None = None
    seconds: float | None = None
    n_pre: int | None = None
    n_post: int | None = None
    learning_rate: float | None = None
    pulses: str | None = None
    max_pulses: int | None = None
    gain: float | None = None
    sigma: float | None = None
    exponent: float | None = None
    dtype: str | None = None
    noise: float | None = None
    crossbar: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; the library has {sorted(TASKS)}")
        if self.rule not in ("PES", "mPES"):
            raise ValueError(f"unknown rule {self.rule!r}: use 'PES' or 'mPES'")
        if self.rule == "PES":
            mpes_only = [
                f.name
                for f in fields(self)
                if f.name in _MPES_FIELDS and getattr(self, f.name) is not None
            ]
            if mpes_only:
                raise ValueError(f"PES takes no device settings, got {mpes_only}")
        elif self.learning_rate is not None and self.pulses not in (None, "learning_rate"):
            raise ValueError(
                f"mPES takes a learning_rate only with its learning_rate policy, not with "
                f"pulses={self.pulses!r}"
            )

    @property
    def run_id(self) -> str:
        """A stable 12-character id from every parameter (the key ``--resume`` matches)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return sha1(text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """The rule and its parameters in a few words, e.g. ``PES 1e-05``, ``mPES one`` or
        ``mPES rate`` (the default policy; ``mPES rate 3e-05`` at another learning rate)."""
        if self.rule == "PES":
            rate = 1e-4 if self.learning_rate is None else self.learning_rate
            return f"PES {rate:g}"
        policy = self.pulses or "learning_rate"
        text = "mPES rate" if policy == "learning_rate" else f"mPES {policy}"
        if policy == "learning_rate" and self.learning_rate is not None:
            text += f" {self.learning_rate:g}"
        if self.max_pulses is not None and policy != "one":
            text += f"/{self.max_pulses}"
        return text

    @property
    def settings(self) -> str:
        """The device settings that are not defaults, e.g. ``sigma=0.15 gain=1000``."""
        parts = [
            f"{name}={getattr(self, name)}"
            for name in ("sigma", "gain", "exponent", "dtype", "noise", "crossbar")
            if getattr(self, name) is not None
        ]
        return " ".join(parts) or "-"

    def resolved(self) -> dict[str, Any]:
        """Task defaults filled in: stimulus, seconds, n_pre, n_post."""
        task = TASKS[self.task]
        return {
            "stimulus": self.stimulus or task.stimulus,
            "seconds": float(self.seconds if self.seconds is not None else task.seconds),
            "n_pre": int(self.n_pre or task.n_pre),
            "n_post": int(self.n_post or task.n_post),
        }


_MPES_FIELDS = {
    "pulses",
    "max_pulses",
    "gain",
    "sigma",
    "exponent",
    "dtype",
    "noise",
    "crossbar",
}


def versions() -> dict[str, str]:
    """Versions of Python and the packages a run's numbers depend on.

    ``"commit"`` is the git commit of the memristor-hil source the run imported, with
    ``"+dirty"`` when that checkout had uncommitted changes, or ``"unknown"`` for an
    installed wheel (whose ``"memristor-hil"`` version then says what it was).
    """
    out = {"python": platform.python_version()}
    for name in ("memristor-hil", "nengo", "numpy", "numba", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    out["commit"] = source_commit()
    return out


#: The folders of the package's source, relative to a clone's root (pyproject's package-dir):
#: what decides whether a run's source is the commit's.
SOURCE_FOLDERS = ("memristor_hil", "drivers", "emulator")


@functools.cache
def source_commit(package: Path | None = None) -> str:
    """The git commit of the checkout this package is imported from (``"unknown"`` if none).

    ``"+dirty"`` is appended when a file of the package's source (:data:`SOURCE_FOLDERS`) is
    modified or untracked, so a new module not yet added is noticed and an edit to the docs
    is not. Only a checkout that tracks this very package counts: a wheel installed into a
    virtual environment that happens to sit inside some git clone is ``"unknown"``.

    Parameters
    ----------
    package : pathlib.Path, optional
        The package folder to ask about (default: this package's).
    """
    here = Path(__file__).resolve().parent.parent if package is None else package.resolve()
    where = str(here)

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", where, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "--", "__init__.py")
        root = Path(git("rev-parse", "--show-toplevel"))
        head = git("rev-parse", "HEAD")
        folders = [f for f in SOURCE_FOLDERS if (root / f).is_dir()]
        dirty = git("-C", str(root), "status", "--porcelain", "--", *folders)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def _rule(spec: RunSpec, crossbar: Any, layout: Any) -> Any:
    import nengo

    from memristor_hil import mPES

    if spec.rule == "PES":
        rate = spec.learning_rate
        return nengo.PES() if rate is None else nengo.PES(learning_rate=rate)
    kwargs: dict[str, Any] = {"seed": spec.seed}
    for name in ("pulses", "learning_rate", "max_pulses", "gain", "dtype", "noise"):
        value = getattr(spec, name)
        if value is not None:
            kwargs[name] = value
    if spec.exponent is not None:
        kwargs["a"] = spec.exponent
    if isinstance(crossbar, str) and crossbar.lower().startswith("emulator://"):
        crossbar = _emulator_url(crossbar, spec)
    elif spec.sigma is not None:
        kwargs["variability"] = spec.sigma
    if crossbar is not None:
        kwargs["crossbar"] = crossbar
    if layout is not None:
        kwargs["layout"] = layout
    return mPES(**kwargs)


def _emulator_url(url: str, spec: RunSpec) -> str:
    """An ``emulator://`` URL with the run's seed and ``sigma`` where it names none: the
    emulator it opens draws its devices from them (the rule's own ``variability`` describes
    only its default emulator), so runs of one sweep differ by seed and repeat exactly."""
    from urllib.parse import urlencode

    from memristor_hil.url_options import query_options

    parts, options = query_options(url)
    extra = {"seed": spec.seed}
    if spec.sigma is not None:
        extra["sigma"] = spec.sigma
    added = {k: v for k, v in extra.items() if k not in options}
    if not added:
        return url
    base = url.partition("?")[0]
    return f"{base}?" + "&".join(q for q in (parts.query, urlencode(added)) if q)


@dataclass
class _Traces:
    """What a run's probes saw, reduced to what the metrics need."""

    output: np.ndarray
    target: np.ndarray
    testing: np.ndarray
    pulses: float
    wall: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_task(spec: RunSpec, *, crossbar: Any = None, layout: Any = None) -> dict[str, Any]:
    """Run one task with one rule and return its metrics as one flat row.

    Parameters
    ----------
    spec : RunSpec
        What to run.
    crossbar : Crossbar, optional
        An open crossbar for mPES (the sweep passes hardware crossbars it has placed);
        default: ``spec.crossbar`` as a URL, or the rule's own in-process emulator.
    layout : Layout, optional
        Where on ``crossbar`` the devices go.

    Returns
    -------
    dict
        ``mse``, ``spearman``, ``pearson`` over the testing periods; ``constant_mse``, the
        MSE the best constant output would score there (the target's variance per dimension,
        averaged): what a run that learned nothing beats; ``block_errors``, the
        total absolute error (summed over steps and output dimensions) of each testing block;
        ``final_block_error``; ``pulses_applied``; ``sim_wall_s`` and ``sim_cpu_s``
        (wall and CPU seconds to build and run; CPU time hardly depends on what else the
        machine runs); the resolved task parameters.
    """
    import nengo

    from memristor_hil.experiments.function_learning import build_network, simulator

    task = TASKS[spec.task]
    resolved = spec.resolved()
    seconds = resolved["seconds"]
    learning = task.learning(seconds)
    start, cpu_start = time.perf_counter(), time.process_time()
    net, probes = build_network(
        _rule(spec, crossbar if crossbar is not None else spec.crossbar, layout),
        task.function,
        _stimulus(resolved["stimulus"], task.dimensions, seconds, spec.seed),
        learning,
        dimensions=task.dimensions,
        n_pre=resolved["n_pre"],
        n_post=resolved["n_post"],
        n_error=resolved["n_post"],
        seed=spec.seed,
        weights_every=seconds,
        n_weights=1,
    )
    learned = next(c for c in net.all_connections if c.learning_rule_type is not None)
    with net:
        pulse_probe = nengo.Probe(learned.learning_rule, "pulses") if spec.rule == "mPES" else None
    with simulator(net, seed=spec.seed) as sim:
        sim.run(seconds)
        t = sim.trange()
        output = sim.data[probes["output"]]
        target = sim.data[probes["target"]]
        pulses = float(np.sum(sim.data[pulse_probe])) if pulse_probe is not None else 0.0
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    testing = np.array([not learning(ti) for ti in t])
    if not testing.any():
        raise ValueError(f"{seconds:g} s leaves {spec.task} no testing period to score")
    out, tgt = output[testing].reshape(-1), target[testing].reshape(-1)
    blocks = _block_errors(np.abs(output - target), testing)
    return {
        **resolved,
        "mse": _fsum((out - tgt) ** 2) / out.size,
        "constant_mse": _constant_mse(target[testing]),
        "spearman": _pearson(_ranks(out), _ranks(tgt)),
        "pearson": _pearson(out, tgt),
        "block_errors": blocks,
        "final_block_error": blocks[-1],
        "pulses_applied": pulses,
        "sim_wall_s": wall,
        "sim_cpu_s": cpu,
    }


# The metrics sum with math.fsum (exactly rounded), not numpy's SIMD sums, whose rounding
# depends on how an array happens to be aligned in memory: the same run then gives the same
# bits every time, in any process.


def _fsum(x: np.ndarray) -> float:
    return math.fsum(np.ravel(x).tolist())


def _constant_mse(target: np.ndarray) -> float:
    """MSE of the best constant output over ``target`` (steps x dimensions): its variance."""
    target = target.reshape(len(target), -1)
    means = np.array([_fsum(column) / len(column) for column in target.T])
    return _fsum((target - means) ** 2) / target.size


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - _fsum(x) / x.size, y - _fsum(y) / y.size
    denominator = math.sqrt(_fsum(dx * dx) * _fsum(dy * dy))
    return _fsum(dx * dy) / denominator if denominator > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x).astype(float)


def _block_errors(abs_error: np.ndarray, testing: np.ndarray) -> list[float]:
    """Sum of ``abs_error`` over each contiguous run of testing steps (and output dims)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], testing.astype(int), [0]])))
    return [_fsum(abs_error[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
