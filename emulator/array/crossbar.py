"""ArrayCrossbar: the emulator's devices wired into one passive crossbar circuit."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from memristor_hil.errors import InvalidBatchError
from memristor_hil.powerlaw import DeviceParameters, PowerLaw
from memristor_hil.pulses import PulseBatch, SafetyLimits

from ..crossbar import EmulatedCrossbar
from ..kernels import resistance as law_resistance
from .circuit import LU_MEMORY_LIMIT, NodalSystem, SolverLimitError, lu_bytes
from .kernels import apply_biased_operations, apply_counted_pulses, apply_counted_sets
from .measure import admittance, biased_sense_current, floating_sense_current
from .options import (
    DRIFT_T0,
    READ_SCHEMES,
    WRITE_SCHEMES,
    ArrayOptions,
    DeviceEffects,
    Wiring,
)
from .writes import Operation, biased_cells, counted_pulses, operation_fields, operations

__all__ = ["ArrayCrossbar"]


class ArrayCrossbar(EmulatedCrossbar):
    """An :class:`~.EmulatedCrossbar` whose reads and writes go through the
    array's circuit, with optional device and converter effects.

    :meth:`~.Crossbar.read`, :meth:`~.Crossbar.read_all` and the read-back of
    :meth:`~.Crossbar.apply` return what the instrument would measure (sneak currents, read
    noise, ADC steps);
    :meth:`true_resistances` returns the devices' own resistances.

    Parameters
    ----------
    rows, cols, model, seed, limits
        As :class:`~.EmulatedCrossbar`.
    array : ArrayOptions, optional
        The circuit and its read and write schemes (default: ideal, each device alone).
    effects : DeviceEffects, optional
        Read noise, drift, stuck devices, converters (default: none).
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        model: PowerLaw | None = None,
        *,
        seed: int | None = None,
        limits: SafetyLimits | None = None,
        array: ArrayOptions | None = None,
        effects: DeviceEffects | None = None,
    ) -> None:
        super().__init__(rows, cols, model, seed=seed, limits=limits)
        self._array = array or ArrayOptions()
        self._effects = fx = effects or DeviceEffects()
        self._system = NodalSystem(rows, cols, self.array.wiring)
        floating = [
            f"{k}=floating" for k in ("read", "write") if getattr(self.array, k) == "floating"
        ]
        if floating and not self.array.wiring.ideal and lu_bytes(rows, cols) > LU_MEMORY_LIMIT:
            raise SolverLimitError(
                f"{' and '.join(floating)} with wire resistance on a {rows}x{cols} array needs "
                f"the sparse LU (floating lines are not held at one end), whose factor would "
                f"take about {lu_bytes(rows, cols) / 2**30:.1f} GB, above LU_MEMORY_LIMIT = "
                f"{LU_MEMORY_LIMIT / 2**30:g} GB: use a biased scheme (grounded, v2, v3)"
            )
        # the parent draws its devices and noise from children 0 and 1 of the seed
        stuck_seed, drift_seed, read_seed = np.random.SeedSequence(seed).spawn(3)[2].spawn(3)
        self._read_rng = np.random.default_rng(read_seed)
        self.time = 0.0
        self._written_at = np.zeros(self.size)
        self._nu = np.zeros(0)
        if fx.drift:
            nu = np.random.default_rng(drift_seed).normal(
                fx.drift, fx.drift * fx.drift_sigma, self.size
            )
            self._nu = np.maximum(nu, 0.0)
        self._stuck = np.zeros(0, np.intp)
        self._stuck_r = np.zeros(0)
        if fx.stuck:
            rng = np.random.default_rng(stuck_seed)
            count = int(round(fx.stuck * self.size))
            self._stuck = np.sort(rng.choice(self.size, count, replace=False))
            high = rng.random(count) < 0.5
            self._stuck_r = np.where(high, self.model.r1, self.model.r0)
        self._stuck_mask = np.zeros(self.size if self._stuck.size else 0, np.bool_)
        self._stuck_mask[self._stuck] = True
        self._version = 0
        self._y: tuple[int, np.ndarray] | None = None
        self._columns: tuple[int, np.ndarray] | None = None
        self._y_columns: tuple[int, dict[int, np.ndarray]] | None = None

    # ------------------------------------------------------------------ state
    @property
    def array(self) -> ArrayOptions:
        """The circuit and its read and write schemes (fixed at construction)."""
        return self._array

    @property
    def effects(self) -> DeviceEffects:
        """The device and converter effects (fixed at construction: the stuck set and drift
        exponents are drawn from them)."""
        return self._effects

    @property
    def device_parameters(self) -> None:
        """None: the devices are not independent (the circuit couples them), so nothing may
        simulate them elsewhere from their parameters alone (nengo-dl's native path)."""
        return None

    def true_resistances(self) -> np.ndarray:
        """Every device's own resistance now (drift and stuck devices included), shape
        ``(rows, cols)``: what the reads would return without the circuit and converters."""
        return self._device_resistance().reshape(self.shape)

    def advance(self, seconds: float) -> None:
        """Move the simulation clock on (devices drift in this time)."""
        if not (np.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds={seconds!r} must be finite and >= 0")
        self.time += float(seconds)
        if self.effects.drift:
            self._version += 1

    def _device_resistance(self, flat: np.ndarray | None = None) -> np.ndarray:
        n = self._n if flat is None else self._n[flat]
        r = law_resistance(np.array(n, copy=True), self.params, flat).astype(float)
        if self.effects.drift:
            nu = self._nu if flat is None else self._nu[flat]
            age = self.time - (self._written_at if flat is None else self._written_at[flat])
            r *= ((age + DRIFT_T0) / DRIFT_T0) ** nu
        if self._stuck.size:
            if flat is None:
                r[self._stuck] = self._stuck_r
            else:
                where = np.searchsorted(self._stuck, flat)
                hit = (where < self._stuck.size) & (
                    self._stuck[np.minimum(where, self._stuck.size - 1)] == flat
                )
                r[hit] = self._stuck_r[where[hit]]
        return r

    def _free(self, flat: np.ndarray) -> np.ndarray:
        """The cells of ``flat`` that are not stuck."""
        if not self._stuck.size:
            return flat
        return flat[~self._stuck_mask[flat]]

    def _written(self, flat: np.ndarray) -> None:
        """Fold the drift so far into the state of cells about to be written; restart their
        drift clocks."""
        if self.effects.drift and flat.size:
            r = self._device_resistance(flat)
            self._n[flat] = self.model.pulse_number(r, _gather(self.params, flat))
            self._written_at[flat] = self.time

    # ------------------------------------------------------------------ writes
    def _apply_batch(
        self, batch: PulseBatch, read_back: bool, out: np.ndarray | None
    ) -> np.ndarray | None:
        flat = self._locate(batch.rows, batch.cols).flat.copy()  # raises before any change
        voltage = batch.voltage
        if self.effects.dac_step:
            step = self.effects.dac_step
            voltage = np.round(np.asarray(voltage, dtype=float) / step) * step
            if np.any(voltage == 0):
                raise InvalidBatchError(
                    f"a pulse voltage rounds to 0 V at the DAC's step of {step} V"
                )
        if np.any(np.asarray(voltage) < 0) and not self.model.reset:
            raise InvalidBatchError(
                "negative (RESET) voltages need a model with reset=True; this emulator's model "
                "has only the SET branch"
            )
        width = float(np.max(batch.width)) if np.size(batch.width) else 0.0
        if self.array.write == "ideal":
            duration = batch.total_pulses * width
            self._apply_alone(batch, flat, voltage)
        else:
            duration = self._apply_through_array(batch, voltage, flat) * width
        self._version += 1
        self.advance(duration + self.effects.tick)
        if not read_back:
            return None
        result = self._read(flat)
        if out is None:
            return result
        out[...] = result
        return out

    def _apply_alone(self, batch: PulseBatch, flat: np.ndarray, voltage: object) -> None:
        """Each device written alone (the ideal emulator's path), stuck devices kept."""
        self._written(self._free(np.unique(flat)))
        if voltage is not batch.voltage:
            batch = PulseBatch(batch.rows, batch.cols, batch.pulses, voltage, batch.width)
        kept = self._n[self._stuck].copy()
        super()._apply_batch(batch, False, None)
        self._n[self._stuck] = kept

    def _apply_through_array(self, batch: PulseBatch, voltage: object, flat: np.ndarray) -> int:
        """Write through the circuit; returns the pulses the operations last, in total."""
        counted = self._apply_counted(batch, voltage, flat)
        if counted is not None:
            return counted
        ops = operations(
            np.asarray(batch.rows, np.int64),
            np.asarray(batch.cols, np.int64),
            batch.pulses,
            np.asarray(voltage, dtype=float),
            self.array.group,
        )
        cols = self.shape[1]
        bias = WRITE_SCHEMES[self.array.write]
        threshold = max(self.array.threshold, np.finfo(float).tiny)
        if bias is not None and self.array.wiring.ideal and self._compiled_writes:
            self._apply_compiled(ops, bias, threshold)
            return sum(op.pulses for op in ops)
        if bias is not None and self.array.wiring.ideal:  # no solve needed
            for op in ops:
                cells, volts = biased_cells(op, self.shape, bias, threshold)
                self._pulse(cells, op.pulses, volts)
            return sum(op.pulses for op in ops)
        conductance = 1.0 / self._device_resistance().reshape(self.shape)
        total = 0
        for op, dv in operation_fields(self._system, conductance, self._version, ops, bias):
            total += op.pulses
            dv = dv.ravel()
            selected = op.row * cols + op.cols
            disturbed = np.abs(dv) >= threshold
            disturbed[selected] = False
            cells = np.concatenate([selected, np.flatnonzero(disturbed)])
            self._pulse(cells, op.pulses, dv[cells])
        return total

    def _apply_counted(self, batch: PulseBatch, voltage: object, flat: np.ndarray) -> int | None:
        """Without wire, a batch at one voltage in one compiled pass over the cells (see
        :func:`~.writes.counted_pulses`); None where that does not apply (wire, drift or
        write noise, several voltages, or unselected cells that the scheme's third voltage
        ``(alpha - beta) V`` would change: they would take pulses between the half-select
        ones). Returns the pulses the operations last, in total."""
        bias = WRITE_SCHEMES[self.array.write]
        if bias is None or not self.array.wiring.ideal or not self._compiled_writes:
            return None
        pulses = np.broadcast_to(np.asarray(batch.pulses, np.int64), np.shape(batch.rows))
        volts = np.broadcast_to(np.asarray(voltage, dtype=float), pulses.shape)[pulses > 0]
        if not volts.size:
            return 0
        v = float(volts[0])
        alpha, beta = bias
        threshold = max(self.array.threshold, np.finfo(float).tiny)
        other = (alpha - beta) * v
        other_acts = abs(other) >= threshold and (other > 0 or self.model.reset)
        if np.any(volts != v) or other_acts or not math.isclose(alpha, 1 - beta):
            return None
        flat = np.asarray(flat, np.int64).ravel()
        keep = pulses.ravel() > 0
        counts, before, after, duration = counted_pulses(
            flat[keep],
            pulses.ravel()[keep].astype(float),
            self.shape,
            self.array.group,
            abs(alpha * v) >= threshold,
        )
        powers = self._set_powers(v, alpha * v)
        if powers is not None:
            ft = self._n.dtype
            apply_counted_sets(
                self._n,
                counts.astype(ft),
                before.astype(ft),
                after.astype(ft),
                powers,
                np.asarray(self._n_min, ft).reshape(-1),
                self._stuck_mask,
            )
            return duration
        apply_counted_pulses(
            self._n,
            counts,
            before,
            after,
            (v, alpha * v),
            self._stuck_mask,
            self._kernel_params(),
            self._kernel_law(),
        )
        return duration

    def _set_powers(self, v: float, v_half: float) -> tuple[np.ndarray, ...] | None:
        """The powers :func:`~.kernels.apply_counted_sets` takes, in the state's dtype, when
        both voltages SET every device (a(V) < 0); else None."""
        if v <= 0 or v_half <= 0:
            return None
        a = np.asarray(self.params.a, dtype=float).reshape(-1)
        a_h = a + self.model.a_slope * (v_half - self.model.v_ref)
        a_v = a + self.model.a_slope * (v - self.model.v_ref)
        if np.any(a_h >= 0) or np.any(a_v >= 0):
            return None
        e_h, e_v = a / a_h, a / a_v
        ft = self._n.dtype
        return tuple(x.astype(ft) for x in (e_h, e_v / e_h, e_h / e_v, 1.0 / e_h))

    @property
    def _compiled_writes(self) -> bool:
        """The compiled closed-form path applies: no drift to fold in per write, no write
        noise to draw (both stay with the NumPy path, which orders them per operation)."""
        return not self.effects.drift and not self.model.noise

    def _apply_compiled(
        self, ops: list[Operation], bias: tuple[float, float], threshold: float
    ) -> None:
        """The batch's operations in one compiled call (see :mod:`.kernels`)."""
        starts = np.cumsum([0] + [op.cols.size for op in ops])
        table = np.array(
            [(op.row, starts[i], starts[i + 1], op.pulses, op.voltage) for i, op in enumerate(ops)],
            dtype=float,
        ).reshape(-1, 5)
        op_cols = np.concatenate([op.cols for op in ops]) if ops else np.zeros(0, np.int64)
        apply_biased_operations(
            self._n,
            self.shape,
            table,
            op_cols.astype(np.int64),
            (float(bias[0]), float(bias[1]), float(threshold)),
            self._stuck_mask,
            self._kernel_params(),
            self._kernel_law(),
        )

    def _kernel_params(self) -> tuple[np.ndarray, ...]:
        """The devices' (a, r0, r1, n_min) for the compiled kernels."""
        p = self.params
        return tuple(np.asarray(x, dtype=float) for x in (p.a, p.r0, p.r1, self._n_min))

    def _kernel_law(self) -> tuple[float, ...]:
        """The model's constants for the compiled kernels (see :mod:`.kernels`)."""
        model, ft = self.model, np.finfo(self._n.dtype)
        return (
            float(model.a_slope),
            float(model.v_ref),
            1.0 if model.reset else 0.0,
            float(model.reset_r3),
            float(model.reset_exponent),
            float(ft.eps),
            float(ft.tiny),
        )

    def _pulse(self, flat: np.ndarray, pulses: int, voltage: np.ndarray) -> None:
        """``pulses`` pulses on each cell of ``flat`` at its own voltage, through the device
        model (SET where positive, RESET where negative and the model has it; a polarity the
        model cannot follow, or a SET voltage where a(V) >= 0, leaves the device as it is)."""
        model = self.model
        ok = voltage != 0
        if not model.reset:
            ok &= voltage > 0
        params = _gather(self.params, flat)
        a_v = model.exponent(np.abs(voltage), params)
        ok &= (voltage < 0) | (a_v < 0)
        if self._stuck.size:
            ok &= ~self._stuck_mask[flat]
        flat, voltage = flat[ok], voltage[ok]
        if not flat.size:
            return
        self._written(flat)
        draws = self._noise_rng.standard_normal(flat.size) if model.noise > 0 else None
        k = np.full(flat.size, pulses, dtype=float)
        self._n[flat] = model.after_pulses(
            self._n[flat], k, voltage, _gather(self.params, flat), draws
        )

    # ------------------------------------------------------------------ reads
    def _read(self, flat: np.ndarray) -> np.ndarray:
        if not flat.size:
            return np.empty(0, self._n.dtype)
        v = self.array.v_read
        if self.array.read == "ideal":
            r = self._device_resistance(flat)
            if not (self.effects.read_noise or self.effects.adc_bits):
                return r.astype(self._n.dtype)  # exactly the devices' own resistances
            current = v / r
        elif self.array.wiring.ideal and READ_SCHEMES[self.array.read] is not None:
            # no wire: the sense amplifier collects the selected device at V and the rest of
            # its column at alpha V (closed form; the same as the admittance's, without it)
            alpha = READ_SCHEMES[self.array.read][0]
            g = 1.0 / self._device_resistance(flat)
            current = v * (g + alpha * (self._column_conductance()[flat % self.shape[1]] - g))
        else:
            rows, cols = np.divmod(flat, self.shape[1])
            bias = READ_SCHEMES[self.array.read]
            if bias is None:
                y = self._admittance()
                current = floating_sense_current(y, self.shape[0], (rows, cols), v)
            elif bias == (0.0, 0.0) and np.unique(rows).size < np.unique(cols).size:
                # grounded: I = -v Y[rows + c, r] = -v Y[r, rows + c] (Y is symmetric), so one
                # right-hand side per distinct word line serves as well, and there are fewer
                used, where = np.unique(rows, return_inverse=True)
                columns = self._admittance_columns(used)[:, where.ravel()]
                current = -v * columns[self.shape[0] + cols, np.arange(cols.size)]
            else:  # only the bit lines read: one right-hand side per distinct column
                used, where = np.unique(cols, return_inverse=True)
                columns = self._admittance_columns(self.shape[0] + used)[:, where.ravel()]
                current = biased_sense_current(columns, self.shape[0], (rows, cols), v, bias)
        return (v / self._converted(current)).astype(self._n.dtype)

    def _read_all(self) -> np.ndarray:
        return self._read(np.arange(self.size)).reshape(self.shape)

    def _column_conductance(self) -> np.ndarray:
        """Each bit line's total device conductance (cached until the devices change)."""
        if self._columns is None or self._columns[0] != self._version:
            g = 1.0 / self._device_resistance().reshape(self.shape)
            self._columns = (self._version, g.sum(axis=0))
        return self._columns[1]

    def _admittance_columns(self, ports: np.ndarray) -> np.ndarray:
        """``Y[:, ports]``; columns solved once per device state, as they are needed."""
        cache = self._y_columns
        if cache is None or cache[0] != self._version:
            cache = self._y_columns = (self._version, {})
        known = cache[1]
        missing = np.array([p for p in ports.tolist() if p not in known], dtype=np.int64)
        if missing.size:
            conductance = 1.0 / self._device_resistance().reshape(self.shape)
            solved = admittance(self._system, conductance, self._version, ports=missing)
            for i, p in enumerate(missing.tolist()):
                known[p] = solved[:, i]
        return np.stack([known[p] for p in ports.tolist()], axis=1)

    def _admittance(self) -> np.ndarray:
        if self._y is None or self._y[0] != self._version:
            conductance = 1.0 / self._device_resistance().reshape(self.shape)
            self._y = (self._version, admittance(self._system, conductance, self._version))
        return self._y[1]

    def _converted(self, current: np.ndarray) -> np.ndarray:
        """The current as the read-out reports it: read noise, then the ADC."""
        fx = self.effects
        if fx.read_noise:
            current = current * (1 + fx.read_noise * self._read_rng.standard_normal(current.shape))
        if fx.adc_bits is not None:
            full = fx.adc_range or self.array.v_read / self.model.r0
            lsb = full / 2**fx.adc_bits
            current = np.clip(np.round(current / lsb) * lsb, lsb / 2, full)
        return current

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, object]:
        """As :meth:`.EmulatedCrossbar.snapshot`, with the clock and the read-noise stream."""
        state = super().snapshot()
        state.update(
            time=self.time,
            written_at=self._written_at.copy(),
            read_rng=self._read_rng.bit_generator.state,
        )
        return state

    def restore(self, snapshot: dict[str, object]) -> None:
        """As :meth:`.EmulatedCrossbar.restore`, with the clock and the read-noise stream."""
        super().restore(snapshot)
        self.time = float(snapshot["time"])  # type: ignore[arg-type]
        self._written_at[...] = snapshot["written_at"]
        self._read_rng.bit_generator.state = snapshot["read_rng"]
        self._version += 1

    # ------------------------------------------------------------------ persistence
    def save_state(
        self, path: str | os.PathLike[str], extra: dict[str, np.ndarray] | None = None
    ) -> None:
        """As :meth:`.EmulatedCrossbar.save_state`, with the array's options, the clock and
        the write times (so a restored service serves the same array); the read-noise
        stream is not saved."""
        arrays = dict(extra or {})
        meta = {
            "array": dataclasses.asdict(self.array),
            "effects": dataclasses.asdict(self.effects),
            "time": self.time,
        }
        arrays[_ARRAY_META] = np.array(json.dumps(meta))
        arrays["array_written_at"] = self._written_at
        super().save_state(path, arrays)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """As :meth:`.EmulatedCrossbar.load_state`, with the clock and write times when the
        file has them."""
        super().load_state(path)
        with np.load(path, allow_pickle=False) as data:
            if _ARRAY_META in data.files:
                self.time = float(json.loads(str(data[_ARRAY_META]))["time"])
                self._written_at[...] = data["array_written_at"]
        self._version += 1

    @classmethod
    def from_state(
        cls, path: str | os.PathLike[str], limits: SafetyLimits | None = None
    ) -> ArrayCrossbar:
        """An array crossbar rebuilt from a file :meth:`save_state` wrote."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            array_meta = json.loads(str(data[_ARRAY_META])) if _ARRAY_META in data.files else {}
        options = dict(array_meta.get("array", {}))
        wiring = Wiring(**options.pop("wiring", {}))
        xbar = cls(
            *meta["shape"],
            model=PowerLaw.from_dict(meta["model"]),
            seed=meta["seed"],
            limits=limits,
            array=ArrayOptions(wiring, **options),
            effects=DeviceEffects(**array_meta.get("effects", {})),
        )
        xbar.load_state(path)
        return xbar


#: The name of the array's options in a state file (:meth:`EmulatedCrossbar.from_state`
#: looks for it to rebuild an array crossbar).
_ARRAY_META = "array_meta"


def _gather(params: DeviceParameters, cells: np.ndarray) -> DeviceParameters:
    if not params.per_device:
        return params
    return DeviceParameters(r0=params.r0[cells], r1=params.r1[cells], a=params.a[cells])
