"""The power-law memristor model, vectorised over arrays of devices.

A device's state is its (real-valued) SET pulse count ``n``; its resistance follows

.. math:: R(n) = R_0 + R_1 n^a, \\qquad a < 0,

so every SET pulse raises ``n`` by one and lowers ``R``. ``k`` pulses are applied in closed
form, ``n -> n + k``, and a measured resistance is inverted with
``n = ((R - R_0) / R_1) ** (1 / a)``. The exponent depends on the pulse voltage,
``a(V) = a + a_slope * (V - v_ref)``; with the defaults ``a(V) = -0.093 - 0.53 V``.

The state ``n`` is always expressed with the exponent at ``v_ref``. A pulse at another voltage
converts ``n`` to that voltage's exponent, adds the pulses and converts back, so the resistance
is continuous across voltage changes.

Sources and numbers: ``shared/reference/model-facts.md`` (Tiotto et al. 2021).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DeviceParameters", "PowerLaw", "Variability"]

_DTYPES = {"float64": np.float64, "float32": np.float32}
_MAX_RESAMPLE_ROUNDS = 100


@dataclass(frozen=True)
class Variability:
    """Device-to-device spread: one relative sigma per parameter (all 0, i.e. off, by default).

    Parameters
    ----------
    r0, r1, a, r_init : float
        Relative standard deviations of ``R0``, ``R1``, the exponent ``a`` and the initial
        resistance. The published experiments use 0.15 for all four.
    """

    r0: float = 0.0
    r1: float = 0.0
    a: float = 0.0
    r_init: float = 0.0

    def __post_init__(self) -> None:
        for name in ("r0", "r1", "a", "r_init"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"variability sigma {name}={value!r} must be finite and >= 0")

    @classmethod
    def uniform(cls, sigma: float) -> Variability:
        """The same relative sigma for every parameter."""
        return cls(sigma, sigma, sigma, sigma)

    @property
    def enabled(self) -> bool:
        """True when any sigma is non-zero."""
        return any((self.r0, self.r1, self.a, self.r_init))


@dataclass(frozen=True)
class DeviceParameters:
    """Per-device model parameters, as drawn by :meth:`PowerLaw.sample_devices`.

    Each array has one entry per device, or a single entry shared by all devices when the
    model has no variability (so the common case costs no memory and no gathers).
    """

    r0: NDArray[np.floating]
    r1: NDArray[np.floating]
    a: NDArray[np.floating]

    @property
    def per_device(self) -> bool:
        """True when the arrays hold one entry per device."""
        return self.r0.size > 1

    @property
    def n_min(self) -> NDArray[np.floating]:
        """Pulse count at which ``R == R1``; states are clipped up to it before a SET pulse."""
        return ((self.r1 - self.r0) / self.r1) ** (1.0 / self.a)


@dataclass(frozen=True)
class PowerLaw:
    """The power-law memristor model ``R(n) = r0 + r1 * n**a``.

    Parameters
    ----------
    r0 : float
        Resistance approached after many pulses, in ohm (``R0``, "r_min" in the papers).
    r1 : float
        Scale of the power law, in ohm (``R1``, "r_max" in the papers). ``R(1) = r0 + r1``.
    a : float
        Exponent at ``v_ref``; must be negative.
    v_ref : float
        The voltage, in volt, at which ``a`` holds and a plain SET pulse is applied.
    a_slope : float
        ``da/dV``: the exponent at voltage ``V`` is ``a + a_slope * (V - v_ref)``.
    r_init : float
        Mean initial resistance in ohm; must lie in ``(r0, r1]``.
    variability : Variability or float
        Device-to-device spread; a float is the same sigma for every parameter. Off by default.
    noise : float
        Cycle-to-cycle noise: each pulse adds ``1 + noise * xi`` to ``n`` (``xi`` standard
        normal), so ``k`` pulses add ``k + noise * sqrt(k) * xi``, never less than 0.
        Off (0) by default, as in the published rule.
    reset : bool
        Enable the RESET branch for negative voltages: ``R = r3 - r3 * m**c`` in a RESET pulse
        count ``m``, which raises the resistance towards ``r3``. Off by default (mPES only SETs).
    reset_r3 : float
        ``r3`` of the RESET branch, in ohm.
    reset_exponent : float
        ``c`` of the RESET branch; must be negative.
    dtype : {"float64", "float32"}
        Floating-point type of states and resistances.

    Examples
    --------
    >>> model = PowerLaw()
    >>> n = model.pulse_number(1e8)
    >>> float(model.resistance(model.after_pulses(n, 1000)))  # doctest: +ELLIPSIS
    80...
    """

    r0: float = 200.0
    r1: float = 2.3e8
    a: float = -0.146
    v_ref: float = 0.1
    a_slope: float = -0.53
    r_init: float = 1e8
    variability: Variability = field(default_factory=Variability)
    noise: float = 0.0
    reset: bool = False
    reset_r3: float = 1e9
    reset_exponent: float = -0.146
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if isinstance(self.variability, (int, float)):
            object.__setattr__(self, "variability", Variability.uniform(float(self.variability)))
        elif isinstance(self.variability, dict):
            object.__setattr__(self, "variability", Variability(**self.variability))
        if isinstance(self.dtype, type) or isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        for name in self.float_fields():
            if not np.isfinite(getattr(self, name)):
                raise ValueError(
                    f"PowerLaw parameter {name}={getattr(self, name)!r} must be finite"
                )
        if self.a >= 0:
            raise ValueError(f"exponent a={self.a} must be negative (a SET pulse lowers R)")
        if self.r0 <= 0:
            raise ValueError(f"r0={self.r0} must be positive")
        if self.r1 <= self.r0:
            raise ValueError(f"r1={self.r1} must be greater than r0={self.r0}")
        if not self.r0 < self.r_init <= self.r1:
            raise ValueError(f"r_init={self.r_init} must lie in (r0, r1] = ({self.r0}, {self.r1}]")
        if self.noise < 0:
            raise ValueError(f"noise={self.noise} must be >= 0")
        if self.reset_exponent >= 0:
            raise ValueError(f"reset_exponent={self.reset_exponent} must be negative")
        if self.reset_r3 <= self.r1:
            raise ValueError(f"reset_r3={self.reset_r3} must be greater than r1={self.r1}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype={self.dtype!r} must be one of {sorted(_DTYPES)}")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def float_fields(cls) -> tuple[str, ...]:
        """Names of the real-valued parameters (those a URL or parameter file may set)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.type == "float")

    @property
    def float_type(self) -> type[np.floating]:
        """The numpy floating type of states and resistances."""
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for parameter files and URLs); inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerLaw:
        """Build a model from :meth:`to_dict` output; unknown keys are a clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown PowerLaw parameters {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> PowerLaw:
        """A copy with some parameters changed."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the model
    def nominal(self) -> DeviceParameters:
        """The nominal parameters as a :class:`DeviceParameters` shared by all devices."""
        ft = self.float_type
        return DeviceParameters(
            r0=np.array([self.r0], ft), r1=np.array([self.r1], ft), a=np.array([self.a], ft)
        )

    def exponent(self, voltage: ArrayLike, params: DeviceParameters | None = None) -> np.ndarray:
        """The exponent ``a(V)`` of a SET pulse at ``voltage`` (per device with ``params``)."""
        a = self.a if params is None else params.a
        return a + self.a_slope * (np.asarray(voltage, dtype=self.float_type) - self.v_ref)

    def resistance(self, n: ArrayLike, params: DeviceParameters | None = None) -> np.ndarray:
        """Resistance ``R(n) = r0 + r1 * n**a`` in ohm."""
        p = params or self.nominal()
        n = np.asarray(n, dtype=self.float_type)
        return p.r0 + p.r1 * n**p.a

    def pulse_number(
        self, resistance: ArrayLike, params: DeviceParameters | None = None
    ) -> np.ndarray:
        """Invert the model: the pulse count ``n`` at which the device reads ``resistance``.

        Resistances are clipped into ``(r0, r1]`` first, as before a SET pulse.
        """
        p = params or self.nominal()
        r = np.asarray(resistance, dtype=self.float_type)
        tiny = np.finfo(self.float_type).tiny
        excess = np.clip((r - p.r0) / p.r1, tiny, (p.r1 - p.r0) / p.r1)
        return excess ** (1.0 / p.a)

    def conductance(self, resistance: ArrayLike) -> np.ndarray:
        """Normalised conductance ``g = (1/R - 1/r1) / (1/r0 - 1/r1)`` with the nominal r0, r1.

        ``g(r1) = 0`` and ``g(r0) = 1``. Nominal values are used on purpose: a controller reading
        real devices knows only the nominal model, so every backend maps R to g the same way.
        """
        r = np.asarray(resistance, dtype=self.float_type)
        return (1.0 / r - 1.0 / self.r1) / (1.0 / self.r0 - 1.0 / self.r1)

    def after_pulses(
        self,
        n: ArrayLike,
        pulses: ArrayLike,
        voltage: ArrayLike | None = None,
        params: DeviceParameters | None = None,
        noise_draws: ArrayLike | None = None,
    ) -> np.ndarray:
        """The state after ``pulses`` pulses at ``voltage``, in closed form.

        This is the reference (numpy) implementation; the emulator's compiled kernels are
        tested against it.

        Parameters
        ----------
        n : array_like
            Current pulse counts (state at ``v_ref``).
        pulses : array_like
            Pulses per device, >= 0.
        voltage : array_like, optional
            Pulse voltage per device (default ``v_ref``). Positive is SET; negative is RESET
            and needs ``reset=True``.
        params : DeviceParameters, optional
            Per-device parameters (default: nominal).
        noise_draws : array_like, optional
            Standard-normal draws, one per device, used when ``noise > 0``.

        Returns
        -------
        numpy.ndarray
            The new pulse counts.
        """
        ft = self.float_type
        p = params or self.nominal()
        n = np.asarray(n, dtype=ft)
        k = np.asarray(pulses, dtype=ft)
        if self.noise > 0 and noise_draws is not None:
            k = np.maximum(k + self.noise * np.sqrt(k) * np.asarray(noise_draws, dtype=ft), 0)
        v = np.asarray(self.v_ref if voltage is None else voltage, dtype=ft)
        if np.any(v == 0):
            raise ValueError("pulse voltage must be non-zero (its sign is the polarity)")
        if np.any(v < 0) and not self.reset:
            raise ValueError("negative (RESET) voltages need PowerLaw(reset=True)")
        a_v = self.exponent(np.abs(v), p)
        if np.any(a_v >= 0):
            raise ValueError(f"the exponent a(V) is not negative at some voltage in {np.unique(v)}")
        ratio = p.a / a_v
        # Before a SET pulse R is clipped into [R0, R1], i.e. n up to n_min.
        set_n = (np.maximum(n, p.n_min) ** ratio + k) ** (1.0 / ratio)
        if not self.reset:
            return set_n
        return np.where(v > 0, set_n, self._after_reset(n, k, p))

    def _after_reset(self, n: np.ndarray, k: np.ndarray, p: DeviceParameters) -> np.ndarray:
        """RESET branch: ``R = r3 - r3 * m**c``; ``k`` pulses raise ``m`` (and R) by ``k``."""
        r3, c = self.reset_r3, self.reset_exponent
        r = np.minimum(self.resistance(n, p), r3 * (1 - np.finfo(self.float_type).eps))
        m = ((r3 - r) / r3) ** (1.0 / c)
        r_new = r3 - r3 * (m + k) ** c
        excess = np.maximum((r_new - p.r0) / p.r1, np.finfo(self.float_type).tiny)
        return excess ** (1.0 / p.a)

    # ------------------------------------------------------------------ devices
    def sample_devices(
        self, count: int, rng: np.random.Generator | int | None = None
    ) -> tuple[DeviceParameters, np.ndarray]:
        """Draw ``count`` devices: their parameters and initial pulse counts.

        ``R0`` is a normal truncated to ``(0, inf)``, ``R1`` to ``[max R0, inf)``, ``a`` to
        ``(-inf, 0)`` and the initial resistance to ``(R0, R1]`` of each device (truncation
        by resampling, so the spread inside the bounds is the requested one). Without
        variability the parameters are shared (single-entry arrays).

        Parameters
        ----------
        count : int
            Number of devices.
        rng : numpy.random.Generator or int, optional
            Random generator or seed; the same seed gives the same devices.

        Returns
        -------
        params : DeviceParameters
        n : numpy.ndarray
            Initial pulse counts, shape ``(count,)``.
        """
        if count < 0:
            raise ValueError(f"count={count} must be >= 0")
        rng = np.random.default_rng(rng)
        ft = self.float_type
        var = self.variability
        if not var.enabled:
            params = self.nominal()
            n0 = np.full(count, self.pulse_number(self.r_init)[0], dtype=ft)
            return params, n0
        r0 = _truncated_normal(rng, self.r0, self.r0 * var.r0, count, low=0.0)
        r1 = _truncated_normal(rng, self.r1, self.r1 * var.r1, count, low=float(r0.max(initial=0)))
        a = _truncated_normal(rng, self.a, abs(self.a) * var.a, count, high=0.0)
        r_init = _truncated_normal(
            rng, self.r_init, self.r_init * var.r_init, count, low=r0, high=r1
        )
        params = DeviceParameters(r0=r0.astype(ft), r1=r1.astype(ft), a=a.astype(ft))
        n0 = self.pulse_number(r_init, params)
        return params, n0.astype(ft)


def _truncated_normal(
    rng: np.random.Generator,
    mean: float,
    std: float,
    size: int,
    low: float | np.ndarray = -np.inf,
    high: float | np.ndarray = np.inf,
) -> np.ndarray:
    """Normal draws, redrawing those outside ``(low, high]`` (a bounded number of rounds)."""
    values = rng.normal(mean, std, size) if std > 0 else np.full(size, float(mean))
    low = np.broadcast_to(np.asarray(low, dtype=float), (size,))
    high = np.broadcast_to(np.asarray(high, dtype=float), (size,))
    for _ in range(_MAX_RESAMPLE_ROUNDS):
        bad = ~((values > low) & (values <= high))
        if not bad.any():
            return values
        values[bad] = rng.normal(mean, std, int(bad.sum()))
    # A bound far inside the tail: fall back to clipping the few left over.
    bad = ~((values > low) & (values <= high))
    values[bad] = np.clip(mean, np.nextafter(low[bad], np.inf), high[bad])
    return values
