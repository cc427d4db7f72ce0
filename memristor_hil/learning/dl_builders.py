"""NengoDL builders for :class:`~memristor_hil.learning.operator.SimmPES` (the ``[dl]`` extra).

``nengo_dl.Simulator`` builds a model with Nengo's builder (so :func:`build_mpes` checks and
places every mPES connection exactly as for ``nengo.Simulator``), then asks each operator type
for a TensorFlow builder. This module registers the one for ``SimmPES``; it is imported, and
so registered, automatically the first time an mPES connection is built into a NengoDL model,
i.e. inside ``nengo_dl.Simulator`` (NumPy users never load TensorFlow). Importing it yourself
registers it too.

Probes: as in ``nengo.Simulator``, the resistances and weights probed in step ``t`` are those
after step ``t - 1``'s batch. A NengoDL model has no ``SimmPESCollect`` (NengoDL refuses an
operator that sets a learned connection's weights): ``SimmPES`` keeps the devices in staging
signals and writes the weights' change into Nengo's ``delta``, which ``Copy`` operators put
into the probed resistances and add to the weights in the next step, before the weights are
read (``builder._lag_for_nengo_dl``). Both implementations below write them so.

Two implementations, chosen per operator (one operator per crossbar):

- **native** (the crossbar is the in-process emulator, ``crossbar.device_parameters`` is not
  None): the pulse choice, the three pulse policies, the power law with each device's own
  parameters, cycle-to-cycle noise and the weight update are TensorFlow ops, so they run on a
  GPU and with ``minibatch_size > 1``. Rule for minibatches: **each minibatch item has its own
  copy of the devices**, all starting from the crossbar's state at build time (the same drawn
  parameters, the same initial resistances), because NengoDL's minibatch items are
  independent simulations. The devices live in the graph: the ``EmulatedCrossbar`` object is
  never pulsed and keeps its build-time state. A step gathers the pulsed cells (``tf.where``
  indices per minibatch item), applies the power law to those only and scatters the new
  resistances and weights back (``tf.tensor_scatter_nd_update``): the law is elementwise, so
  each cell gets the value a dense evaluation of both blocks would give it.
- **host call** (every other crossbar: serial, VISA, a recording): once per timestep the
  operator's own NumPy step runs through ``tf.numpy_function``, so the step's pulses leave the
  graph as one batch, exactly as ``nengo.Simulator`` sends them. Minibatch 1 only (a crossbar
  has one set of devices); anything else is a ``BuildError`` before any device is pulsed.

State and resets: the device state of the native builder *is* its resistance signals (a power
law device's pulse count follows from its resistance, ``n = ((R - r0) / r1) ** (1 / a)``), so
everything mPES remembers is a NengoDL signal and every NengoDL reset (``sim.reset()``, with or
without ``include_processes``, ``soft_reset``, ``stateful=False`` runs) rewinds devices,
weights and pulse credit together, item by item. The host call keeps NumPy's semantics:
``sim.reset()`` (which re-runs NengoDL's ``build_post``) rewinds an emulator behind a URL and
raises ``SimulationError`` on hardware whose devices were pulsed; a reset that skips
``build_post`` (``include_processes=False``, ``soft_reset``) resets the signals only, and the
next pulses land on the devices as they are.

Randomness: the host call uses the operator's own generator, seeded from NengoDL's seeded rng.
The native builder draws the stochastic policy's uniforms and the devices' noise with
TensorFlow's seeded random ops, so a new ``Simulator`` with the same seed repeats a run, but,
as NengoDL documents for all its TensorFlow randomness, ``sim.reset()`` does not rewind them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from nengo.builder.signal import SignalDict
from nengo.exceptions import BuildError
from nengo_dl.builder import Builder, OpBuilder

from .operator import ConnectionPart, SimmPES

__all__ = [
    "HostCallmPES",
    "NativemPES",
    "SimmPESBuilder",
    "runs_natively",
]

#: Tolerance of the pulse-credit rounding, the same as the NumPy operator's.
_CREDIT_EPS = 1e-9


def runs_natively(op: SimmPES) -> bool:
    """True when ``op``'s devices can be simulated inside the graph (an in-process emulator)."""
    xbar = op.use.crossbar
    if any(part.policy == "learning_rate" for part in op.parts):
        return False  # its read-back calibration (pairs.store_calibrated) runs on the host
    return xbar.device_parameters is not None and xbar.model is not None


