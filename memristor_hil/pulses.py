"""Pulse batches and the safety limits they are checked against.

Pure NumPy: the device abstraction layer imports no compiled kernels. A backend with a faster
way to turn addresses into cell indices (the emulator's compiled loop) overrides
:meth:`memristor_hil.Crossbar._locate`; the checks stay the same.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import AddressError, InvalidBatchError, SafetyLimitError

__all__ = ["Cells", "PulseBatch", "SafetyLimits", "cell_indices", "outside_error"]


@dataclass(frozen=True)
class SafetyLimits:
    """What a crossbar will accept; checked by the host before anything is sent.

    Parameters
    ----------
    v_min, v_max : float
        Allowed pulse voltages, in volt (negative voltages are RESET pulses).
    width_min, width_max : float
        Allowed pulse widths, in seconds.
    max_pulses : int
        Most pulses one batch *entry* may give its cell (docs/protocol.md, section 1: a cell
        named in several entries may receive more in all, entry by entry).
    compliance : float
        Current compliance, in ampere, that the controller enforces during pulses.
    """

    v_min: float = -1.5
    v_max: float = 1.5
    width_min: float = 1e-8
    width_max: float = 1e-3
    max_pulses: int = 65_535
    compliance: float = 1e-3

    def __post_init__(self) -> None:
        if not (np.isfinite(self.v_min) and np.isfinite(self.v_max) and self.v_min < self.v_max):
            raise ValueError(f"need finite v_min < v_max, got {self.v_min}, {self.v_max}")
        if not (0 < self.width_min <= self.width_max < np.inf):
            raise ValueError(
                f"need 0 < width_min <= width_max, got {self.width_min}, {self.width_max}"
            )
        if not 0 < int(self.max_pulses) <= 2**31 - 1:
            raise ValueError(f"max_pulses={self.max_pulses} must be in [1, 2**31 - 1]")
        if not (0 < self.compliance < np.inf):
            raise ValueError(f"compliance={self.compliance} must be positive")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields in their fixed order (the order of :meth:`as_tuple` and the wire)."""
        return tuple(f.name for f in fields(cls))

    def as_tuple(self) -> tuple[float, float, float, float, int, float]:
        """The fields as a tuple, in :meth:`field_names` order."""
        return astuple(self)  # type: ignore[return-value]

    @classmethod
    def from_tuple(cls, values: tuple | list | np.ndarray) -> SafetyLimits:
        """The inverse of :meth:`as_tuple` (``max_pulses`` made an int)."""
        kwargs = {name: float(value) for name, value in zip(cls.field_names(), values, strict=True)}
        kwargs["max_pulses"] = int(kwargs["max_pulses"])
        return cls(**kwargs)  # type: ignore[arg-type]

    def within(self, outer: SafetyLimits, fields: tuple[str, ...] | None = None) -> bool:
        """Whether these limits allow nothing that ``outer`` refuses: every range inside
        ``outer``'s, ``max_pulses`` and ``compliance`` no larger. ``fields`` restricts the
        comparison (an instrument that states only its voltage and width ranges)."""
        names = self.field_names() if fields is None else fields
        for name in names:
            mine, theirs = getattr(self, name), getattr(outer, name)
            if (mine < theirs) if name in ("v_min", "width_min") else (mine > theirs):
                return False
        return True

    def check_within(
        self, outer: SafetyLimits, what: str, fields: tuple[str, ...] | None = None
    ) -> None:
        """Raise :class:`SafetyLimitError` unless :meth:`within` ``outer`` (``what`` names
        whose limits ``outer`` are, for the message)."""
        if not self.within(outer, fields):
            names = self.field_names() if fields is None else fields
            allowed = ", ".join(f"{name}={getattr(outer, name)}" for name in names)
            raise SafetyLimitError(
                f"limits {self} lie outside what the instrument can do ({what}: {allowed})"
            )

    def narrowed(self, other: SafetyLimits) -> SafetyLimits:
        """The limits both allow: the intersection of the ranges, the smaller counts.

        Raises
        ------
        ValueError
            If the ranges do not overlap.
        """
        return SafetyLimits(
            max(self.v_min, other.v_min),
            min(self.v_max, other.v_max),
            max(self.width_min, other.width_min),
            min(self.width_max, other.width_max),
            min(self.max_pulses, other.max_pulses),
            min(self.compliance, other.compliance),
        )

    def check_voltage(self, voltage: np.ndarray | float) -> None:
        """Raise :class:`SafetyLimitError` unless every voltage is non-zero and within limits."""
        if isinstance(voltage, float):
            lo = hi = voltage
            zero = voltage == 0
        elif voltage.size == 0:  # an empty batch has nothing to check
            return
        else:
            lo, hi = voltage.min(), voltage.max()
            zero = not np.all(voltage)
        if not (self.v_min <= lo and hi <= self.v_max):
            raise SafetyLimitError(
                f"pulse voltage range [{lo}, {hi}] V is outside the safety limits "
                f"[{self.v_min}, {self.v_max}] V"
            )
        if zero:
            raise SafetyLimitError("pulse voltage must be non-zero (its sign is the polarity)")

    def check_width(self, width: np.ndarray | float) -> None:
        """Raise :class:`SafetyLimitError` unless every width is within limits."""
        if not isinstance(width, float) and width.size == 0:
            return
        lo, hi = (width, width) if isinstance(width, float) else (width.min(), width.max())
        if not (self.width_min <= lo and hi <= self.width_max):
            raise SafetyLimitError(
                f"pulse width range [{lo}, {hi}] s is outside the safety limits "
                f"[{self.width_min}, {self.width_max}] s"
            )


