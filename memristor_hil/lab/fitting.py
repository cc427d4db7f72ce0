"""Fit the power law ``R = R0 + R1 * n**a`` to measured devices, one fit per device.

A measured pulse train starts from an unknown pulse count ``n0`` (the device's history before
the record began), so each device's readings ``R_i`` after ``m_i`` pulses of the record are
fitted with four parameters::

    R(m) = R0 + R1 * (n0 + m) ** a

For given ``(a, n0)`` the model is linear in ``(R0, R1)``, which are then solved exactly
(variable projection); ``(a, log n0)`` are found by a coarse grid search followed by
Levenberg-Marquardt (:func:`scipy.optimize.least_squares`). Residuals are relative, so every
reading weighs the same whatever its resistance.

How well ``R0`` can be known: ``R0`` (about 200 ohm) sits under a power-law term of 1e7 to 1e8
ohm for any realistic pulse count, so it moves the readings by a few parts per million. From
exact (noise-free emulator) readings it is recovered; with a read noise of 1e-6 relative it is
already unknown (standard error far above ``R0``). ``R1`` and ``a`` stay well determined
(better than 1 % at 1e-3 read noise over 1e5 pulses). :func:`fit_devices` therefore reports a
standard error per parameter, and with ``r0="auto"`` fixes ``R0`` at the nominal value when the
data cannot determine it (and says so) rather than writing a meaningless number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from ..powerlaw import PowerLaw, Variability
from .read_effects import ReadEffects, read_effects
from .record import Record

__all__ = ["FitResult", "fit_device", "fit_devices", "fit_record"]

#: The fit needs at least this many distinct pulse counts per device.
MIN_POINTS = 6
#: ``R0`` counts as determined when its median standard error is below this fraction of it.
R0_IDENTIFIABLE = 0.2
_GRID_A = np.linspace(-0.8, -0.01, 40)[:, None, None]
_GRID_LOG_N0 = np.linspace(np.log(0.1), np.log(1e8), 36)[None, :, None]
_PARAMETERS = ("r0", "r1", "a", "r_init")


def _linear(x: np.ndarray, r: np.ndarray, r0: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted (1/R) least squares of ``r ~ r0 + r1 * x`` along the last axis."""
    w2 = 1.0 / (r * r)
    if r0 is not None:
        r1 = (w2 * x * (r - r0)).sum(-1) / (w2 * x * x).sum(-1)
        return np.full_like(r1, r0), r1
    sw, sx, sy = w2.sum(-1), (w2 * x).sum(-1), (w2 * r).sum(-1)
    sxx, sxy = (w2 * x * x).sum(-1), (w2 * x * r).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    return (sy - r1 * sx) / sw, r1


def _residuals(theta: np.ndarray, m: np.ndarray, r: np.ndarray, r0: float | None) -> np.ndarray:
    a, log_n0 = theta
    x = (np.exp(log_n0) + m) ** a
    fit_r0, r1 = _linear(x, r, r0)
    return (r - fit_r0 - r1 * x) / r