@Builder.register(SimmPES)
class SimmPESBuilder(OpBuilder):
    """NengoDL builder for a group of ``SimmPES`` operators: native or host call.

    Operators of in-process emulators may merge into one group (NengoDL's ``mergeable``;
    NengoDL itself also asks for signals of matching shapes, i.e. operators with as many
    connections of the same sizes); an operator of any other crossbar stays alone, so each
    crossbar keeps its one batch per step.
    """

    def __init__(self, ops: list[SimmPES]) -> None:
        super().__init__(ops)
        native = [runs_natively(op) for op in ops]
        if all(native):
            self.impl: NativemPES | HostCallmPES = NativemPES(ops)
        elif len(ops) == 1:
            self.impl = HostCallmPES(ops[0])
        else:  # pragma: no cover - mergeable() never groups a host-call operator
            raise BuildError("SimmPES operators of non-emulated crossbars cannot be merged")

    def build_pre(self, signals: Any, config: Any) -> None:
        super().build_pre(signals, config)
        self.impl.build_pre(signals, config)

    def build_step(self, signals: Any) -> Any:
        return self.impl.build_step(signals)

    def build_post(self, signals: Any) -> None:
        self.impl.build_post(signals)

    @staticmethod
    def mergeable(x: SimmPES, y: SimmPES) -> bool:
        return runs_natively(x) and runs_natively(y)


def _gather(signals: Any, sig: Any) -> tf.Tensor:
    """The signal's value with a leading minibatch axis (broadcast when not minibatched)."""
    ts = signals[sig]
    value = signals.gather(ts)
    if ts.minibatched:
        return value
    return tf.broadcast_to(value[None], (signals.minibatch_size, *ts.shape))


def _scatter(signals: Any, sig: Any, value: tf.Tensor) -> None:
    ts = signals[sig]
    if not ts.minibatched:
        raise BuildError(
            f"mPES: NengoDL made {sig} shared across the minibatch; mPES state must be "
            "minibatched (is the connection marked trainable? a learned connection cannot be)"
        )
    signals.scatter(ts, value)


# ---------------------------------------------------------------------------- native


