"""Where an mPES step's time goes, beside the PES step it replaces: the profile behind the ratios.

``bench_mpes.py`` prints mPES/PES ratios; this script explains them. It builds the same network
(``bench_mpes.build``) with Nengo's PES and with mPES (in-process emulator), runs both, and
times every operator of the simulator's step (Nengo's own ``DotInc``, neurons, synapses, and
``SimPES`` or ``SimmPES``), then splits the mPES operator into its phases:

- ``choose``: the cells to pulse and their counts (``learning/kernels.py``);
- ``apply: check``: the batch's safety limits and cell addresses (``PulseBatch.check``,
  ``Crossbar._locate``);
- ``apply: pulse + read``: the emulator's pulse loop, power law and read-back (``_apply``);
- ``store``: read-back resistances into the resistance signals, and the touched weights.

Each figure is the smallest of ``--repeats`` runs' per-step means, in CPU time of this
process (``--clock cpu``, the default: on a machine shared with other jobs, wall time per call
includes whole time slices lost to them; the CPU clock costs about a microsecond a reading,
so the smallest phases are overstated a little) or wall time (``--clock wall``); the
machine's load average is printed. ``ns/cell`` divides a phase by the cells pulsed per step,
which shows what is per-device work (a power law per device: the floor of any emulator) and
what is fixed per step (Python and dispatch).

``--kernels`` then splits the default policy's two kernels on one step's real inputs (after
``--warm`` steps; each the best of many calls, wall time): the selection; the counts'
division per candidate cell; the thinning's visits (a uniform and a logarithm each); the
calibrated store per pulsed cell, beside the two powers of the nominal model per cell it
cannot avoid (``_nominal_resistance``). What is per candidate or per pulsed device there is
the rule's arithmetic, not dispatch.

Usage::

    python benchmarks/profile_mpes.py                # 100x100 and 1000x1000, default and "one"
    python benchmarks/profile_mpes.py --sizes 1000 --policies default stochastic learning_rate
    python benchmarks/profile_mpes.py --kernels      # and the default policy's kernels, split
    python benchmarks/profile_mpes.py --operator     # the mPES operator's own step per policy

``--operator`` times the mPES operator alone (its collect and its step, 100 calls at a time,
the best of 60, wall time) after ``--warm`` steps, per policy: the figure to compare between
two versions of the operator, run alternately on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nengo
import numpy as np
from numba import njit

from memristor_hil import PowerLaw, mPES
from memristor_hil.crossbar import Crossbar
from memristor_hil.learning import kernels, pairs
from memristor_hil.learning import operator as mpes_operator
from memristor_hil.learning.groups import Calibration, HostModel, Inputs, Selection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpes import build  # noqa: E402 - the benchmark folder's own module

POLICIES: dict[str, dict[str, Any]] = {
    "default": {},  # learning_rate=1e-5 with the pair refresh
    "one": {"pulses": "one"},  # the published rule
    "scaled": {"pulses": "scaled", "max_pulses": 100},
    "stochastic": {"pulses": "stochastic", "max_pulses": 100},
    "learning_rate": {"learning_rate": 1e-4},
}

#: (owner, method, phase name) of the mPES operator's phases
PHASES = (
    (mpes_operator.PartRunner, "choose", "choose"),
    (Crossbar, "apply", "apply"),
    (mpes_operator.PartRunner, "store", "store"),
)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class PhaseTimer:
    """Sums the time of wrapped callables by name, while installed."""

    def __init__(self, clock: Callable[[], float] = time.process_time) -> None:
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        """``fn`` timed under ``name``."""
        totals, calls, clock = self.totals, self.calls, self.clock

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += clock() - start
                calls[name] += 1

        return timed

    def patch(self, owner: Any, attr: str, name: str) -> None:
        """Time ``owner.attr`` (a method) under ``name`` until :meth:`restore`."""
        original = owner.__dict__[attr]
        setattr(owner, attr, self.wrap(original, name))
        self._undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        """Put every patched method back."""
        while self._undo:
            self._undo.pop()()


def _emulator_phases(timer: PhaseTimer, crossbar: Crossbar) -> None:
    """Split ``apply`` of the in-process emulator into its check and its pulse + read."""
    cls = type(crossbar)
    if "_locate" in cls.__dict__ and "_apply" in cls.__dict__:
        timer.patch(cls, "_locate", "apply: check (addresses)")
        timer.patch(cls, "_apply", "apply: pulse + read")


def profile(
    net: nengo.Network, steps: int, mpes: bool, clock: Callable[[], float]
) -> tuple[dict[str, float], float]:
    """Per-step seconds of each operator type (and mPES phase), and pulsed cells per step."""
    timer = PhaseTimer(clock)
    cells = [0]
    if mpes:  # before the simulator is built: the operator binds these methods in make_step
        for owner, attr, name in PHASES:
            timer.patch(owner, attr, name)
        _count_cells(timer, cells)
    try:
        with nengo.Simulator(net, progress_bar=False) as sim:
            if mpes:
                op = next(op for op in sim.step_order if type(op).__name__ == "SimmPES")
                _emulator_phases(timer, op.use.crossbar)
            sim._steps = [
                timer.wrap(step, type(op).__name__)
                for step, op in zip(sim._steps, sim.step_order, strict=True)
            ]
            sim.run_steps(20)  # caches warm, scratch buffers sized
            timer.totals.clear()
            cells[0] = 0
            start = clock()
            sim.run_steps(steps)
            total = clock() - start
    finally:
        timer.restore()
    per_step = {name: t / steps for name, t in timer.totals.items()}
    per_step["(whole step)"] = total / steps
    return per_step, cells[0] / steps


def _count_cells(timer: PhaseTimer, cells: list[int]) -> None:
    """Count the cells of every batch applied (on top of the timing wrapper of ``apply``)."""
    timed = Crossbar.apply

    def counted(self: Crossbar, batch: Any, **kwargs: Any) -> Any:
        cells[0] += len(batch)
        return timed(self, batch, **kwargs)

    Crossbar.apply = counted
    timer._undo.append(lambda: setattr(Crossbar, "apply", timed))


def _best_us(fn: Callable[[], Any], reps: int) -> float:
    """The fastest of ``reps`` calls of ``fn``, in microseconds (wall time)."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e6 * best


