"""EmulatedCrossbar: an in-process crossbar of power-law memristors."""

from __future__ import annotations

import json
import os
import tempfile
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from memristor_hil.crossbar import Crossbar
from memristor_hil.errors import InvalidBatchError
from memristor_hil.powerlaw import DeviceParameters, PowerLaw
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits, outside_error

from . import kernels

__all__ = ["EmulatedCrossbar", "remove_interrupted_saves"]

_STATE_FORMAT = 1
_EMPTY = np.empty(0)
#: Bytes the per-voltage ``a / a(V)`` arrays of a crossbar with device variability may hold
#: together (one array is rows x cols values; the least recently used is dropped first).
RATIO_CACHE_BYTES = 32 << 20
#: Per-cell-voltage batches naming a cell more often than this take one compiled pass instead
#: of a NumPy round per repetition (results then agree with the NumPy reference to rounding).
MAX_ROUNDS = 16


class EmulatedCrossbar(Crossbar):
    """A software crossbar whose cells follow :class:`~memristor_hil.PowerLaw`.

    Each cell's state is its pulse count; a batch touches only the cells it names, so the cost
    of :meth:`~.Crossbar.apply` and :meth:`~.Crossbar.read` grows with the batch, not with the
    crossbar.

    Parameters
    ----------
    rows, cols : int
        Shape of the crossbar.
    model : PowerLaw, optional
        Device model, including any device-to-device variability and noise.
    seed : int, optional
        Seed for the devices drawn and for cycle-to-cycle noise; the same seed gives the same
        crossbar.
    limits : SafetyLimits, optional
        Safety limits (default :class:`.SafetyLimits`).

    Examples
    --------
    >>> from memristor_hil import PulseBatch
    >>> with EmulatedCrossbar(4, 4, seed=1) as xbar:
    ...     r = xbar.apply(PulseBatch([0, 1], [0, 1], pulses=10), read_back=True)
    >>> r.shape
    (2,)
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        model: PowerLaw | None = None,
        *,
        seed: int | None = None,
        limits: SafetyLimits | None = None,
    ) -> None:
        self._model = model or PowerLaw()
        super().__init__(
            (rows, cols),
            limits=limits,
            identity=f"memristor-hil,EmulatedCrossbar,{rows}x{cols},seed={seed}",
        )
        self.seed = seed
        device_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
        self._ratio_cache: dict[float, np.ndarray] = {}
        self._last_ratio: tuple[float | None, np.ndarray] = (None, _EMPTY)
        self._bind(*self._model.sample_devices(self.size, np.random.default_rng(device_seed)))
        self._noise_rng = np.random.default_rng(noise_seed)
        # Scratch for the cell indices of a batch, reused from batch to batch: the indices
        # never leave the crossbar, so a learning rule's step allocates nothing in proportion
        # to its batch but the read-back it returns. Small batches use a small buffer; the
        # first large one gets room for every cell at once (only a batch naming cells twice
        # can need more), in 32-bit indices where the crossbar allows.
        self._index_type = np.int32 if self.size < 2**31 else np.intp
        self._flat_scratch = np.empty(4096, dtype=self._index_type)
        self._flat_unsigned = _unsigned(self._flat_scratch)
        self._no_read_back = np.empty(0, self._n.dtype)
        self._float32 = self._n.dtype == np.float32  # (the dtype never changes)

    def _bind(self, params: DeviceParameters, n: np.ndarray) -> None:
        """Make ``params`` and the state ``n`` the devices', with everything derived from them
        (the SET floor, the kernels' group, the voltage ratios), in one place."""
        self._params = params
        self._n = n
        self._n_min = params.n_min
        self._devices = tuple(kernels.Devices.of(n, self._n_min, params))  # see kernels
        self._ratio_cache.clear()
        self._last_ratio = (None, _EMPTY)

    @property
    def params(self) -> DeviceParameters:
        """The cells' drawn parameters. Assigning others re-derives what depends on them (the
        SET floor, the voltage ratios, the compiled kernels' copy)."""
        return self._params

    @params.setter
    def params(self, value: DeviceParameters) -> None:
        self._bind(value, self._n)

    # ------------------------------------------------------------------ capabilities
    @property
    def model(self) -> PowerLaw:
        """The device model the cells are drawn from."""
        return self._model

    @property
    def device_parameters(self) -> DeviceParameters:
        """The cells' drawn parameters (see :attr:`.Crossbar.device_parameters`)."""
        return self.params

    @property
    def can_restore(self) -> bool:
        """Always True: an emulator can return to any :meth:`snapshot`."""
        return True

    # ------------------------------------------------------------------ state
    @property
    def pulse_counts(self) -> np.ndarray:
        """Each cell's pulse count (the model state), shape ``(rows, cols)``; a copy."""
        return self._n.reshape(self.shape).copy()

    def _ratio(self, voltage: float) -> np.ndarray:
        """``a / a(V)`` per device (single entry when shared) for a batch at one voltage.

        Cached per voltage, least recently used first out, within :data:`RATIO_CACHE_BYTES`
        (at least the newest entry is kept): a stream of distinct voltages never grows memory.
        """
        if voltage == self._last_ratio[0]:  # the same voltage as the last batch: no reordering
            return self._last_ratio[1]
        cache = self._ratio_cache
        ratio = cache.pop(voltage, None)
        if ratio is None:
            a_v = self._model.exponent(voltage, self.params)
            if np.any(a_v >= 0):
                raise InvalidBatchError(
                    f"the model's exponent a(V) is not negative at {voltage} V: "
                    "no SET is possible at that voltage"
                )
            ratio = np.asarray(self.params.a / a_v, dtype=self._n.dtype)
            if voltage == self._model.v_ref:
                ratio = np.ones(1, dtype=self._n.dtype)
            while cache and (len(cache) + 1) * ratio.nbytes > RATIO_CACHE_BYTES:
                del cache[next(iter(cache))]
        cache[voltage] = ratio  # (re)inserted last: the most recently used
        self._last_ratio = (voltage, ratio)
        return ratio

    def _check_set_voltages(self, flat: np.ndarray, voltage: np.ndarray) -> None:
        """Raise where a positive per-cell voltage gives ``a(V) >= 0`` on its own device.

        Only the cells named are looked at, so the cost (time and memory) follows the batch,
        never the crossbar times the number of distinct voltages.
        """
        positive = voltage > 0
        if not np.any(positive):
            return
        params = _gather(self.params, flat[positive]) if self.params.per_device else self.params
        a_v = self._model.exponent(voltage[positive], params)
        bad = np.flatnonzero(a_v >= 0)
        if bad.size:
            v = float(voltage[positive][bad[0]])
            raise InvalidBatchError(
                f"the model's exponent a(V) is not negative at {v} V: "
                "no SET is possible at that voltage"
            )

    # ------------------------------------------------------------------ Crossbar hooks
    def _locate(self, rows: ArrayLike, cols: ArrayLike) -> Cells:
        # The base class's NumPy check, in one compiled pass that also finds whether the
        # cells ascend (the fast path of _apply).
        if type(rows) is not np.ndarray or type(cols) is not np.ndarray:
            return super()._locate(rows, cols)
        if rows.ndim != 1 or rows.shape != cols.shape or rows.dtype.kind not in "iu":
            return super()._locate(rows, cols)
        if cols.dtype.kind not in "iu":
            return super()._locate(rows, cols)
        size = rows.shape[0]
        if self._flat_scratch.shape[0] < size:
            self._grow_scratch(size)
        out = self._flat_scratch[:size]
        bad, ascending = kernels.flat_indices(rows, cols, self.shape[0], self.shape[1], out)
        if bad >= 0:
            raise outside_error(rows, cols, bad, self.shape)
        return Cells(out, ascending)

    def _apply_batch(
        self, batch: PulseBatch, read_back: bool, out: np.ndarray | None
    ) -> np.ndarray | None:
        voltage = batch.voltage
        if type(voltage) is not float or voltage <= 0:  # per-cell voltages, or RESET
            flat = self._locate(batch.rows, batch.cols).flat
            self._apply_general(batch, flat)
            return _into(out, self._read(flat)) if read_back else None
        ratio = self._ratio(voltage)  # raises before any state changes
        rows, cols = batch.rows, batch.cols
        size = rows.shape[0]
        if self._flat_scratch.shape[0] < size:
            self._grow_scratch(size)
        n = self._n
        params = self.params
        if not read_back:
            result = self._no_read_back
        elif out is not None and out.dtype == n.dtype and out.flags.c_contiguous:
            result = out  # the caller's buffer, written directly
        else:
            result = np.empty(size, n.dtype)
        if self._float32:
            convert = kernels.FLOAT32_LAW
        elif params.r0.shape[0] == 1:  # shared parameters
            convert = kernels.SHARED_FLOAT64_LAW
        else:
            convert = kernels.STATES
        model = self._model
        # One compiled call: check the cells (all of them before any state changes), pulse
        # them, and turn their new states into the read-back in one vectorised pass. The
        # indices go to the unsigned view of the scratch: checked non-negative, they spare the
        # compiled loop numba's negative-index wraparound.
        draws = self._noise_rng.standard_normal(size) if model.noise > 0 else _EMPTY
        bad = kernels.locate_and_apply(
            rows,
            cols,
            self._shape,
            self._flat_unsigned,
            self._devices,
            tuple(kernels.SetPulses(batch.compact_pulses, ratio, model.noise, draws)),
            tuple(kernels.ReadBack(result, convert)),
        )
        if bad >= 0:
            raise outside_error(rows, cols, bad, self._shape)
        if not read_back:
            return None
        if convert == kernels.STATES:
            kernels.resistance(result, params, self._flat_scratch[:size])
        return result if out is None or result is out else _into(out, result)

    def reserve(self, entries: int) -> None:
        """Size the cell-index scratch for batches of ``entries`` entries now (see
        :meth:`.Crossbar.reserve`): exactly, as a larger batch later still grows it."""
        if self._flat_scratch.shape[0] < entries:
            self._grow_scratch(entries, exact=True)

    def _grow_scratch(self, size: int, exact: bool = False) -> None:
        """Room for ``size`` indices: ``exact``ly, or for every cell at once (and ``size``)."""
        size = size if exact else max(size, self.size)
        self._flat_scratch = np.empty(size, self._index_type)
        self._flat_unsigned = _unsigned(self._flat_scratch)

    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        # Not reached through apply() (see _apply_batch, which checks the cells itself).
        return self._apply_batch(batch, read_back, None)

    def _draws(self, count: int) -> np.ndarray:
        if self._model.noise > 0:
            return self._noise_rng.standard_normal(count)
        return _EMPTY

    def _apply_general(self, batch: PulseBatch, flat: np.ndarray) -> None:
        """Per-cell voltages or RESET pulses, through the numpy reference model."""
        voltage = np.broadcast_to(np.asarray(batch.voltage, dtype=float), (len(flat),))
        if np.any(voltage < 0) and not self._model.reset:
            raise InvalidBatchError(
                "negative (RESET) voltages need a model with reset=True; this emulator's model "
                "has only the SET branch"
            )
        self._check_set_voltages(flat, voltage)  # raises before any state changes
        pulses = batch.pulses
        draws = self._draws(len(flat)) if self._model.noise > 0 else None
        # Round k applies the k-th entry naming each cell, so duplicates accumulate exactly and
        # in order; the rounds are found in one sort (a cell named m times costs m rounds, not
        # m passes over the whole batch).
        rank = _occurrence_rank(flat)
        if len(rank) and rank.max() >= MAX_ROUNDS and np.all(voltage > 0):
            # a cell named many times: one compiled pass in batch order instead of a NumPy
            # round per repetition (2^20 repetitions would hold the service for minutes)
            model = self._model
            ft = self._n.dtype
            pulses_each = kernels.VoltagePulses(
                counts=np.ascontiguousarray(pulses, dtype=ft),
                voltage=np.ascontiguousarray(voltage, dtype=ft),
                a_slope=model.a_slope,
                v_ref=model.v_ref,
                noise=model.noise,
                draws=_EMPTY if draws is None else draws,
            )
            kernels.add_set_pulses_each_voltage(self._devices, _unsigned(flat), tuple(pulses_each))
            return
        for take in _rounds(rank):
            cells = flat[take]
            params = _gather(self.params, cells) if self.params.per_device else self.params
            self._n[cells] = self._model.after_pulses(
                self._n[cells],
                pulses[take],
                voltage[take],
                params,
                None if draws is None else draws[take],
            )

    def _read(self, flat: np.ndarray) -> np.ndarray:
        x = kernels.gather(self._n, flat, np.empty(len(flat), self._n.dtype))
        return kernels.resistance(x, self.params, flat)

    def _read_all(self) -> np.ndarray:
        return kernels.resistance(self._n.copy(), self.params).reshape(self.shape)

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, object]:
        """An in-memory copy of the device state (pulse counts and noise generator); the
        pulse counts of devices that all have the same are kept as one value.

        Pass it to :meth:`restore` to return every device to this moment, e.g. when a
        simulation that pulsed them restarts from its first step.
        """
        n = self._n
        # A crossbar that has not been pulsed yet has every device at the model's start
        # (mPES snapshots at build): one value then stands for them all, instead of a second
        # copy of the whole state held for the rest of the run.
        bits = n.view(f"u{n.itemsize}")  # bit for bit: -0.0 and NaNs as they are
        uniform = n.size > 0 and not np.any(bits != bits[0])
        return {
            "n": n[:1].copy().reshape(()) if uniform else n.copy(),
            "devices": n.shape,
            "params": self.params,
            "noise_rng": self._noise_rng.bit_generator.state,
        }

    def restore(self, snapshot: dict[str, object]) -> None:
        """Return every device to the state a :meth:`snapshot` of this crossbar recorded."""
        n = snapshot["n"]
        if not isinstance(n, np.ndarray) or snapshot.get("devices", n.shape) != self._n.shape:
            raise ValueError("the snapshot is not from a crossbar of this shape")
        self._check_open()
        self._n[...] = n
        if snapshot["params"] is not self.params:
            self._bind(snapshot["params"], self._n)  # type: ignore[arg-type]
        self._noise_rng.bit_generator.state = snapshot["noise_rng"]

    # ------------------------------------------------------------------ persistence
    def save_state(
        self, path: str | os.PathLike[str], extra: dict[str, np.ndarray] | None = None
    ) -> None:
        """Write the device state to ``path`` atomically (a crash never leaves half a file).

        The file is a numpy ``.npz`` of plain arrays plus JSON text; nothing in it is pickled.
        ``extra`` arrays are stored beside the state in the same atomic write (the emulator
        service keeps its sequence window there); :meth:`load_state` ignores them.
        """
        meta = {
            "format": _STATE_FORMAT,
            "shape": list(self.shape),
            "seed": self.seed,
            "model": self._model.to_dict(),
            "noise_rng": self._noise_rng.bit_generator.state,
        }
        arrays = {
            "n": self._n,
            "r0": self.params.r0,
            "r1": self.params.r1,
            "a": self.params.a,
            "meta": np.array(json.dumps(meta)),
        }
        clash = set(arrays) & set(extra or {})
        if clash:
            raise ValueError(f"extra state arrays may not use the names {sorted(clash)}")
        arrays.update(extra or {})
        _atomic_savez(Path(path), arrays)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Restore a state written by :meth:`save_state` for a crossbar of the same shape."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != _STATE_FORMAT:
                raise ValueError(f"{path}: unknown state format {meta.get('format')!r}")
            if tuple(meta["shape"]) != self.shape:
                raise ValueError(
                    f"{path}: state is for a {meta['shape']} crossbar, not {self.shape}"
                )
            ft = self._n.dtype
            n = np.asarray(data["n"], dtype=ft)
            params = DeviceParameters(
                r0=np.asarray(data["r0"], ft),
                r1=np.asarray(data["r1"], ft),
                a=np.asarray(data["a"], ft),
            )
        if n.shape != self._n.shape or not np.all(np.isfinite(n)):
            raise ValueError(f"{path}: state array is damaged")
        self._bind(params, n)
        self._noise_rng.bit_generator.state = meta["noise_rng"]

    @classmethod
    def from_state(
        cls, path: str | os.PathLike[str], limits: SafetyLimits | None = None
    ) -> EmulatedCrossbar:
        """A crossbar rebuilt from a file written by :meth:`save_state`.

        Raises
        ------
        ValueError
            If an :class:`~.ArrayCrossbar` wrote the file (its circuit would be
            lost): ``emulator.state.crossbar_from_state`` opens either kind.
        """
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            array = "array_meta" in data.files
        if array and cls is EmulatedCrossbar:
            raise ValueError(
                f"{path} holds an array crossbar's state: open it with "
                "emulator.state.crossbar_from_state (or ArrayCrossbar.from_state)"
            )
        xbar = cls(
            *meta["shape"],
            model=PowerLaw.from_dict(meta["model"]),
            seed=meta["seed"],
            limits=limits,
        )
        xbar.load_state(path)
        return xbar