class _Devices:
    """One block of devices (positive or negative) of one connection, as TF constants.

    The device arithmetic runs in float64 whatever the model's dtype, and its result is stored
    in the resistance signals unrounded (when NengoDL's signals are float64): those signals
    are the devices' only state, and rounding them to float32 at every pulse would make the
    pulse count recovered from them drift by a float32 rounding per pulse (with float32
    signals it does: about ``sqrt(pulses)`` half-ulps of R, still float32 noise).
    """

    def __init__(self, xbar: Any, row: int, col: int, shape: tuple[int, int], voltage: float):
        model = xbar.model
        params = xbar.device_parameters
        rows, cols = xbar.shape
        ft = model.float_type

        def block(values: np.ndarray) -> np.ndarray:
            # the model's values (in its dtype), then float64 for the arithmetic
            values = np.asarray(values, dtype=ft).astype(np.float64)
            if values.size == 1:
                return values.reshape(())
            return values.reshape(rows, cols)[row : row + shape[0], col : col + shape[1]]

        r0, r1, a = block(params.r0), block(params.r1), block(params.a)
        self.r0 = tf.constant(r0)
        self.r1 = tf.constant(r1)
        self.a = tf.constant(a)
        self.inv_a = tf.constant(1.0 / a)
        self.tiny = tf.constant(float(np.finfo(ft).tiny), dtype=tf.float64)
        self.max_excess = tf.constant((r1 - r0) / r1)
        self.size = shape[0] * shape[1]
        self.noise = float(model.noise)
        if ft(voltage) == ft(model.v_ref):
            self.ratio = None  # a / a(V) == 1: a pulse adds exactly k to the pulse count
        else:
            a_v = np.asarray(a, dtype=ft) + ft(model.a_slope) * (ft(voltage) - ft(model.v_ref))
            if np.any(a_v >= 0):
                raise BuildError(
                    f"mPES: the device exponent a(V) is not negative at {voltage} V: no SET "
                    "is possible at that voltage"
                )
            ratio = (np.asarray(a, dtype=ft) / a_v).astype(ft).astype(np.float64)
            self.ratio = tf.constant(ratio)
            self.inv_ratio = tf.constant(1.0 / ratio)

    def pulse(self, resistance: tf.Tensor, k: tf.Tensor, cells: tf.Tensor, seed: int) -> tf.Tensor:
        """Resistances (float64) of the pulsed ``cells`` after ``k`` SET pulses each, as the
        emulator computes them.

        ``cells`` are the pulsed cells' flat indices into the minibatch's ``(items, rows,
        columns)`` block, shape ``(P,)`` (``tf.where`` of the flattened pulsed mask; flat
        indices and ``tf.gather`` cost about 20% less than ``gather_nd``'s triples);
        ``resistance`` and ``k`` are those cells' values, shape ``(P,)``. Only these cells are
        computed: the power law is elementwise, so each gets the value a dense evaluation over
        the whole block would give it. The pulse count is recovered from the resistance
        (clipped into ``(r0, r1]`` first, which is the emulator's ``n >= n_min``), raised by
        ``k`` (converted to the pulse voltage's exponent when it is not ``v_ref``) and turned
        back into a resistance.
        """
        where = cells % self.size  # the cell in one item's block: its device's own parameters

        def at(param: tf.Tensor) -> tf.Tensor:
            return param if param.shape.rank == 0 else tf.gather(tf.reshape(param, [-1]), where)

        r0, r1, a = at(self.r0), at(self.r1), at(self.a)
        r = tf.cast(resistance, tf.float64)
        k = tf.cast(k, tf.float64)
        excess = tf.clip_by_value((r - r0) / r1, self.tiny, at(self.max_excess))
        # x**p as exp(p * log(x)): TensorFlow's CPU pow is scalar (~50x slower), exp and log
        # are vectorised; in float64 the difference is ~1e-14, far below the float32 devices
        n = tf.exp(at(self.inv_a) * tf.math.log(excess))
        if self.noise > 0:
            xi = tf.random.normal(tf.shape(k), dtype=tf.float64, seed=seed)
            k = tf.maximum(k + self.noise * tf.sqrt(k) * xi, 0.0)
        if self.ratio is None:
            n = n + k
        else:
            ratio = at(self.ratio)
            n = tf.exp(at(self.inv_ratio) * tf.math.log(tf.exp(ratio * tf.math.log(n)) + k))
        return r0 + r1 * tf.exp(a * tf.math.log(n))


