"""A sweep's plan: tasks x rules x seeds x device settings x crossbars, from TOML or Python.

The file format (``experiments/*.toml`` ship the published ones)::

    name = "paper-1"
    seeds = 10                       # or a list: [0, 1, 2]
    tasks = ["x", "x^2"]
    stimuli = ["sine", "white"]      # optional; default: each task's own
    neurons = [100]                  # optional; pre = post neurons; default: each task's own
    seconds = 30                     # optional; default: each task's own

    [[rules]]                        # every list-valued key is an axis of the product
    rule = "PES"
    learning_rate = [1e-5, 3e-5, 1e-4]

    [[rules]]
    rule = "mPES"
    pulses = ["one", "scaled", "stochastic"]

    [devices]                        # mPES only; every list-valued key is an axis
    sigma = [0.15]
    crossbar = ["emulator://"]       # or serial://..., visa://... (hardware: one run at a time)

Only mPES runs take device settings, so PES runs are not repeated across them.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memristor_hil.experiments.tasks import RunSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["SweepPlan", "load_plan"]

_RULE_KEYS = {
    "PES": {"learning_rate"},
    "mPES": {"pulses", "learning_rate", "max_pulses", "gain"},
}
_DEVICE_KEYS = {"sigma", "exponent", "dtype", "noise", "crossbar", "gain"}
_TOP_KEYS = {
    "name",
    "description",
    "expected_runtime",
    "seeds",
    "tasks",
    "stimuli",
    "neurons",
    "seconds",
    "rules",
    "devices",
}


def _axis(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _slug(text: str) -> str:
    """``x^2`` -> ``x2``, ``sin(pi x)`` -> ``sinpix``: a task name fit for a folder name."""
    return "".join(ch for ch in text if ch.isalnum() or ch in "-_") or "task"


def _product(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a table's values (list-valued keys are axes)."""
    keys = sorted(table)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(_axis(table[k]) for k in keys))
    ]


@dataclass
class SweepPlan:
    """A declarative sweep: see the module docstring for the fields' meaning.

    Build one with :meth:`from_dict` (what a TOML file holds) or :func:`load_plan`;
    :meth:`runs` expands it into :class:`~memristor_hil.experiments.tasks.RunSpec` rows.
    """

    name: str
    tasks: list[str]
    rules: list[dict[str, Any]]
    seeds: list[int]
    stimuli: list[str | None] = field(default_factory=lambda: [None])
    neurons: list[int | None] = field(default_factory=lambda: [None])
    seconds: float | None = None
    devices: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    expected_runtime: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPlan:
        """A plan from a mapping of the TOML layout; unknown keys are an error."""
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise ValueError(f"unknown sweep keys {unknown}; known: {sorted(_TOP_KEYS)}")
        for key in ("tasks", "rules"):
            if not data.get(key):
                raise ValueError(f"a sweep needs a non-empty '{key}'")
        seeds = data.get("seeds", 1)
        seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        rules = [dict(rule) for rule in _axis(data["rules"])]
        for rule in rules:
            kind = rule.get("rule")
            if kind not in _RULE_KEYS:
                raise ValueError(f"each [[rules]] needs rule = 'PES' or 'mPES', got {kind!r}")
            extra = sorted(set(rule) - _RULE_KEYS[kind] - {"rule"})
            if extra:
                raise ValueError(f"{kind} rules take {sorted(_RULE_KEYS[kind])}, not {extra}")
        devices = dict(data.get("devices", {}))
        extra = sorted(set(devices) - _DEVICE_KEYS)
        if extra:
            raise ValueError(f"[devices] takes {sorted(_DEVICE_KEYS)}, not {extra}")
        plan = cls(
            name=str(data.get("name", "sweep")),
            tasks=[str(t) for t in _axis(data["tasks"])],
            rules=rules,
            seeds=seeds,
            stimuli=_axis(data.get("stimuli", [None])),
            neurons=_axis(data.get("neurons", [None])),
            seconds=data.get("seconds"),
            devices=devices,
            description=str(data.get("description", "")),
            expected_runtime=str(data.get("expected_runtime", "")),
        )
        plan.runs()  # check every combination now, not on a worker
        return plan

    def limited(
        self, seeds: int | None = None, seconds: float | None = None, tasks: Iterable[str] = ()
    ) -> SweepPlan:
        """A reduced copy: the first ``seeds`` seeds, ``seconds`` per run, only ``tasks``.

        A copy that differs from this plan gets its own name (``paper-1-2seeds-8s``), hence
        its own default output folder, so a quick look never lands in the full sweep's table;
        and no ``expected_runtime``, which was the full plan's.
        """
        wanted = list(tasks)
        missing = sorted(set(wanted) - set(self.tasks))
        if missing:
            raise ValueError(f"tasks {missing} are not in sweep {self.name!r} ({self.tasks})")
        reduced = replace(
            self,
            seeds=self.seeds[:seeds] if seeds is not None else self.seeds,
            seconds=seconds if seconds is not None else self.seconds,
            tasks=wanted or self.tasks,
        )
        parts = []
        if reduced.seeds != self.seeds:
            parts.append(f"{len(reduced.seeds)}seeds")
        if reduced.seconds != self.seconds:
            parts.append(f"{float(reduced.seconds):g}s")
        if reduced.tasks != self.tasks:
            parts.append("+".join(_slug(t) for t in reduced.tasks))
        if not parts:
            return reduced
        return replace(reduced, name="-".join([self.name, *parts]), expected_runtime="")

    def runs(self) -> list[RunSpec]:
        """Every run of the sweep, each once, in a stable order (seed varies slowest)."""
        device_settings = _product(self.devices) if self.devices else [{}]
        out: dict[str, RunSpec] = {}
        for seed, task, stimulus, neurons, rule in itertools.product(
            self.seeds, self.tasks, self.stimuli, self.neurons, self.rules
        ):
            for params in _product(rule):
                kind = params.pop("rule")
                for device in device_settings if kind == "mPES" else [{}]:
                    merged = {**device, **params}
                    spec = RunSpec(
                        task=task,
                        rule=kind,
                        seed=seed,
                        stimulus=stimulus,
                        seconds=None if self.seconds is None else float(self.seconds),
                        n_pre=neurons,
                        n_post=neurons,
                        **merged,
                    )
                    out.setdefault(spec.run_id, spec)
        return list(out.values())


def load_plan(path: str | Path) -> SweepPlan:
    """Read a sweep from a TOML file."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    try:
        return SweepPlan.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