@njit(cache=True)
def _two_powers(big_r, r0, r1, inv_a):  # pragma: no cover - compiled
    """The nominal model's two powers per cell (``pairs._nominal_resistance``), alone."""
    total = 0.0
    for k in range(big_r.shape[0]):
        total += r0 + r1 * (((big_r[k] - r0) / r1) ** inv_a + 1.0) ** (1.0 / inv_a)
    return total


def kernel_split(n: int, warm: int) -> None:
    """Print the default policy's kernels split, on the inputs of step ``warm`` of ``n x n``."""
    with nengo.Simulator(build(n, mPES()), progress_bar=False) as sim:
        sim.run_steps(warm)
        step = next(
            f for op, f in zip(sim.step_order, sim._steps, strict=True)
            if type(op).__name__ == "SimmPES"
        )  # fmt: skip
        runner = next(
            c.cell_contents for c in step.__closure__ or ()
            if type(c.cell_contents).__name__ == "PartRunner"
        )  # fmt: skip
        policy, reps = runner.policy, 200 if n <= 200 else 20
        sel, inputs = Selection(*runner.sel), Inputs(*runner.inputs)
        cal, model = Calibration(*policy.cal), HostModel(*policy.model)

        def choose(scale: float) -> tuple[int, int]:
            kernels.select_pulses(runner.inputs, runner.sel, policy.cells, False)
            return kernels.learning_rate_cells(
                runner.inputs, runner.sel, policy.alpha * scale, policy.levels, policy.cal,
                policy.cells, policy.stream,
            )  # fmt: skip

        t_select = _best_us(
            lambda: kernels.select_pulses(runner.inputs, runner.sel, policy.cells, False), reps
        )
        n_active, n_rows = (int(v) for v in sel.sizes)
        t_choose = _best_us(lambda: choose(1.0), reps)
        t_no_visit = _best_us(lambda: choose(1e-12), reps)  # expectations ~0: no visits
        size, total = choose(1.0)
        # the thinning's expected visits: n_active * x_max per row below one pulse
        rows, cols = sel.post_rows[:n_rows].astype(int), sel.active[:n_active].astype(int)
        per = np.where(sel.positive[:n_rows, None], cal.per_pos[rows], cal.per_neg[rows])
        error = np.abs(inputs.local_error[rows]) * policy.alpha
        x_max = (error[:, None] * inputs.acts[cols] / per[:, cols]).max(axis=1)
        visits = float(np.sum(np.where(x_max < 1.0, x_max * n_active, 0.0)))
        # the store on read-backs 0.1% below the stored resistances (one pulse each)
        pos = policy.polarity[:size]
        origins = sel.origins
        i = np.where(pos, runner.rows[:size] - origins[0], runner.rows[:size] - origins[2])
        j = np.where(pos, runner.cols[:size] - origins[1], runner.cols[:size] - origins[3])
        stored = np.where(pos, runner.r_pos[i, j], runner.r_neg[i, j])
        back = (stored * 0.999).astype(runner.r_pos.dtype)
        t_store = _best_us(
            lambda: pairs.store_calibrated(
                policy.cells, size, back, runner.pairs, policy.cal, policy.model, 0.5
            ),
            reps,
        )
        big_r = back.astype(np.float64)
        _two_powers(big_r, model.r0, model.r1, model.inv_a)
        t_powers = _best_us(lambda: _two_powers(big_r, model.r0, model.r1, model.inv_a), reps)
    candidates = n_active * n_rows
    print(
        f"  default policy's kernels, {n}x{n} step {warm}: {candidates:,} candidate cells "
        f"({n_active} active x {n_rows} rows), {size} pulsed ({total} pulses), ~{visits:,.0f} "
        f"thinning visits\n"
        f"    select {t_select:.1f} us; counts {t_no_visit - t_select:.1f} us "
        f"({1e3 * (t_no_visit - t_select) / max(candidates, 1):.2f} ns per candidate); "
        f"thinning {t_choose - t_no_visit:.1f} us "
        f"({1e3 * (t_choose - t_no_visit) / max(visits, 1.0):.0f} ns per visit)\n"
        f"    store {t_store:.1f} us ({1e3 * t_store / max(size, 1):.0f} ns per pulsed device, "
        f"of which the two powers alone {1e3 * t_powers / max(size, 1):.0f} ns)"
    )


