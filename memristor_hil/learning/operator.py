"""``SimmPES``: the operator that runs the mPES connections of one crossbar each timestep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from nengo.builder.operator import Operator
from nengo.builder.signal import Signal

from ..pulses import PulseBatch
from . import kernels, pairs
from .crossbars import CrossbarUse

__all__ = ["ConnectionPart", "ConnectionSignals", "Refresh", "SimmPES"]


class ConnectionSignals(NamedTuple):
    """The signals of one connection on a :class:`SimmPES`, by name.

    The operator's ``reads`` and ``updates`` lists hold these, connection after connection,
    in this order (``READS`` then ``UPDATES``); Nengo's optimizer may replace signals in
    those lists, so :meth:`SimmPES.connection_signals` reads them back from there.
    """

    pre_filtered: Signal
    local_error: Signal
    threshold: Signal
    mask_source: Signal
    pos_resistances: Signal
    neg_resistances: Signal
    weights: Signal
    pulses: Signal
    state: Signal

    @property
    def reads(self) -> list[Signal]:
        """The signals the operator reads."""
        return list(self[:_READS])

    @property
    def updates(self) -> list[Signal]:
        """The signals the operator updates."""
        return list(self[_READS:])


_READS = 4  # pre_filtered, local_error, threshold, mask_source
_UPDATES = len(ConnectionSignals._fields) - _READS


@dataclass(frozen=True)
class ConnectionPart:
    """How one connection's devices are pulsed (everything but its signals).

    Attributes
    ----------
    origins : tuple of int
        ``(pos_row, pos_col, neg_row, neg_col)``: top-left cells of the two device blocks.
    order : int
        Row order of the batch (``kernels.ORDER_*``).
    gain : float
        :math:`\\gamma`.
    conductance_scale : float
        ``1 / (1/r0 - 1/r1)`` of the nominal model.
    pulse_interval : float or None
        Simulated seconds per pulse; None for one pulse per step.
    policy : {"one", "scaled", "stochastic", "learning_rate"}
        Pulse-count policy (see :class:`~memristor_hil.mPES`); "learning_rate" when the rule
        has a ``learning_rate``.
    levels : int
        With "scaled", "stochastic" and "learning_rate", the most pulses per device per
        interval.
    mask_threshold : float
        A pre neuron is active where its mask source exceeds this (0.5 for filtered
        activities, 0 for spikes).
    learning_rate : float or None
        Nengo PES's learning rate, for the "learning_rate" policy.
    nominal : tuple of float
        ``(r0, r1, a)`` of the nominal device model (the "learning_rate" policy's pulse size).
    seed : int
        Seed of the random streams ("stochastic", "learning_rate"): the rule's ``seed``,
        else the connection's build seed.
    refresh : Refresh or None
        The pair refresh of the "learning_rate" policy (:class:`Refresh`); None: off.
    balance : bool
        The "learning_rate" policy's first steps balance every pair (weight 0) before it
        learns (:func:`~memristor_hil.learning.pairs.balance_cells`).
    max_count : int
        The crossbar's most pulses per cell per batch (caps a balance or refresh step).
    """

    origins: tuple[int, int, int, int]
    order: int
    gain: float
    conductance_scale: float
    pulse_interval: float | None
    policy: str
    levels: int
    mask_threshold: float = 0.5
    learning_rate: float | None = None
    nominal: tuple[float, float, float] = (200.0, 2.3e8, -0.146)
    seed: int = 0
    refresh: Refresh | None = None
    balance: bool = False
    max_count: int = 65_535


@dataclass(frozen=True)
class Refresh:
    """How saturated pairs are brought back into range (see :mod:`memristor_hil.learning.pairs`).

    Attributes
    ----------
    r_limit : float
        A pair is refreshed once both its devices read below this resistance (the rule's
        normalised-conductance threshold, through the nominal model).
    voltage : float
        RESET pulse voltage (negative), in volt.
    r3, exponent : float
        The RESET branch ``R = r3 - r3 * m**c`` of the device model.
    """

    r_limit: float
    voltage: float
    r3: float
    exponent: float


class SimmPES(Operator):
    r"""Pulse the memristors of a crossbar's mPES connections, and update their weights.

    One operator serves every mPES connection on one crossbar, so each step sends the whole
    step's pulses in one ``apply(batch, read_back=True)`` call (none when nothing is
    pulsed). For each connection: the pre neurons with ``a_j > 0.5`` and the post neurons
    with ``|e_i| > threshold_i`` choose the cells (positive devices where :math:`e_i < 0`,
    negative where :math:`e_i > 0`); the resistances read back replace the touched entries of
    its ``pos_resistances``/``neg_resistances`` and its touched weights become
    ``gain * (g(R+) - g(R-))``.

    Parameters
    ----------
    use : CrossbarUse
        The crossbar and its connections' placement.
    voltage, width : float
        SET pulse voltage (V) and width (s), shared by the crossbar's connections.
    tag : str, optional
        A label for debugging.

    Notes
    -----
    Per connection added with :meth:`add_connection`:

    1. sets ``[]``
    2. incs ``[]``
    3. reads ``[pre_filtered, local_error, threshold, mask_source]``
    4. updates ``[pos_resistances, neg_resistances, weights, pulses, state]``
    """

    def __init__(
        self, use: CrossbarUse, voltage: float, width: float, tag: str | None = None
    ) -> None:
        super().__init__(tag=tag)
        self.use = use
        self.voltage = float(voltage)
        self.width = float(width)
        self.parts: list[ConnectionPart] = []
        self.sets = []
        self.incs = []
        self.reads = []
        self.updates = []

    def add_connection(
        self,
        part: ConnectionPart,
        pre_filtered: Signal,
        local_error: Signal,
        threshold: Signal,
        mask_source: Signal,
        pos_resistances: Signal,
        neg_resistances: Signal,
        weights: Signal,
        pulses: Signal,
        state: Signal,
    ) -> None:
        """Add a connection on this operator's crossbar.

        Parameters
        ----------
        part : ConnectionPart
            Placement and pulse policy.
        pre_filtered : Signal
            Filtered presynaptic activities, ``(n_pre,)``.
        local_error : Signal
            Error per post neuron, ``(n_post,)``.
        threshold : Signal
            Error threshold: ``(1,)`` or ``(n_post,)``.
        mask_source : Signal
            What marks a pre neuron active, ``(n_pre,)``: ``pre_filtered`` itself (the
            published mask) or the pre neurons' spike output.
        pos_resistances, neg_resistances : Signal
            Resistances of the positive and negative devices, ``(n_post, n_pre)``, in ohm.
        weights : Signal
            The connection's weights, ``(n_post, n_pre)``.
        pulses : Signal
            Pulses applied to this connection in the step, ``(1,)``.
        state : Signal
            ``[pulse credit, running max |Delta|]``: the rule's own state, so a reset
            restores it.
        """
        signals = ConnectionSignals(
            pre_filtered,
            local_error,
            threshold,
            mask_source,
            pos_resistances,
            neg_resistances,
            weights,
            pulses,
            state,
        )
        self.parts.append(part)
        self.reads.extend(signals.reads)
        self.updates.extend(signals.updates)

    def connection_signals(self, k: int) -> ConnectionSignals:
        """The signals of the ``k``-th connection added, by name."""
        return ConnectionSignals(
            *self.reads[k * _READS : (k + 1) * _READS],
            *self.updates[k * _UPDATES : (k + 1) * _UPDATES],
        )

    @property
    def _descstr(self) -> str:
        return f"{len(self.parts)} connection(s) on {self.use.crossbar.identity!r}"

    def make_step(self, signals: Any, dt: float, rng: np.random.RandomState) -> Callable[[], None]:
        # make_step runs when a Simulator starts and on every reset: a restart from step 0
        # must find the devices as they were built.
        self.use.rewind()
        self.use.close_with(signals)  # sim.close() releases signals: close what we opened
        # The stochastic policy's own generator (two simulators never share a stream), seeded
        # from the connections' build seeds. Not from ``rng``: what the simulator's rng holds
        # when this op's make_step runs depends on how many ops drew from it before, and
        # Nengo's step order varies between builds of one network, so two builds would not
        # reproduce each other. A reset re-creates the generator: runs reproduce.
        generator = np.random.default_rng([part.seed for part in self.parts])
        runners = [
            _PartRunner(
                part,
                *(signals[s] for s in self.connection_signals(k)),
                dt=dt,
                rng=generator,
            )
            for k, part in enumerate(self.parts)
        ]
        apply = self.use.crossbar.apply
        use = self.use
        voltage, width = self.voltage, self.width
        # One read-back buffer, reused every step (apply(out=)); in the devices' float type, so
        # an emulator writes into it directly. store() copies what it needs before the next step.
        model = self.use.crossbar.model
        readback = np.empty(
            sum(runner.rows.shape[0] for runner in runners),
            np.float64 if model is None else model.float_type,
        )

        if len(runners) == 1:
            runner = runners[0]
            choose, store = runner.choose, runner.store

            def step_simmpes() -> None:
                size, count = choose()
                if size:
                    use.pulsed = True
                    batch = runner.batch(size, count, voltage, width)
                    store(apply(batch, read_back=True, out=readback[:size]))

            return step_simmpes

        def step_simmpes_shared() -> None:
            chosen = [(runner, *runner.choose()) for runner in runners]
            chosen = [c for c in chosen if c[1]]
            if not chosen:
                return
            rows = np.concatenate([r.rows[:size] for r, size, _ in chosen])
            cols = np.concatenate([r.cols[:size] for r, size, _ in chosen])
            counts = np.concatenate([np.broadcast_to(count, (size,)) for _, size, count in chosen])
            volts: Any = voltage
            if any(r.refreshing for r, _, _ in chosen):  # RESET entries: one voltage per cell
                volts = np.concatenate([r.cell_voltages(size, voltage) for r, size, _ in chosen])
            use.pulsed = True
            batch = PulseBatch(rows, cols, counts, volts, width)
            resistances = apply(batch, read_back=True, out=readback[: len(batch)])
            start = 0
            for runner, size, _ in chosen:
                runner.store(resistances[start : start + size])
                start += size

        return step_simmpes_shared


class _PartRunner:
    """One connection's buffers and per-step work, bound to its signals' arrays."""

    def __init__(
        self,
        part: ConnectionPart,
        acts: np.ndarray,
        local_error: np.ndarray,
        threshold: np.ndarray,
        mask_source: np.ndarray,
        r_pos: np.ndarray,
        r_neg: np.ndarray,
        weights: np.ndarray,
        pulses: np.ndarray,
        state: np.ndarray,
        dt: float,
        rng: np.random.Generator,
    ) -> None:
        n_post, n_pre = weights.shape
        self.rng = rng
        self.acts, self.local_error, self.threshold = acts, local_error, threshold
        self.mask_source, self.mask_threshold = mask_source, float(part.mask_threshold)
        self.r_pos, self.r_neg, self.weights = r_pos, r_neg, weights
        self.pulses, self.state = pulses, state
        self.origins = np.asarray(part.origins, dtype=np.int64)
        self.order = part.order
        self.c = part.gain * part.conductance_scale
        self.interval_steps = None if part.pulse_interval is None else dt / part.pulse_interval
        self.levels = part.levels
        self.scaled = part.policy == "scaled"
        self.by_rate = part.policy == "learning_rate"
        # cell-by-cell batches (zero counts dropped): stored through store_cells
        self.stochastic = part.policy == "stochastic" or self.by_rate
        if self.by_rate:
            self.alpha = float(part.learning_rate) * dt / n_pre  # Nengo PES's scale
            r0, r1, a = part.nominal
            self.nominal = (float(r0), float(r1), 1.0 / float(a))
            # each device's weight change per pulse, from the resistances as the run starts,
            # and its measured / nominal change per pulse (pairs.store_calibrated): float32,
            # plenty for a pulse count's expectation, and half the memory the step sweeps
            # (at 100x100 the model's arrays then stay in cache with Nengo's own)
            self.per_pos = pairs.nominal_pulse_change(r_pos, self.c, r0, r1, a).astype(np.float32)
            self.per_neg = pairs.nominal_pulse_change(r_neg, self.c, r0, r1, a).astype(np.float32)
            self.ratio_pos = np.ones(weights.shape, dtype=np.float32)
            self.ratio_neg = np.ones(weights.shape, dtype=np.float32)
        self.balancing = self.by_rate and part.balance
        self.max_count = int(part.max_count)
        self.balance_steps = 0
        self.refresh = part.refresh if self.by_rate else None
        self.refreshing = False
        if self.refresh is not None:
            self.pending = np.zeros(weights.shape, dtype=np.bool_)
            self.pend_i = np.empty(n_post * n_pre, dtype=np.uint64)
            self.pend_j = np.empty(n_post * n_pre, dtype=np.uint64)
            self.n_pending = 0
            self.since_refresh = 0
            self.kinds = np.empty(n_post * n_pre, dtype=np.int8)
            self.voltages = np.empty(n_post * n_pre, dtype=np.float64)
        self.active = np.empty(n_pre, dtype=np.uint64)  # unsigned: no wraparound checks
        self.rows_sel = np.empty(n_post, dtype=np.uint64)
        self.positive = np.empty(n_post, dtype=np.bool_)
        self.rows = np.empty(n_post * n_pre, dtype=np.int32)
        self.cols = np.empty(n_post * n_pre, dtype=np.int32)
        self.cols_scratch = np.empty(n_pre, dtype=np.int32)
        per_cell = self.scaled or self.stochastic
        self.counts = np.empty(n_post * n_pre if per_cell else 0, dtype=np.int64)
        self.polarity = np.empty(n_post * n_pre if self.stochastic else 0, dtype=np.bool_)
        # one uniform per candidate cell, drawn in bulk each step (same stream as per-cell draws)
        self.uniforms = np.empty(
            n_post * n_pre if self.stochastic and not self.by_rate else 0, dtype=np.float64
        )
        if self.by_rate:  # the learning_rate policy's draws, as many as it needs
            self.stream = kernels.new_stream(rng)
        self.running_max = state[1:2]
        if self.refresh is not None and self.rows.shape[0] < 3:  # room for one pair's refresh
            self.rows, self.cols = np.empty(3, np.int32), np.empty(3, np.int32)
            self.counts, self.polarity = np.empty(3, np.int64), np.empty(3, np.bool_)
            self.kinds, self.voltages = np.empty(3, np.int8), np.empty(3, np.float64)
        self.n_active = self.n_rows = 0

    def choose(self) -> tuple[int, Any]:
        """Choose this step's cells; returns their number and the pulse count(s)."""
        self.pulses[0] = 0.0
        if self.interval_steps is None:
            per_step = 1
        else:
            credit = self.state[0] + self.interval_steps
            per_step = int(credit + 1e-9)  # tolerate dt/interval rounding, e.g. 0.1/0.1
            self.state[0] = credit - per_step
            if per_step == 0:
                return 0, 0
        self.refreshing = False
        if self.balancing:
            return self._choose_balance()
        if self.refresh is not None:
            self.since_refresh += 1
            if self.n_pending and self.since_refresh >= pairs.REFRESH_PERIOD_STEPS:
                return self._choose_refresh()
        n_active, n_rows = kernels.select_pulses(
            self.mask_source,
            self.mask_threshold,
            self.local_error,
            self.threshold,
            self.order,
            self.origins,
            self.active,
            self.rows_sel,
            self.positive,
            self.rows,
            self.cols,
            self.cols_scratch,
            not self.stochastic,
        )
        self.n_active, self.n_rows = n_active, n_rows
        size = n_active * n_rows
        if size == 0:
            return 0, 0
        if self.stochastic and not self.by_rate:
            uniforms = self.uniforms[:size]
            self.rng.random(out=uniforms)
        if self.by_rate:
            size, total = kernels.learning_rate_cells(
                self.acts,
                self.local_error,
                self.active,
                n_active,
                self.rows_sel,
                self.positive,
                n_rows,
                self.origins,
                self.alpha * per_step,
                self.levels,
                self.per_pos,
                self.per_neg,
                self.rows,
                self.cols,
                self.counts,
                self.polarity,
                self.stream,
            )
            count: Any = self.counts[:size]
        elif self.stochastic:
            size, total = kernels.stochastic_cells(
                self.acts,
                self.local_error,
                self.active,
                n_active,
                self.rows_sel,
                self.positive,
                n_rows,
                self.origins,
                self.levels,
                per_step,
                self.running_max,
                self.rows,
                self.cols,
                self.counts,
                self.polarity,
                uniforms,
            )
            count = self.counts[:size]
        elif self.scaled:
            total = kernels.scaled_counts(
                self.acts,
                self.local_error,
                self.active,
                n_active,
                self.rows_sel,
                n_rows,
                self.levels,
                per_step,
                self.running_max,
                self.counts,
            )
            count = self.counts[:size]
        else:
            total = size * per_step
            count = per_step
        self.size = size
        self.pulses[0] = total
        return size, count

    def _choose_balance(self) -> tuple[int, Any]:
        """This step balances the pairs (SET pulses towards weight 0), no learning; the last
        balance step is the first with nothing left to balance, or step BALANCE_STEPS."""
        size, total = pairs.balance_cells(
            self.origins,
            self.r_pos,
            self.r_neg,
            self.ratio_pos,
            self.ratio_neg,
            *self.nominal,
            pairs.balance_count_cap(self.balance_steps, self.max_count),
            self.rows,
            self.cols,
            self.counts,
            self.polarity,
        )
        self.balance_steps += 1
        if size == 0 or self.balance_steps >= pairs.BALANCE_STEPS:
            self.balancing = False
        self.size = size
        self.pulses[0] = total
        return size, self.counts[:size]

    def _choose_refresh(self) -> tuple[int, Any]:
        """This step is a refresh step: the queued pairs' RESET and SET pulses, no learning.

        At most a third of the buffers' cells worth of pairs (three entries each); the rest
        stay queued for the next refresh step.
        """
        ref = self.refresh
        take = min(self.n_pending, self.rows.shape[0] // 3)
        size = pairs.refresh_cells(
            self.pend_i,
            self.pend_j,
            take,
            self.origins,
            self.r_pos,
            self.r_neg,
            self.ratio_pos,
            self.ratio_neg,
            *self.nominal,
            ref.r3,
            ref.exponent,
            self.max_count,
            self.rows,
            self.cols,
            self.counts,
            self.polarity,
            self.kinds,
        )
        rest = self.n_pending - take
        self.pend_i[:rest] = self.pend_i[take : self.n_pending]
        self.pend_j[:rest] = self.pend_j[take : self.n_pending]
        self.n_pending = rest
        self.since_refresh = 0
        self.refreshing = True
        self.size = size
        total = int(self.counts[:size].sum())
        self.pulses[0] = total
        return size, self.counts[:size]

    def cell_voltages(self, size: int, voltage: float) -> np.ndarray:
        """Each chosen cell's pulse voltage: ``voltage``, or the RESET voltage in a refresh."""
        if not self.refreshing:
            return np.full(size, voltage)
        out = self.voltages[:size]
        out[:] = voltage
        out[self.kinds[:size] == pairs.KIND_RESET] = self.refresh.voltage
        return out

    def batch(self, size: int, count: Any, voltage: float, width: float) -> PulseBatch:
        """This connection's cells as a batch of its own."""
        if self.refreshing:
            voltages = self.cell_voltages(size, voltage)
            return PulseBatch(self.rows[:size], self.cols[:size], count, voltages, width)
        return PulseBatch(self.rows[:size], self.cols[:size], count, voltage, width)

    def store(self, resistances: np.ndarray) -> None:
        """Take the read-back resistances of the chosen cells, in the order chosen."""
        if self.refreshing:
            pairs.store_refresh(
                self.rows,
                self.cols,
                self.polarity,
                self.size,
                self.origins,
                resistances,
                self.r_pos,
                self.r_neg,
                self.weights,
                self.c,
                self.per_pos,
                self.per_neg,
                self.ratio_pos,
                self.ratio_neg,
                self.pending,
                *self.nominal,
            )
        elif self.by_rate:
            pairs.store_calibrated(
                self.rows,
                self.cols,
                self.polarity,
                self.counts,
                self.size,
                self.origins,
                resistances,
                self.r_pos,
                self.r_neg,
                self.weights,
                self.c,
                self.per_pos,
                self.per_neg,
                self.ratio_pos,
                self.ratio_neg,
                *self.nominal,
                pairs.CALIBRATION_RATE,
            )
            if self.refresh is not None:
                self.n_pending = pairs.mark_saturated(
                    self.rows,
                    self.cols,
                    self.polarity,
                    self.size,
                    self.origins,
                    self.r_pos,
                    self.r_neg,
                    self.refresh.r_limit,
                    self.pending,
                    self.pend_i,
                    self.pend_j,
                    self.n_pending,
                )
        elif self.stochastic:
            kernels.store_cells(
                self.rows,
                self.cols,
                self.polarity,
                self.size,
                self.origins,
                resistances,
                self.r_pos,
                self.r_neg,
                self.weights,
                self.c,
            )
        else:
            kernels.store(
                self.rows_sel,
                self.positive,
                self.n_rows,
                self.active,
                self.n_active,
                resistances,
                self.r_pos,
                self.r_neg,
                self.weights,
                self.c,
            )