def remove_interrupted_saves(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that saves of ``path`` left when they were killed midway.

    :meth:`EmulatedCrossbar.save_state` writes ``.<name>.<random>.tmp`` beside ``path`` and
    renames it over ``path``; a process killed between the two leaves the temporary behind.
    Call this when nothing else is saving to ``path`` (a service does, at start). Returns the
    files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{_TMP_PREFIX}{glob_escape(path.name)}.*{_TMP_SUFFIX}"):
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed


_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` into a temporary file beside ``path``, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{_TMP_PREFIX}{path.name}.", suffix=_TMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _occurrence_rank(flat: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries name the same cell (0 for a first one)."""
    rank = np.empty(len(flat), np.intp)
    if not len(flat):
        return rank
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    new_cell = np.empty(len(flat), bool)
    new_cell[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_cell[1:])
    starts = np.flatnonzero(new_cell)
    rank[order] = np.arange(len(flat)) - np.repeat(starts, np.diff(np.append(starts, len(flat))))
    return rank


def _rounds(rank: np.ndarray) -> list[np.ndarray]:
    """Entry indices by round: round k holds the entries of rank k (each cell at most once)."""
    if not len(rank):
        return []
    by_round = np.argsort(rank, kind="stable")
    return np.split(by_round, np.cumsum(np.bincount(rank))[:-1])


def _gather(params: DeviceParameters, cells: np.ndarray) -> DeviceParameters:
    return DeviceParameters(r0=params.r0[cells], r1=params.r1[cells], a=params.a[cells])


def _unsigned(flat: np.ndarray) -> np.ndarray:
    """Checked (non-negative) cell indices viewed unsigned, of the same width: the compiled
    loops then skip numba's negative-index wraparound on every access."""
    return flat.view(np.uint32 if flat.dtype == np.int32 else np.uintp)


def _into(out: np.ndarray | None, result: np.ndarray) -> np.ndarray:
    """``result``, or ``out`` holding a copy of it when a caller's buffer was given."""
    if out is None:
        return result
    out[...] = result
    return out