def _hundred(collect: Callable[[], None], step: Callable[[], None]) -> None:
    """One hundred steps of the mPES operator alone."""
    for _ in range(100):
        collect()
        step()


def operator_step(n: int, policies: list[str], warm: int, model: PowerLaw) -> None:
    """Print the mPES operator's own step (collect + step) per policy, best of 60 x 100."""
    parts = []
    for policy in policies:
        with nengo.Simulator(
            build(n, mPES(model=model, **POLICIES[policy])), progress_bar=False
        ) as sim:
            sim.run_steps(warm)
            names = ("SimmPESCollect", "SimmPES")
            collect, step = (
                next(
                    f for op, f in zip(sim.step_order, sim._steps, strict=True)
                    if type(op).__name__ == name
                )
                for name in names
            )  # fmt: skip

            parts.append(f"{policy} {_best_us(partial(_hundred, collect, step), 60) / 100:.1f}")
    print(
        f"  {n}x{n} mPES operator's own step (collect + step; wall, best of 60 x 100 calls), "
        "us: " + ", ".join(parts)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--policies", nargs="+", choices=sorted(POLICIES), default=["default", "one"]
    )
    parser.add_argument("--steps", type=int, default=0, help="steps per run (0: by size)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rule; min counts")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what is timed")
    parser.add_argument(
        "--kernels", action="store_true", help="split the default policy's kernels too"
    )
    parser.add_argument(
        "--operator", action="store_true", help="only the mPES operator's own step, per policy"
    )
    parser.add_argument("--warm", type=int, default=300, help="--kernels, --operator: steps before")
    args = parser.parse_args(argv)
    model = PowerLaw(dtype=args.dtype)
    print(
        f"nengo {nengo.__version__}, numpy {np.__version__}; {args.dtype} devices; {args.clock} "
        f"time, min of "
        f"{args.repeats} runs' per-step means; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    for n in args.sizes:
        if args.operator:
            operator_step(n, args.policies, args.warm, model)
            continue
        steps = args.steps or (2000 if n <= 200 else 200)
        rules: dict[str, nengo.learning_rules.LearningRuleType] = {"PES": nengo.PES()}
        for policy in args.policies:
            rules[f"mPES {policy}"] = mPES(model=model, **POLICIES[policy])
        best: dict[str, dict[str, float]] = {}
        cells: dict[str, float] = {}
        for _ in range(args.repeats):
            for label, rule in rules.items():
                per_step, cells[label] = profile(
                    build(n, rule), steps, label != "PES", CLOCKS[args.clock]
                )
                kept = best.setdefault(label, per_step)
                for name, value in per_step.items():
                    kept[name] = min(kept.get(name, value), value)
        _print_table(n, steps, best, cells)
        if args.kernels:
            kernel_split(n, args.warm)
    print(f"load average after the runs: {os.getloadavg()[0]:.1f}")
    return 0


def _print_table(
    n: int, steps: int, best: dict[str, dict[str, float]], cells: dict[str, float]
) -> None:
    labels = list(best)
    names = sorted({name for per_step in best.values() for name in per_step})
    # Nengo's operators first (by PES's cost), then the mPES phases, then the whole step
    phases = [name for name in names if name[0].islower()]
    operators = [name for name in names if name[0].isupper()]
    operators.sort(key=lambda name: -best["PES"].get(name, 0.0))
    print(f"\n{n}x{n}, {steps} steps per run; microseconds per step")
    print(f"{'':>28}" + "".join(f"{label:>20}" for label in labels))
    for name in [*operators, *phases, "(whole step)"]:
        row = f"{name:>28}"
        for label in labels:
            value = best[label].get(name)
            row += f"{'':>20}" if value is None else f"{1e6 * value:>20.1f}"
        print(row)
    pes = best["PES"]["(whole step)"]
    print(
        f"{'ratio to PES':>28}"
        + "".join(f"{best[lb]['(whole step)'] / pes:>19.2f}x" for lb in labels)
    )
    for label in labels[1:]:
        per_cell = cells[label]
        if per_cell:
            parts = ", ".join(
                f"{name} {1e9 * best[label][name] / per_cell:.1f}"
                for name in phases
                if name in best[label]
            )
            print(f"  {label}: {per_cell:,.0f} pulse-updates per step; ns per update: {parts}")


if __name__ == "__main__":
    raise SystemExit(main())