def fit_device(
    pulses: np.ndarray, resistance: np.ndarray, r0: float | None = None
) -> dict[str, float]:
    """Fit one device's readings.

    Parameters
    ----------
    pulses : array_like
        Pulses the device had received (since the record began) at each reading, ``>= 0``.
    resistance : array_like
        The readings, in ohm.
    r0 : float, optional
        Fix ``R0`` at this value instead of fitting it.

    Returns
    -------
    dict
        ``r0, r1, a, n0`` (the fitted initial pulse count), ``r_init`` (the model's resistance
        at ``m = 0``), ``rms`` (relative residual), standard errors ``se_r0, se_r1, se_a`` and
        ``ok`` (1.0 when the fit converged to a valid device, else 0.0).
    """
    m = np.asarray(pulses, dtype=np.float64)
    r = np.asarray(resistance, dtype=np.float64)
    if m.shape != r.shape or m.ndim != 1:
        raise ValueError("pulses and resistance must be 1-D arrays of the same length")
    if np.unique(m).size < MIN_POINTS or not np.all(np.isfinite(r)) or np.any(r <= 0):
        return _failed()
    # Coarse grid over (a, log n0) with the linear parameters solved at each point.
    x = (np.exp(_GRID_LOG_N0) + m) ** _GRID_A
    fit_r0, r1 = _linear(x, r, r0)
    cost = (((r - fit_r0[..., None] - r1[..., None] * x) / r) ** 2).sum(-1)
    cost[~(r1 > 0) | ~np.isfinite(cost)] = np.inf
    if not np.isfinite(cost).any():
        return _failed()
    i, j = np.unravel_index(np.argmin(cost), cost.shape)
    start = np.array([_GRID_A[i, 0, 0], _GRID_LOG_N0[0, j, 0]])
    solution = least_squares(
        _residuals,
        start,
        args=(m, r, r0),
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=4000,
    )
    a, log_n0 = solution.x
    n0 = float(np.exp(log_n0))
    x = (n0 + m) ** a
    fit_r0, r1 = (float(v) for v in _linear(x, r, r0))
    residual = (r - fit_r0 - r1 * x) / r
    errors = _standard_errors(m, r, fit_r0, r1, a, n0, residual, fixed_r0=r0 is not None)
    # a negative R0 is no resistance: it fits the noise, and kept it would inflate R0's spread
    ok = bool(solution.success and a < 0 and r1 > 0 and np.isfinite(fit_r0) and fit_r0 >= 0)
    return {
        "r0": fit_r0,
        "r1": r1,
        "a": float(a),
        "n0": n0,
        "r_init": fit_r0 + r1 * n0**a,
        "rms": float(np.sqrt(np.mean(residual**2))),
        **errors,
        "ok": float(ok),
    }


def _standard_errors(
    m: np.ndarray,
    r: np.ndarray,
    r0: float,
    r1: float,
    a: float,
    n0: float,
    residual: np.ndarray,
    fixed_r0: bool,
) -> dict[str, float]:
    """Standard errors of r0, r1, a from the Jacobian of the relative residuals."""
    n = n0 + m
    x = n**a
    columns = [-x / r, -r1 * x * np.log(n) / r, -r1 * a * n ** (a - 1) * n0 / r]
    if not fixed_r0:
        columns.insert(0, -1.0 / r)
    jac = np.column_stack(columns)
    dof = max(m.size - jac.shape[1], 1)
    variance = float(residual @ residual) / dof
    # Scale the columns to unit length (the parameters differ by 1e10 in size), then invert
    # through the SVD without a cut-off: a direction the data do not fix shows up as a huge
    # (or infinite) error instead of being projected away.
    scale = np.linalg.norm(jac, axis=0)
    scale[scale == 0] = 1.0
    _, singular, vt = np.linalg.svd(jac / scale, full_matrices=False)
    if not singular.min() > 0:
        return {"se_r0": 0.0 if fixed_r0 else np.inf, "se_r1": np.inf, "se_a": np.inf}
    inverse = (vt.T / singular**2) @ vt
    cov = inverse / np.outer(scale, scale) * variance
    se = np.sqrt(np.abs(np.diag(cov)))
    if fixed_r0:
        return {"se_r0": 0.0, "se_r1": float(se[0]), "se_a": float(se[1])}
    return {"se_r0": float(se[0]), "se_r1": float(se[1]), "se_a": float(se[2])}


def _failed() -> dict[str, float]:
    nan = float("nan")
    keys = ("r0", "r1", "a", "n0", "r_init", "rms", "se_r0", "se_r1", "se_a")
    return {**dict.fromkeys(keys, nan), "ok": 0.0}