_ONE = np.ones(1, dtype=np.int64)
_ONE.flags.writeable = False


class Cells(NamedTuple):
    """Checked cell addresses: row-major indices, and whether they strictly ascend."""

    flat: np.ndarray
    #: True when ``flat`` is strictly ascending, so no cell is named twice.
    ascending: bool


def _as_index_array(values: ArrayLike, name: str) -> NDArray[np.integer]:
    array = values if type(values) is np.ndarray else np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 0 else array
        if array.ndim != 1:
            raise InvalidBatchError(f"{name} must be 1-D, got shape {np.shape(values)}")
    if array.dtype.kind not in "iu":
        if array.size == 0:
            return array.astype(np.int64)
        raise InvalidBatchError(f"{name} must hold integers, got dtype {array.dtype}")
    return array


class PulseBatch:
    """A batch of pulse commands: which cells, how many pulses each, at what voltage and width.

    A cell named more than once receives each entry's pulses, entry by entry in batch order
    (docs/protocol.md, section 1; at one voltage, mathematically the same as their sum).
    The batch checks what it can
    on its own (lengths, counts >= 0, finite values); :meth:`locate` checks it against a
    crossbar's shape and safety limits, before anything reaches a device.

    Parameters
    ----------
    rows, cols : array_like of int
        Cell addresses (same length).
    pulses : int or array_like of int
        Pulses per cell (one count shared by all cells, or one per cell); default 1.
    voltage : float or array_like of float
        Pulse voltage in volt; positive is SET, negative is RESET. Default 0.1 V.
    width : float or array_like of float
        Pulse width in seconds. Default 1 microsecond.

    Examples
    --------
    >>> batch = PulseBatch([0, 0, 3], [1, 1, 2], pulses=[1, 2, 5])
    >>> len(batch), batch.total_pulses
    (3, 8)
    """

    __slots__ = ("rows", "cols", "_pulses", "_max_pulses", "voltage", "width")

    def __init__(
        self,
        rows: ArrayLike,
        cols: ArrayLike,
        pulses: ArrayLike = 1,
        voltage: ArrayLike = 0.1,
        width: ArrayLike = 1e-6,
    ) -> None:
        self.rows = _as_index_array(rows, "rows")
        self.cols = _as_index_array(cols, "cols")
        size = self.rows.shape[0]
        if self.cols.shape[0] != size:
            raise InvalidBatchError(
                f"rows ({size}) and cols ({self.cols.shape[0]}) differ in length"
            )
        if type(pulses) is int:  # the common case, without numpy calls
            if pulses < 0:
                raise InvalidBatchError(f"pulse counts must be >= 0, got {pulses}")
            self._pulses = _ONE if pulses == 1 else np.array([pulses], dtype=np.int64)
            self._max_pulses = pulses
        else:
            self._pulses = self._per_cell(pulses, "pulses", size, integer=True)
            self._max_pulses = int(self._pulses.max()) if self._pulses.size else 0
            if self._pulses.size and self._pulses.min() < 0:
                raise InvalidBatchError("pulse counts must be >= 0")
        self.voltage = self._scalar_or_array(voltage, "voltage", size)
        self.width = self._scalar_or_array(width, "width", size)
        if isinstance(self.width, float):
            if not self.width > 0:
                raise InvalidBatchError(f"pulse width must be positive, got {self.width}")
        elif self.width.size and not self.width.min() > 0:
            raise InvalidBatchError("pulse widths must be positive")

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _per_cell(values: ArrayLike, name: str, size: int, integer: bool) -> np.ndarray:
        array = np.asarray(values)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.ndim != 1 or array.shape[0] not in (1, size):
            raise InvalidBatchError(f"{name} must be a scalar or have one entry per cell ({size})")
        if integer and array.dtype.kind not in "iu":
            if array.dtype.kind == "b" or not np.all(np.mod(array, 1) == 0):
                raise InvalidBatchError(f"{name} must be whole numbers, got dtype {array.dtype}")
            array = array.astype(np.int64)
        return array

    @staticmethod
    def _scalar_or_array(values: ArrayLike, name: str, size: int) -> float | np.ndarray:
        if isinstance(values, (float, int)) or np.ndim(values) == 0:
            value = float(values)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise InvalidBatchError(f"{name} must be finite, got {value}")
            return value
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.shape[0] != size:
            raise InvalidBatchError(f"{name} must be a scalar or have one entry per cell ({size})")
        if not np.all(np.isfinite(array)):
            raise InvalidBatchError(f"{name} must be finite")
        return array

    @classmethod
    def from_flat(
        cls, cells: ArrayLike, ncols: int, pulses: ArrayLike = 1, **kwargs: ArrayLike
    ) -> PulseBatch:
        """A batch addressed by flat (row-major) cell indices of a crossbar ``ncols`` wide."""
        rows, cols = np.divmod(np.asarray(cells), ncols)
        return cls(rows, cols, pulses, **kwargs)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.rows.shape[0]

    def __repr__(self) -> str:
        return (
            f"PulseBatch({len(self)} cells, {self.total_pulses} pulses, "
            f"voltage={_describe(self.voltage)} V, width={_describe(self.width)} s)"
        )

    @property
    def pulses(self) -> np.ndarray:
        """Pulses per cell, one entry per cell (a read-only view when shared)."""
        return np.broadcast_to(self._pulses, (len(self),))

    @property
    def compact_pulses(self) -> np.ndarray:
        """Pulses as stored: a single shared entry, or one per cell."""
        return self._pulses

    @property
    def total_pulses(self) -> int:
        """The number of pulses in the batch."""
        if self._pulses.shape[0] == 1:
            return int(self._pulses[0]) * len(self)
        return int(self._pulses.sum())

    @property
    def uniform_voltage(self) -> bool:
        """True when every cell is pulsed at the same voltage."""
        return isinstance(self.voltage, float)

    # ------------------------------------------------------------------ checks
    def locate(self, shape: tuple[int, int], limits: SafetyLimits) -> Cells:
        """Check the batch against a crossbar and return its row-major cell indices.

        Raises
        ------
        AddressError
            If a cell lies outside ``shape``.
        SafetyLimitError
            If a voltage, width or pulse count is outside ``limits``.
        """
        self.check(limits)
        return cell_indices(self.rows, self.cols, shape)

    def check(self, limits: SafetyLimits) -> None:
        """Check voltages, widths and pulse counts against ``limits``.

        Raises
        ------
        SafetyLimitError
            If a voltage, width or pulse count is outside ``limits``.
        """
        limits.check_voltage(self.voltage)
        limits.check_width(self.width)
        if self._max_pulses > limits.max_pulses:
            raise SafetyLimitError(
                f"{self._max_pulses} pulses on one cell exceed the limit of "
                f"{limits.max_pulses} per batch entry"
            )

    def coalesced(self) -> PulseBatch:
        """The same batch with each cell named once (pulses summed), cells in row-major order.

        Only defined for batches with one voltage and one width.
        """
        if np.ndim(self.voltage) or np.ndim(self.width):
            raise InvalidBatchError("coalesced() needs one voltage and one width for the batch")
        if len(self) == 0:
            return self
        ncols = int(self.cols.max()) + 1
        flat = self.rows.astype(np.int64) * ncols + self.cols
        cells, inverse = np.unique(flat, return_inverse=True)
        counts = np.zeros(cells.shape[0], dtype=np.int64)
        np.add.at(counts, inverse, self.pulses)
        rows, cols = np.divmod(cells, ncols)
        return PulseBatch(rows, cols, counts, self.voltage, self.width)


