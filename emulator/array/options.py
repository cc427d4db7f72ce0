"""What an emulated array adds to ideal devices: its circuit and schemes, and device effects.

Each field's check names the URL option that sets it, so ``emulator://?...`` refuses bad input
at open with a message that says which option is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["READ_SCHEMES", "WRITE_SCHEMES", "ArrayOptions", "DeviceEffects", "Wiring"]

#: Bias of the unselected word lines and bit lines, as fractions of the selected row's
#: voltage (the selected bit line is at 0 V); None: unselected lines float. "ideal" reads and
#: writes each device alone, without the circuit (today's emulator).
READ_SCHEMES: dict[str, tuple[float, float] | None] = {
    "grounded": (0.0, 0.0),
    "v2": (0.5, 0.5),
    "v3": (1 / 3, 2 / 3),
    "floating": None,
}
WRITE_SCHEMES: dict[str, tuple[float, float] | None] = {
    "v2": (0.5, 0.5),
    "v3": (1 / 3, 2 / 3),
    "floating": None,
}
GROUPINGS = ("row", "cell")


@dataclass(frozen=True)
class Wiring:
    """The array's interconnect, in ohm.

    Parameters
    ----------
    row_wire, col_wire : float
        Resistance of one word-line segment (between two adjacent columns, and from an end to
        its first node) and of one bit-line segment.
    row_end, col_end : float
        Resistance between a held line end and its source: the word-line drivers' source
        resistance and the bit-line drivers' (or sense amplifiers') resistance. It adds to the
        end segment's wire resistance.
    """

    row_wire: float = 0.0
    col_wire: float = 0.0
    row_end: float = 0.0
    col_end: float = 0.0

    def __post_init__(self) -> None:
        for name in ("row_wire", "col_wire", "row_end", "col_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r} must be a finite resistance >= 0 ohm")

    @property
    def ideal(self) -> bool:
        """True when every wire and end resistance is zero."""
        return not (self.row_wire or self.col_wire or self.row_end or self.col_end)


def _resistance(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a finite resistance >= 0 ohm")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be finite and > 0")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be finite and >= 0")


def _fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ValueError(f"{name}={value!r} must be a fraction in [0, 1]")


@dataclass(frozen=True)
class ArrayOptions:
    """The array's circuit and how it is read and written.

    Parameters
    ----------
    wiring : Wiring
        Wire and end resistances (URL ``wire`` for both line kinds, ``row_wire``,
        ``col_wire``, ``row_end``, ``col_end``).
    read : str
        Read scheme (URL ``read``): "ideal" (each device alone), "grounded", "v2", "v3" or
        "floating"; see ``READ_SCHEMES``.
    write : str
        Write scheme (URL ``write``): "ideal", "v2", "v3" or "floating".
    group : str
        How a write batch becomes array operations (URL ``group``): "row" (one operation
        per row slice and pulse count, as ArC TWO programs) or "cell" (one per cell).
    v_read : float
        Read voltage in volt (URL ``v_read``).
    threshold : float
        Smallest voltage magnitude, in volt, at which an unselected device responds to a
        write's bias (URL ``threshold``). The device model has no threshold of its own (a(V)
        stays negative down to 0 V), and none is published for Nb:STO: this is an assumption.
    """

    wiring: Wiring = field(default_factory=Wiring)
    read: str = "ideal"
    write: str = "ideal"
    group: str = "row"
    v_read: float = 0.1
    threshold: float = 0.03

    def __post_init__(self) -> None:
        if self.read != "ideal" and self.read not in READ_SCHEMES:
            raise ValueError(
                f"read={self.read!r} is not a read scheme; known: ideal, {', '.join(READ_SCHEMES)}"
            )
        if self.write != "ideal" and self.write not in WRITE_SCHEMES:
            raise ValueError(
                f"write={self.write!r} is not a write scheme; known: ideal, "
                f"{', '.join(WRITE_SCHEMES)}"
            )
        if self.group not in GROUPINGS:
            raise ValueError(f"group={self.group!r} must be one of {', '.join(GROUPINGS)}")
        _positive("v_read", self.v_read)
        _non_negative("threshold", self.threshold)
        if not self.wiring.ideal and self.read == "ideal" and self.write == "ideal":
            raise ValueError(
                "wire resistance needs a read= or write= scheme that goes through the array "
                f"(read: {', '.join(READ_SCHEMES)}; write: {', '.join(WRITE_SCHEMES)})"
            )


@dataclass(frozen=True)
class DeviceEffects:
    """Device and converter non-idealities, each off by default and seeded by the crossbar.

    Parameters
    ----------
    read_noise : float
        Relative read noise (URL ``read_noise``): each read's current is multiplied by
        ``1 + read_noise * xi``, a fresh standard normal ``xi`` per cell and read.
    drift : float
        Mean drift exponent nu (URL ``drift``): a device written at ``t_w`` reads
        ``R(t) = R_w ((t - t_w + t0) / t0) ** nu`` (aihwkit's g(t) = g0 ((t + t0)/t0)^-nu, the
        clock restarting at each write), ``t0`` = ``DRIFT_T0``.
    drift_sigma : float
        Device-to-device standard deviation of nu, relative to ``drift`` (URL
        ``drift_sigma``); exponents are clipped at 0.
    stuck : float
        Fraction of devices stuck (URL ``stuck``), half at the model's ``r1`` (high) and half
        at ``r0`` (low), drawn once per seed; they never change.
    adc_bits : int or None
        Read-back resolution (URL ``adc_bits``): the read current is rounded to
        ``adc_range / 2**adc_bits`` steps within ``[0, adc_range]``.
    adc_range : float or None
        Full-scale current in ampere (URL ``adc_range``); default ``v_read / r0``, the
        current of the least resistive device. A current below half a step reads as half a
        step (the reading stays finite).
    dac_step : float
        Pulse voltage resolution in volt (URL ``dac_step``; 0 is exact): voltages are rounded
        to multiples of it before they reach the array.
    tick : float
        Seconds the simulation clock advances with each applied batch, beside the pulses'
        own duration (URL ``tick``): one learning-rule timestep per batch.
    """

    read_noise: float = 0.0
    drift: float = 0.0
    drift_sigma: float = 0.0
    stuck: float = 0.0
    adc_bits: int | None = None
    adc_range: float | None = None
    dac_step: float = 0.0
    tick: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("read_noise", self.read_noise)
        _non_negative("drift", self.drift)
        _non_negative("drift_sigma", self.drift_sigma)
        _fraction("stuck", self.stuck)
        if self.adc_bits is not None and (
            not isinstance(self.adc_bits, int) or not 1 <= self.adc_bits <= 32
        ):
            raise ValueError(f"adc_bits={self.adc_bits!r} must be a whole number in [1, 32]")
        if self.adc_range is not None:
            _positive("adc_range", self.adc_range)
        _non_negative("dac_step", self.dac_step)
        _non_negative("tick", self.tick)

    @property
    def any(self) -> bool:
        """True when any effect is on."""
        return bool(
            self.read_noise
            or self.drift
            or self.stuck
            or self.adc_bits is not None
            or self.dac_step
        )


#: Drift reference time t0 in seconds (aihwkit's PCM drift model uses 20 s).
DRIFT_T0 = 20.0