@dataclass
class FitResult:
    """Per-device fits and the population they describe.

    Attributes
    ----------
    cells : numpy.ndarray
        Row-major index of each fitted device; ``rows`` and ``cols`` give the same cells.
    values : dict of str to numpy.ndarray
        Per device: ``r0, r1, a, n0, r_init, rms, se_r0, se_r1, se_a, ok``.
    shape : tuple of int
        The crossbar's shape.
    voltage : float
        The pulse voltage of the measurement (the fitted ``a`` holds at it).
    r0_fixed : float or None
        The value ``R0`` was fixed at, if it was not fitted.
    notes : list of str
        What the user should know (R0 fixed and why, devices that failed).
    data : dict
        ``{cell: (pulses, resistance)}``: the readings that were fitted (for plots).
    effects : ReadEffects or None
        Read noise and stuck devices as the readings show them (stuck devices are left out
        of the fit's medians and spreads).
    """

    cells: np.ndarray
    values: dict[str, np.ndarray]
    shape: tuple[int, int]
    voltage: float
    r0_fixed: float | None = None
    notes: list[str] = field(default_factory=list)
    data: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    effects: ReadEffects | None = None

    @property
    def rows(self) -> np.ndarray:
        """Row of each device."""
        return self.cells // self.shape[1]

    @property
    def cols(self) -> np.ndarray:
        """Column of each device."""
        return self.cells % self.shape[1]

    @property
    def ok(self) -> np.ndarray:
        """Mask of the devices whose fit succeeded."""
        return self.values["ok"] > 0

    def summary(self) -> dict[str, dict[str, float]]:
        """Median, mean and relative spread (``std / abs(median)``) of each parameter over the
        good fits.

        The relative spread is the device-to-device sigma that :class:`~memristor_hil.Variability`
        means.
        """
        good = self.ok
        out = {}
        for name in _PARAMETERS:
            v = self.values[name][good]
            if v.size == 0:
                out[name] = {"median": np.nan, "mean": np.nan, "sigma": np.nan}
                continue
            median = float(np.median(v))
            spread = float(np.std(v, ddof=1)) / abs(median) if v.size > 1 else 0.0
            out[name] = {"median": median, "mean": float(np.mean(v)), "sigma": spread}
        return out

    def model(self) -> PowerLaw:
        """A :class:`.PowerLaw` whose devices are drawn like the measured ones.

        Centres are the medians; the variability is the measured relative spread (0 for a fixed
        ``R0``). ``v_ref`` is the measurement voltage, where the fitted exponent holds; the
        voltage slope of the exponent keeps its default.
        """
        s = self.summary()
        if not np.isfinite(s["r1"]["median"]):
            raise ValueError("no device was fitted, so there is no model to write")
        r0 = s["r0"]["median"]
        if not r0 > 0:
            raise ValueError(
                f"the median fitted R0 is {r0:.4g} ohm, which is not a valid device; the "
                "readings do not determine R0: fit again with R0 fixed (--r0 200)"
            )
        variability = Variability(
            r0=0.0 if self.r0_fixed is not None else s["r0"]["sigma"],
            r1=s["r1"]["sigma"],
            a=s["a"]["sigma"],
            r_init=s["r_init"]["sigma"],
        )
        r1 = s["r1"]["median"]
        r_init = min(max(s["r_init"]["median"], np.nextafter(r0, np.inf)), r1)
        return PowerLaw(
            r0=r0, r1=r1, a=s["a"]["median"], v_ref=self.voltage, r_init=r_init,
            variability=variability,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """``{"model": PowerLaw fields, "fit": summary and per-device values, "array": read
        noise and stuck devices (the emulator's URL options, where the readings show them)}``.
        """
        effects = self.effects
        return {
            "model": self.model().to_dict(),
            "array": None
            if effects is None
            else {
                "read_noise": effects.read_noise,
                "read_noise_pairs": effects.pairs,
                "stuck": effects.stuck_fraction,
                "stuck_cells": None if effects.stuck is None else effects.stuck.tolist(),
                "url_options": effects.url_options(),
            },
            "fit": {
                "devices": int(self.cells.size),
                "fitted": int(self.ok.sum()),
                "voltage": self.voltage,
                "r0_fixed": self.r0_fixed,
                "notes": self.notes,
                "summary": self.summary(),
                "per_device": {
                    "row": self.rows.tolist(),
                    "col": self.cols.tolist(),
                    **{k: [_json_float(x) for x in v] for k, v in self.values.items()},
                },
            },
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` (readable by ``emulator://?params=FILE``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def write_plot(self, path: str | os.PathLike[str], max_devices: int = 24) -> Path:
        """A PNG: readings and fitted curves of some devices, and the parameter histograms."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(
            1, 4, figsize=(17, 4.6), gridspec_kw={"width_ratios": [2.2, 1, 1, 1]}
        )
        ax = axes[0]
        shown = np.flatnonzero(self.ok)[:: max(1, int(self.ok.sum()) // max_devices)][:max_devices]
        colours = plt.cm.viridis(np.linspace(0, 1, max(len(shown), 1)))
        for colour, i in zip(colours, shown, strict=False):
            pulses, r = self.data[int(self.cells[i])]
            v = {k: self.values[k][i] for k in ("r0", "r1", "a", "n0")}
            m = np.geomspace(1, max(pulses.max(), 1), 200)
            ax.plot(pulses + 1, r / 1e6, "o", ms=2.5, color=colour, alpha=0.7)
            curve = v["r0"] + v["r1"] * (v["n0"] + m - 1) ** v["a"]
            ax.plot(m, curve / 1e6, "-", lw=1, color=colour)
        ax.plot([], [], "o", ms=3, color="0.4", label="readings")
        ax.plot([], [], "-", color="0.4", label="fitted R0 + R1 (n0 + m)^a")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("pulses in the record + 1 (m + 1)")
        ax.set_ylabel("resistance (megaohm)")
        ax.set_title(
            f"R(m): {len(shown)} of {int(self.ok.sum())} devices, one colour per device",
            fontsize=9,
        )
        summary = self.summary()
        for ax, name, label in zip(
            axes[1:], ("r0", "r1", "a"), ("R0 (ohm)", "R1 (ohm)", "a (exponent)"), strict=True
        ):
            v = self.values[name][self.ok]
            ax.hist(v, bins=max(5, min(40, v.size // 4)), color="tab:blue", alpha=0.8)
            s = summary[name]
            fixed = name == "r0" and self.r0_fixed is not None
            ax.axvline(s["median"], color="black", lw=1, ls="--", label="median")
            ax.set_title(
                f"{label}: fixed at {self.r0_fixed:g} ohm"
                if fixed
                else f"{label}: median {s['median']:.3g}\nrelative sigma (sd / |median|) "
                f"{s['sigma']:.3f}",
                fontsize=9,
            )
            ax.set_xlabel(label)
            ax.set_ylabel("devices")
            ax.legend(loc="upper right", fontsize=8)
        fig.suptitle(
            f"Power-law fit of {int(self.ok.sum())} devices at {self.voltage:g} V "
            "(histograms: device-to-device spread)",
            fontsize=10,
        )
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def fit_devices(
    data: dict[int, tuple[np.ndarray, np.ndarray]],
    shape: tuple[int, int],
    voltage: float,
    r0: float | str | None = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit every device of ``{cell: (pulses, resistance)}``.

    Parameters
    ----------
    data : dict
        Readings per row-major cell index, as :meth:`.Readings.by_cell` returns.
    shape : tuple of int
        The crossbar's shape.
    voltage : float
        Pulse voltage of the measurement.
    r0 : "auto", "free" or float
        ``"free"`` fits ``R0`` per device; a number fixes it; ``"auto"`` (default) fits it and,
        if the readings do not determine it (median standard error above
        ``R0_IDENTIFIABLE`` of the median), fits again with ``R0`` fixed at the nominal
        :class:`.PowerLaw` value, noting why.
    progress : callable, optional
        ``progress(done, total)`` after each device.
    """
    if isinstance(r0, str) and r0 not in ("auto", "free"):
        raise ValueError(f"r0={r0!r} must be 'auto', 'free' or a resistance in ohm")
    fixed = None if isinstance(r0, str) else float(r0)
    if fixed is not None and not fixed >= 0:
        raise ValueError(f"a fixed R0 must be >= 0 ohm, got {fixed}")
    cells = np.array(sorted(data), dtype=np.int64)
    effects = read_effects(data)
    result = _fit_all(cells, data, shape, voltage, fixed, progress, effects)
    if r0 == "auto":
        s = result.summary()["r0"]
        se = np.median(result.values["se_r0"][result.ok]) if result.ok.any() else np.inf
        if not (s["median"] > 0 and se < R0_IDENTIFIABLE * s["median"]):
            nominal = PowerLaw().r0
            result = _fit_all(cells, data, shape, voltage, nominal, progress, effects)
            result.notes.insert(
                0,
                f"R0 is not determined by these readings (fitted median {s['median']:.4g} ohm, "
                f"median standard error {se:.3g} ohm), so it was fixed at the nominal "
                f"{nominal:g} ohm; R1, a and R_init were fitted with it. Give --r0 to choose "
                "another value.",
            )
    return result


def _fit_all(
    cells: np.ndarray,
    data: dict[int, tuple[np.ndarray, np.ndarray]],
    shape: tuple[int, int],
    voltage: float,
    r0: float | None,
    progress: Callable[[int, int], None] | None,
    effects: ReadEffects,
) -> FitResult:
    stuck = np.isin(cells, effects.stuck if effects.stuck is not None else [])
    fits = []
    for done, (cell, frozen) in enumerate(zip(cells, stuck, strict=True), 1):
        fits.append(_failed() if frozen else fit_device(*data[int(cell)], r0=r0))
        if progress is not None:
            progress(done, cells.size)
    keys = ("r0", "r1", "a", "n0", "r_init", "rms", "se_r0", "se_r1", "se_a", "ok")
    values = {k: np.array([f[k] for f in fits], dtype=np.float64) for k in keys}
    if not cells.size:
        values = {k: np.empty(0) for k in keys}
    result = FitResult(cells, values, shape, voltage, r0_fixed=r0, data=data, effects=effects)
    if stuck.any():
        result.notes.append(
            f"{int(stuck.sum())} of {cells.size} devices are stuck (no pulse moved them beyond "
            "the read noise); they are left out of the fit and counted in the emulator's stuck="
        )
    failed = int(cells.size - result.ok.sum() - stuck.sum())
    if failed:
        result.notes.append(
            f"{failed} of {cells.size} devices could not be fitted (fewer than {MIN_POINTS} "
            "distinct pulse counts, or no valid power law through their readings); they are "
            "left out of the medians and spreads"
        )
        negative = int(np.count_nonzero(values["r0"] < 0))
        if negative:
            result.notes.append(
                f"{negative} of them fitted a negative R0 (not a resistance: the readings do "
                "not determine R0); fix it with --r0 (r0=...) or use 'auto'"
            )
    return result


def fit_record(
    record: Record,
    r0: float | str | None = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit every device that was read in a record (for example one ``characterize`` wrote).

    Raises
    ------
    ValueError
        If the record's pulses used more than one voltage, or no cell was read.
    """
    voltages = set()
    for event in record.batches():
        if event.error is None and event.voltage is not None and event.voltage.size:
            voltages.update(np.unique(event.voltage).tolist())
    if len(voltages) > 1:
        raise ValueError(
            f"{record.path}: the record mixes pulse voltages {sorted(voltages)}; the fit needs "
            "one (the exponent depends on the voltage): characterize at one voltage per record"
        )
    if not voltages:
        raise ValueError(f"{record.path}: the record holds no applied pulses to fit")
    data = record.readings().by_cell()
    if not data:
        raise ValueError(f"{record.path}: the record holds no resistance readings to fit")
    return fit_devices(data, record.shape, voltages.pop(), r0=r0, progress=progress)