def cell_indices(rows: ArrayLike, cols: ArrayLike, shape: tuple[int, int]) -> Cells:
    """Row-major indices of cells, after checking that every cell lies inside ``shape``.

    Raises
    ------
    AddressError
        Naming the first cell outside the crossbar.
    """
    rows = _as_index_array(rows, "rows")
    cols = _as_index_array(cols, "cols")
    if rows.shape != cols.shape:
        raise InvalidBatchError(
            f"rows ({rows.shape[0]}) and cols ({cols.shape[0]}) differ in length"
        )
    if rows.shape[0] == 0:
        return Cells(np.empty(0, dtype=np.intp), True)
    nrows, ncols = shape
    if rows.min() < 0 or rows.max() >= nrows or cols.min() < 0 or cols.max() >= ncols:
        outside = (rows < 0) | (rows >= nrows) | (cols < 0) | (cols >= ncols)
        raise outside_error(rows, cols, int(np.argmax(outside)), shape)
    flat = rows.astype(np.intp) * ncols
    flat += cols
    ascending = bool(np.all(flat[1:] > flat[:-1]))
    return Cells(flat, ascending)


def outside_error(
    rows: np.ndarray, cols: np.ndarray, index: int, shape: tuple[int, int]
) -> AddressError:
    """The error for batch entry ``index``, which lies outside ``shape``."""
    return AddressError(
        f"cell ({int(rows[index])}, {int(cols[index])}) is outside the "
        f"{shape[0]}x{shape[1]} crossbar"
    )


def _describe(value: float | np.ndarray) -> str:
    if np.ndim(value) == 0:
        return f"{value:g}"
    if value.size == 0:
        return "[]"
    return f"[{value.min():g}..{value.max():g}]"