class _NativePart:
    """One connection of a native ``SimmPES``: its signals, devices and per-step graph."""

    def __init__(self, op: SimmPES, k: int, part: ConnectionPart, signals: Any, rng: Any):
        self.sigs = op.connection_signals(k)
        self.delta = op.weight_change(k)  # where the weights' change goes (None: the weights)
        self.part = part
        n_post, n_pre = self.sigs.weights.shape
        xbar = op.use.crossbar
        pos_row, pos_col, neg_row, neg_col = part.origins
        self.pos = _Devices(xbar, pos_row, pos_col, (n_post, n_pre), op.voltage)
        self.neg = _Devices(xbar, neg_row, neg_col, (n_post, n_pre), op.voltage)
        self.c = part.gain * part.conductance_scale
        dt = float(signals.dt_val)
        self.interval_steps = None if part.pulse_interval is None else dt / part.pulse_interval
        self.seeds = [int(s) for s in rng.randint(2**31 - 1, size=3)]

    def build_step(self, signals: Any) -> list[tf.Tensor]:
        s = self.sigs
        dtype = signals.dtype
        acts = _gather(signals, s.pre_filtered)  # (B, n_pre)
        error = _gather(signals, s.local_error)  # (B, n_post)
        threshold = _gather(signals, s.threshold)  # (B, 1) or (B, n_post)
        state = _gather(signals, s.state)  # (B, 2): pulse credit, running max |Delta|
        credit, running_max = state[:, 0], state[:, 1]

        if self.interval_steps is None:
            per_step = tf.ones_like(credit)
        else:
            credit = credit + tf.constant(self.interval_steps, dtype)
            per_step = tf.floor(credit + _CREDIT_EPS)
            credit = credit - per_step

        active = acts > 0.5  # (B, n_pre)
        pos_rows = error < -threshold  # (B, n_post): pulse positive devices (e_i < 0)
        neg_rows = error > threshold
        rows = pos_rows | neg_rows
        fire = (
            (per_step > 0) & tf.reduce_any(active, axis=1) & tf.reduce_any(rows, axis=1)
        )  # (B,): this item pulses this step
        cells = rows[:, :, None] & active[:, None, :] & fire[:, None, None]
        per_step_3 = per_step[:, None, None]

        policy = self.part.policy
        if policy == "one":
            counts = tf.where(cells, per_step_3, tf.zeros((), dtype))
        else:
            zero = tf.zeros((), dtype)
            a_max = tf.reduce_max(tf.where(active, acts, zero), axis=1)
            e_max = tf.reduce_max(tf.where(rows, tf.abs(error), zero), axis=1)
            raised = tf.maximum(running_max, a_max * e_max)
            running_max = tf.where(fire, raised, running_max)
            levels = float(self.part.levels)
            scale = levels / tf.where(fire, running_max, tf.ones_like(running_max))
            x = (tf.abs(error) * scale[:, None])[:, :, None] * acts[:, None, :]
            if policy == "scaled":
                count = tf.clip_by_value(tf.math.ceil(x), 1.0, levels)
            else:  # stochastic: floor(x + u), u uniform in [0, 1); zeros dropped
                u = tf.random.uniform(tf.shape(x), dtype=dtype, seed=self.seeds[0])
                count = tf.minimum(tf.floor(x + u), levels)
                cells = cells & (count > 0)
            counts = tf.where(cells, count * per_step_3, zero)

        total = tf.reduce_sum(counts, axis=[1, 2])
        r_pos = _gather(signals, s.pos_resistances)
        r_neg = _gather(signals, s.neg_resistances)
        weights = _gather(signals, s.weights)

        def pulse() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            # only the pulsed cells: gathered, pulsed, scattered back (a cell's rows are
            # either positive or negative, so its other device keeps its resistance)
            shape = tf.shape(weights)
            flat_pos, flat_neg = tf.reshape(r_pos, [-1]), tf.reshape(r_neg, [-1])
            k = tf.reshape(counts, [-1])
            pos_at = tf.where(tf.reshape(cells & pos_rows[:, :, None], [-1]))[:, 0]
            neg_at = tf.where(tf.reshape(cells & neg_rows[:, :, None], [-1]))[:, 0]
            new_pos = self.pos.pulse(
                tf.gather(flat_pos, pos_at), tf.gather(k, pos_at), pos_at, self.seeds[1]
            )
            new_neg = self.neg.pulse(
                tf.gather(flat_neg, neg_at), tf.gather(k, neg_at), neg_at, self.seeds[2]
            )
            other_neg = tf.cast(tf.gather(flat_neg, pos_at), tf.float64)
            other_pos = tf.cast(tf.gather(flat_pos, neg_at), tf.float64)
            w_pos = self.c * (other_neg - new_pos) / (new_pos * other_neg)
            w_neg = self.c * (new_neg - other_pos) / (other_pos * new_neg)
            w = tf.cast(tf.concat([w_pos, w_neg], axis=0), dtype)

            def put(flat: tf.Tensor, at: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
                return tf.reshape(tf.tensor_scatter_nd_update(flat, at[:, None], values), shape)

            return (
                put(flat_pos, pos_at, tf.cast(new_pos, dtype)),
                put(flat_neg, neg_at, tf.cast(new_neg, dtype)),
                put(tf.reshape(weights, [-1]), tf.concat([pos_at, neg_at], axis=0), w),
            )

        r_pos, r_neg, new_weights = tf.cond(
            tf.reduce_any(fire), pulse, lambda: (r_pos, r_neg, weights)
        )
        _scatter(signals, s.pos_resistances, r_pos)
        _scatter(signals, s.neg_resistances, r_neg)
        if self.delta is None:
            _scatter(signals, s.weights, new_weights)
        else:  # zero where no cell was pulsed; Nengo's Copy adds it in the next step
            _scatter(signals, self.delta, new_weights - weights)
        _scatter(signals, s.pulses, total[:, None])
        _scatter(signals, s.state, tf.stack([credit, running_max], axis=1))
        return [total]


class NativemPES:
    """The native TensorFlow implementation of a group of ``SimmPES`` on emulators."""

    def __init__(self, ops: list[SimmPES]) -> None:
        self.ops = ops
        self.parts: list[_NativePart] = []

    def build_pre(self, signals: Any, config: Any) -> None:
        self.parts = [
            _NativePart(op, k, part, signals, config.rng)
            for op in self.ops
            for k, part in enumerate(op.parts)
        ]

    def build_step(self, signals: Any) -> list[tf.Tensor]:
        return [t for part in self.parts for t in part.build_step(signals)]

    def build_post(self, signals: Any) -> None:
        """Nothing: every piece of state is a NengoDL signal, which NengoDL resets itself."""


# ---------------------------------------------------------------------------- host call


class HostCallmPES:
    """One ``SimmPES`` run by its own NumPy step, called from the graph once per timestep."""

    def __init__(self, op: SimmPES) -> None:
        self.op = op
        sigs = [op.connection_signals(k) for k in range(len(op.parts))]
        self.outputs = [sig for s in sigs for sig in s.updates]
        self.inputs = list(dict.fromkeys([*op.reads, *self.outputs]))
        #: the weights whose change goes to a ``delta`` signal (add_weight_change), not to them
        self.deltas = {
            s.weights: op.weight_change(k)
            for k, s in enumerate(sigs)
            if op.weight_change(k) is not None
        }
        # The NumPy step's arrays: one SignalDict for the builder's life (the operator ties
        # the crossbar's closing to it, as to nengo.Simulator's), made here because NengoDL
        # may call build_pre again after build_post (when Keras builds the layer).
        self.arrays = SignalDict()
        for sig in self.inputs:
            self.arrays.init(sig)
        self.step: Any = None
        self.dt = 0.0
        self.seed = 0

    def build_pre(self, signals: Any, config: Any) -> None:
        op = self.op
        if signals.minibatch_size != 1:
            raise BuildError(
                f"mPES on {op.use.crossbar.identity!r}: a crossbar outside this process "
                f"(hardware, a service) has one set of devices, so it runs with "
                f"minibatch_size=1 only, not {signals.minibatch_size}. Use minibatch_size=1, "
                "or the in-process emulator (mPES(crossbar=None) or 'emulator://'), which "
                "runs in the graph with any minibatch size."
            )
        if self.step is None:
            self.dt = float(signals.dt_val)
            self.seed = int(config.rng.randint(2**31 - 1))
        self.out_dtype = signals.dtype.as_numpy_dtype

    def build_post(self, signals: Any) -> None:
        """(Re)start the NumPy step, as ``nengo.Simulator`` does at start and on reset."""
        for sig in self.inputs:
            self.arrays.reset(sig)
        self.step = self.op.make_step(self.arrays, self.dt, np.random.RandomState(self.seed))

    def _host_step(self, *values: np.ndarray) -> list[np.ndarray]:
        for sig, value in zip(self.inputs, values, strict=True):
            if sig.readonly:  # a constant (the threshold): the NumPy array already holds it
                continue
            np.copyto(self.arrays[sig], np.reshape(value, sig.shape), casting="unsafe")
        self.step()
        # copies: TensorFlow may keep a returned array's memory, which the next step rewrites
        return [np.array(self.arrays[sig], dtype=self.out_dtype)[None] for sig in self.outputs]

    def build_step(self, signals: Any) -> list[tf.Tensor]:
        values = [signals.gather(signals[sig]) for sig in self.inputs]
        outputs = tf.numpy_function(
            self._host_step, values, [signals.dtype] * len(self.outputs), name="mPES_host_call"
        )
        for sig, out in zip(self.outputs, outputs, strict=True):
            out.set_shape((1, *sig.shape))
            delta = self.deltas.get(sig)
            if delta is None:
                _scatter(signals, sig, out)
            else:  # the weights' change, added in the next step (the NumPy step's arrays
                # keep their own copy of the weights, rewritten from the signal every step)
                _scatter(signals, delta, out - values[self.inputs.index(sig)])
        return list(outputs)
