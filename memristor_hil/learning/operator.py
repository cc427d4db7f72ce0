"""``SimmPES``: the operator that runs the mPES connections of one crossbar each timestep."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from nengo.builder.operator import Operator
from nengo.builder.signal import Signal

from ..crossbar import PendingApply
from ..pulses import PulseBatch
from . import kernels, pairs
from .crossbars import CrossbarUse
from .groups import Calibration, Cells, HostModel, Inputs, Pairs, RefreshQueue, Selection, plain

__all__ = [
    "ConnectionPart",
    "ConnectionSignals",
    "PartRunner",
    "Refresh",
    "SimmPES",
    "SimmPESCollect",
]


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
    step's pulses as one batch with read-back (none when nothing is pulsed): with
    ``Crossbar.submit``, stored by :class:`SimmPESCollect` in the next step, or, without a
    collector (NengoDL), with ``apply`` and stored at once (into staging signals there, which
    reach the probed ones in the next step: :meth:`add_weight_change`). For each connection: the pre
    neurons with ``a_j > 0.5`` and the post neurons with ``|e_i| > threshold_i`` choose the
    cells (positive devices where :math:`e_i < 0`, negative where :math:`e_i > 0`); the
    resistances read back replace the touched entries of its
    ``pos_resistances``/``neg_resistances`` and its touched weights become
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
        #: The operator that stores each step's read-back in the next step (the builder adds
        #: it; without it, or without its make_step, each step stores its own read-back).
        self.collector: SimmPESCollect | None = None
        self.sets = []
        self.incs = []
        self.reads = []
        self.updates = []

    def add_connection(self, part: ConnectionPart, signals: ConnectionSignals) -> None:
        """Add a connection on this operator's crossbar.

        Parameters
        ----------
        part : ConnectionPart
            Placement and pulse policy.
        signals : ConnectionSignals
            Its signals, by name (nine signals, several of one shape: built by keyword, so
            none can take another's place): ``pre_filtered`` (filtered presynaptic
            activities, ``(n_pre,)``), ``local_error`` (per post neuron, ``(n_post,)``),
            ``threshold`` (``(1,)`` or ``(n_post,)``), ``mask_source`` (what marks a pre
            neuron active, ``(n_pre,)``: ``pre_filtered`` itself, the published mask, or the
            pre neurons' spike output), ``pos_resistances`` and ``neg_resistances`` (ohm,
            ``(n_post, n_pre)``), ``weights`` (``(n_post, n_pre)``), ``pulses`` (pulses
            applied in the step, ``(1,)``) and ``state`` (``[pulse credit, running max
            |Delta|]``: the rule's own state, so a reset restores it).
        """
        at = len(self.parts) * _UPDATES  # before the weight changes (add_weight_change)
        self.parts.append(part)
        self.reads.extend(signals.reads)
        self.updates[at:at] = signals.updates
        if self.collector is not None:
            self.collector.add_connection(signals)

    def add_weight_change(self, delta: Signal) -> None:
        """NengoDL: the connection added last writes its weights' change into ``delta``.

        Its weights are then only read: Nengo's ``Copy(delta, weights, inc=True)`` adds the
        change in the next step, before the weights are read, so the weights probe shows the
        devices after the previous step's batch, as :class:`SimmPESCollect` makes it for
        ``nengo.Simulator``. ``delta`` joins ``updates`` after every connection's signals.
        """
        if len(self.updates) != len(self.parts) * _UPDATES + len(self.parts) - 1:
            raise ValueError("add_weight_change follows the add_connection of its connection")
        self.updates.append(delta)

    def weight_change(self, k: int) -> Signal | None:
        """The ``delta`` signal of the ``k``-th connection (:meth:`add_weight_change`), if any."""
        at = len(self.parts) * _UPDATES + k
        return self.updates[at] if at < len(self.updates) else None

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
            PartRunner(
                part,
                ConnectionSignals(*(signals[s] for s in self.connection_signals(k))),
                dt=dt,
                rng=generator,
            )
            for k, part in enumerate(self.parts)
        ]
        # the largest batch a step sends: a backend makes room for it now, not mid-run
        self.use.crossbar.reserve(sum(runner.rows.shape[0] for runner in runners))
        pipeline = self.collector.pipeline_for(signals) if self.collector is not None else None
        if pipeline is not None:  # the collector's make_step ran first, for these signals
            return _overlapped_step(self, runners, pipeline)
        return _immediate_step(self, runners)


class SimmPESCollect(Operator):
    """Store the read-back of the batch :class:`SimmPES` submitted in the previous step.

    :class:`SimmPES` sends a step's batch with :meth:`Crossbar.submit` and returns; this
    operator collects the read-back in the next step, before anything reads the weights (it
    ``sets`` them), and stores it as :class:`SimmPES` did right away before: the weights the
    connection reads in every step are bit for bit those of before, while the device round
    trip (a serial or VISA link, an instrument) overlaps the rest of the step, the probes'
    sampling, and the next step's operators up to the weights' readers.

    The one visible change is in the probes: in step ``t`` the ``weights``,
    ``pos_resistances`` and ``neg_resistances`` signals show the devices after the batch of
    step ``t - 1`` (as Nengo's PES, whose weight probe in step ``t`` shows the increments up
    to step ``t - 1``); ``pulses`` still counts the pulses sent in step ``t``. After
    ``sim.run()`` the last step's read-back is stored by the next step (the crossbar's next
    call, e.g. ``read_all()`` or ``close()``, collects it from the device).

    NengoDL models have no collector (NengoDL refuses an operator that sets a learned
    connection's weights): there :class:`SimmPES` applies and stores within its own step, into
    staging signals that ``Copy`` operators carry into the probed ones in the next step, so the
    probes lag the same one step (:meth:`SimmPES.add_weight_change`).

    Notes
    -----
    1. sets ``[pos_resistances, neg_resistances, weights]`` of every connection
    2. incs ``[]``
    3. reads ``[pre_output]`` of every connection (:meth:`wait_for`: only to run late)
    4. updates ``[]``
    """

    def __init__(self, op: SimmPES, tag: str | None = None) -> None:
        super().__init__(tag=tag)
        self.op = op
        op.collector = self
        self.sets = []
        self.incs = []
        self.reads = []
        self.updates = []
        self._pipeline: tuple[weakref.ref, _Pipeline] | None = None

    def add_connection(self, signals: ConnectionSignals) -> None:
        """Take over storing the read-back into one connection's signals."""
        self.sets.extend([signals.pos_resistances, signals.neg_resistances, signals.weights])

    def wait_for(self, signal: Signal) -> None:
        """Run after ``signal`` is computed in the step (it is read): the later this operator
        runs, the more of Nengo's work overlaps the round trip. Give the signal the weights
        multiply, so it still runs before they are read."""
        if signal not in self.reads:
            self.reads.append(signal)

    def pipeline_for(self, signals: Any) -> _Pipeline | None:
        """The pipeline this operator's last ``make_step`` made for ``signals``, if any."""
        if self._pipeline is None or self._pipeline[0]() is not signals:
            return None
        return self._pipeline[1]

    @property
    def _descstr(self) -> str:
        return f"collect {self.op._descstr}"

    def make_step(self, signals: Any, dt: float, rng: np.random.RandomState) -> Callable[[], None]:
        # Runs before SimmPES.make_step (it sets what SimmPES updates). A reset drops the
        # previous pipeline: its outstanding apply, if any, is collected by the crossbar's
        # next call, and SimmPES.make_step rewinds the devices.
        pipeline = _Pipeline()
        self._pipeline = (weakref.ref(signals), pipeline)
        return pipeline.collect


class _Pipeline:
    """The batch in flight between :class:`SimmPES` (submit) and :class:`SimmPESCollect`."""

    __slots__ = ("pending", "ready", "runners", "sizes")

    def __init__(self) -> None:
        #: The submitted apply whose read-back the next step stores, if any.
        self.pending: PendingApply | None = None
        #: Or its read-back already (devices simulated in this process).
        self.ready: np.ndarray | None = None
        self.runners: list[PartRunner] = []
        self.sizes: list[int] = []

    def collect(self) -> None:
        """Store the previous step's read-back (nothing in the first step)."""
        resistances = self.ready
        if resistances is not None:
            self.ready = None
        elif self.pending is not None:
            pending, self.pending = self.pending, None
            resistances = pending.result()
        else:
            return
        if len(self.runners) == 1:  # the read-back is one runner's (its size was not 0)
            self.runners[0].store(resistances)
            return
        start = 0
        for runner, size in zip(self.runners, self.sizes, strict=True):
            if size:
                runner.store(resistances[start : start + size])
                start += size


def _chosen_batch(
    chosen: list[tuple[PartRunner, int, Any]], voltage: float, width: float
) -> PulseBatch:
    """One batch of the cells the runners chose, runner after runner."""
    if len(chosen) == 1:
        runner, size, count = chosen[0]
        return runner.batch(size, count, voltage, width)
    rows = np.concatenate([r.rows[:size] for r, size, _ in chosen])
    cols = np.concatenate([r.cols[:size] for r, size, _ in chosen])
    counts = np.concatenate([np.broadcast_to(count, (size,)) for _, size, count in chosen])
    volts: Any = voltage
    if any(r.refreshing for r, _, _ in chosen):  # RESET entries: one voltage per cell
        volts = np.concatenate([r.cell_voltages(size, voltage) for r, size, _ in chosen])
    return PulseBatch(rows, cols, counts, volts, width)


def _overlapped_step(
    op: SimmPES, runners: list[PartRunner], pipeline: _Pipeline
) -> Callable[[], None]:
    """A step that chooses and submits the batch; :class:`SimmPESCollect` stores it.

    Devices simulated in this process (``device_parameters``: an in-process emulator) have no
    round trip to overlap: their batch is applied at once into a reused buffer, as in
    :func:`_immediate_step`, and only the store waits for the next step (the same probes on
    every backend).
    """
    crossbar = op.use.crossbar
    submit, apply = crossbar.submit, crossbar.apply
    in_process = crossbar.device_parameters is not None
    # only an in-process apply reads back into a buffer of ours (submit returns its own)
    readback = _readback_buffer(crossbar, runners) if in_process else None
    use = op.use
    voltage, width = op.voltage, op.width
    pipeline.runners = runners
    pipeline.sizes = [0] * len(runners)
    sizes = pipeline.sizes

    if len(runners) == 1:
        runner = runners[0]
        choose, batch_of = runner.choose, runner.batch

        def step_simmpes_overlapped_one() -> None:
            size, count = choose()
            runner.pulses[0] = runner.total
            if size:
                use.pulsed = True
                batch = batch_of(size, count, voltage, width)
                if in_process:
                    pipeline.ready = apply(batch, read_back=True, out=readback[:size])
                else:
                    pipeline.pending = submit(batch, read_back=True)

        return step_simmpes_overlapped_one

    def step_simmpes_overlapped() -> None:
        chosen = []
        for k, runner in enumerate(runners):
            size, count = runner.choose()
            runner.pulses[0] = runner.total
            sizes[k] = size
            if size:
                chosen.append((runner, size, count))
        if chosen:
            use.pulsed = True
            batch = _chosen_batch(chosen, voltage, width)
            if in_process:
                pipeline.ready = apply(batch, read_back=True, out=readback[: len(batch)])
            else:
                pipeline.pending = submit(batch, read_back=True)

    return step_simmpes_overlapped


def _readback_buffer(crossbar: Any, runners: list[PartRunner]) -> np.ndarray:
    """One read-back buffer for every step (``apply(out=)``), in the devices' float type, so
    an emulator writes into it directly; the store copies what it needs before it is reused."""
    model = crossbar.model
    return np.empty(
        sum(runner.rows.shape[0] for runner in runners),
        np.float64 if model is None else model.float_type,
    )


def _immediate_step(op: SimmPES, runners: list[PartRunner]) -> Callable[[], None]:
    """A step that applies the batch and stores its read-back at once."""
    apply = op.use.crossbar.apply
    use = op.use
    voltage, width = op.voltage, op.width
    readback = _readback_buffer(op.use.crossbar, runners)

    if len(runners) == 1:
        runner = runners[0]
        choose, store = runner.choose, runner.store

        def step_simmpes() -> None:
            size, count = choose()
            runner.pulses[0] = runner.total
            if size:
                use.pulsed = True
                batch = runner.batch(size, count, voltage, width)
                store(apply(batch, read_back=True, out=readback[:size]))

        return step_simmpes

    def step_simmpes_shared() -> None:
        chosen = []
        for runner in runners:
            size, count = runner.choose()
            runner.pulses[0] = runner.total
            if size:
                chosen.append((runner, size, count))
        if not chosen:
            return
        use.pulsed = True
        batch = _chosen_batch(chosen, voltage, width)
        resistances = apply(batch, read_back=True, out=readback[: len(batch)])
        start = 0
        for runner, size, _ in chosen:
            runner.store(resistances[start : start + size])
            start += size

    return step_simmpes_shared


class PartRunner:
    """One connection's signals and buffers, the selection every policy shares, and its pulse
    policy (:class:`_Policy`), chosen once when the step is made.

    The arrays the kernels take travel in the named groups of :mod:`.groups`, built here by
    keyword and kept as plain tuples (:func:`.groups.plain`: what numba types fastest).

    Public so that profilers (``benchmarks/profile_mpes.py``) can time its ``choose`` and
    ``store`` phases; it is built by the operator, never by users.
    """

    def __init__(
        self, part: ConnectionPart, signals: ConnectionSignals, dt: float, rng: np.random.Generator
    ) -> None:
        n_post, n_pre = signals.weights.shape
        self.r_pos, self.r_neg = signals.pos_resistances, signals.neg_resistances
        self.pulses, self.state = signals.pulses, signals.state
        self.c = part.gain * part.conductance_scale
        self.interval_steps = None if part.pulse_interval is None else dt / part.pulse_interval
        self.inputs = plain(
            Inputs(
                acts=signals.pre_filtered,
                local_error=signals.local_error,
                threshold=signals.threshold,
                mask_source=signals.mask_source,
            )
        )
        origins = np.asarray(part.origins, dtype=np.int64)
        self.sel = plain(
            Selection(
                order=part.order,
                mask_threshold=float(part.mask_threshold),
                origins=origins,
                active=np.empty(n_pre, dtype=np.uint64),  # unsigned: no wraparound checks
                post_rows=np.empty(n_post, dtype=np.uint64),
                positive=np.empty(n_post, dtype=np.bool_),
                scratch=np.empty(n_pre, dtype=np.int32),
                sizes=np.zeros(2, dtype=np.int64),
            )
        )
        self.pairs = plain(
            Pairs(
                origins=origins,
                r_pos=self.r_pos,
                r_neg=self.r_neg,
                weights=signals.weights,
                c=self.c,
            )
        )
        #: The batch's cells (a policy may grow them before it builds its ``Cells``).
        self.rows = np.empty(n_post * n_pre, dtype=np.int32)
        self.cols = np.empty(n_post * n_pre, dtype=np.int32)
        self.running_max = self.state[1:2]
        self.size = 0  # cells of the last batch chosen (what store() takes)
        self.total = 0  # pulses of the last choose(): what the step writes to ``pulses``
        self.policy: _Policy = _POLICIES[part.policy](self, part, dt, rng)

    @property
    def refreshing(self) -> bool:
        """True when the last batch chosen is a refresh (RESET entries: per-cell voltages)."""
        return self.policy.refreshing

    def choose(self) -> tuple[int, Any]:
        """Choose this step's cells; returns their number and the pulse count(s)."""
        self.total = 0
        if self.interval_steps is None:
            per_step = 1
        else:
            # Python floats: the same IEEE doubles as NumPy's scalars, a fraction of their cost
            credit = float(self.state[0]) + self.interval_steps
            per_step = int(credit + 1e-9)  # tolerate dt/interval rounding, e.g. 0.1/0.1
            self.state[0] = credit - per_step
            if per_step == 0:
                return 0, 0
        return self.policy.choose(per_step)

    def batch(self, size: int, count: Any, voltage: float, width: float) -> PulseBatch:
        """This connection's cells as a batch of its own."""
        if self.refreshing:
            voltages = self.policy.cell_voltages(size, voltage)
            return PulseBatch(self.rows[:size], self.cols[:size], count, voltages, width)
        return PulseBatch(self.rows[:size], self.cols[:size], count, voltage, width)

    def cell_voltages(self, size: int, voltage: float) -> np.ndarray:
        """Each chosen cell's pulse voltage: ``voltage``, or the RESET voltage in a refresh."""
        return self.policy.cell_voltages(size, voltage)

    def store(self, resistances: np.ndarray) -> None:
        """Take the read-back resistances of the chosen cells, in the order chosen."""
        self.policy.store(resistances)


class _Policy:
    """How one connection's candidate cells become pulse counts, and how their read-back is
    stored: one subclass per ``mPES(pulses=...)`` policy, chosen once at ``make_step``.

    Parameters
    ----------
    runner : PartRunner
        The connection's signals, groups and shared buffers.
    part : ConnectionPart
        The connection's settings.
    dt : float
        The simulator's timestep.
    rng : numpy.random.Generator
        The operator's own generator (the random policies draw from it).

    Attributes
    ----------
    refreshing : bool
        True while the last batch chosen is a refresh (only the learning-rate policy has one).
    cells : tuple
        The policy's :class:`~.groups.Cells` (plain): the runner's ``rows``/``cols`` and,
        where the policy lists its batch cell by cell, its counts and polarities.
    """

    refreshing = False

    def __init__(
        self, runner: PartRunner, part: ConnectionPart, dt: float, rng: np.random.Generator
    ) -> None:
        self.r = runner

    def choose(self, per_step: int) -> tuple[int, Any]:
        """This step's cells (in the runner's ``rows``/``cols``) for ``per_step`` pulse
        intervals: their number and pulse count(s); sets the runner's ``size`` and ``total``."""
        raise NotImplementedError

    def store(self, resistances: np.ndarray) -> None:
        """Store the read-back of the cells chosen last, in the order chosen."""
        raise NotImplementedError

    def cell_voltages(self, size: int, voltage: float) -> np.ndarray:
        """Each chosen cell's pulse voltage (all ``voltage`` but in a refresh)."""
        return np.full(size, voltage)


class _OnePulse(_Policy):
    """The published rule: one pulse per interval on every candidate cell (the product of the
    pulsed rows and active columns, :func:`kernels.select_pulses`)."""

    def __init__(
        self, runner: PartRunner, part: ConnectionPart, dt: float, rng: np.random.Generator
    ) -> None:
        super().__init__(runner, part, dt, rng)
        # rows and columns only (the product set's count is one per interval, its polarity
        # the row's): no arrays numba's dispatch would check for nothing on every call
        self.cells = plain(Cells(rows=runner.rows, cols=runner.cols, counts=None, polarity=None))

    def choose(self, per_step: int) -> tuple[int, Any]:
        r = self.r
        n_active, n_rows = kernels.select_pulses(r.inputs, r.sel, self.cells, True)
        size = n_active * n_rows
        if size == 0:
            return 0, 0
        r.size, r.total = size, size * per_step
        return size, per_step

    def store(self, resistances: np.ndarray) -> None:
        r = self.r
        kernels.store(r.sel, resistances, r.pairs)


class _Scaled(_OnePulse):
    """Every candidate cell, with a count growing with ``|e_i| a_j`` (``kernels.scaled_counts``)."""

    def __init__(
        self, runner: PartRunner, part: ConnectionPart, dt: float, rng: np.random.Generator
    ) -> None:
        super().__init__(runner, part, dt, rng)
        self.levels = part.levels
        self.counts = np.empty(runner.rows.shape[0], dtype=np.int64)  # scaled_counts' ``out``

    def choose(self, per_step: int) -> tuple[int, Any]:
        r = self.r
        n_active, n_rows = kernels.select_pulses(r.inputs, r.sel, self.cells, True)
        size = n_active * n_rows
        if size == 0:
            return 0, 0
        r.total = kernels.scaled_counts(
            r.inputs, r.sel, self.levels, per_step, r.running_max, self.counts
        )
        r.size = size
        return size, self.counts[:size]


class _Stochastic(_Policy):
    """Stochastically rounded counts (``kernels.stochastic_cells``), cell by cell, zeros
    dropped; one uniform per candidate cell from the operator's generator."""

    def __init__(
        self, runner: PartRunner, part: ConnectionPart, dt: float, rng: np.random.Generator
    ) -> None:
        super().__init__(runner, part, dt, rng)
        n = runner.rows.shape[0]
        self.levels = part.levels
        self.rng = rng
        self.counts = np.empty(n, dtype=np.int64)
        self.polarity = np.empty(n, dtype=np.bool_)
        self.cells = plain(Cells(rows=runner.rows, cols=runner.cols, counts=self.counts,
                                 polarity=self.polarity))  # fmt: skip
        # one uniform per candidate cell, drawn in bulk each step (same stream as per-cell draws)
        self.uniforms = np.empty(n, dtype=np.float64)

    def choose(self, per_step: int) -> tuple[int, Any]:
        r = self.r
        n_active, n_rows = kernels.select_pulses(r.inputs, r.sel, self.cells, False)
        size = n_active * n_rows
        if size == 0:
            return 0, 0
        uniforms = self.uniforms[:size]
        self.rng.random(out=uniforms)
        size, r.total = kernels.stochastic_cells(
            r.inputs, r.sel, self.levels, per_step, r.running_max, self.cells, uniforms
        )
        r.size = size
        return size, self.counts[:size]

    def store(self, resistances: np.ndarray) -> None:
        r = self.r
        kernels.store_cells(self.cells, r.size, resistances, r.pairs)


class _LearningRate(_Policy):
    """Nengo PES's expected weight change in pulses (``kernels.learning_rate_cells``), with
    the read-back calibration, the first steps' pair balance and the pair refresh of
    :mod:`~memristor_hil.learning.pairs`."""

    def __init__(
        self, runner: PartRunner, part: ConnectionPart, dt: float, rng: np.random.Generator
    ) -> None:
        super().__init__(runner, part, dt, rng)
        r = runner
        shape = r.r_pos.shape
        n = shape[0] * shape[1]
        self.levels = part.levels
        self.alpha = float(part.learning_rate) * dt / shape[1]  # Nengo PES's scale
        r0, r1, a = part.nominal
        refresh = part.refresh
        self.model = plain(
            HostModel(
                r0=float(r0),
                r1=float(r1),
                inv_a=1.0 / float(a),
                r3=np.nan if refresh is None else refresh.r3,
                exponent=np.nan if refresh is None else refresh.exponent,
            )
        )
        # each device's weight change per pulse, from the resistances as the run starts,
        # and its measured / nominal change per pulse (pairs.store_calibrated): float32,
        # plenty for a pulse count's expectation, and half the memory the step sweeps
        # (at 100x100 the model's arrays then stay in cache with Nengo's own)
        self.cal = plain(
            Calibration(
                per_pos=pairs.nominal_pulse_change(r.r_pos, r.c, r0, r1, a).astype(np.float32),
                per_neg=pairs.nominal_pulse_change(r.r_neg, r.c, r0, r1, a).astype(np.float32),
                ratio_pos=np.ones(shape, dtype=np.float32),
                ratio_neg=np.ones(shape, dtype=np.float32),
            )
        )
        self.balancing = bool(part.balance)
        self.max_count = int(part.max_count)
        self.balance_steps = 0
        self.refresh = refresh
        if refresh is not None:
            self.n_pending = 0
            self.since_refresh = 0
            if n < 3:  # room for one pair's refresh
                r.rows, r.cols = np.empty(3, np.int32), np.empty(3, np.int32)
                n = 3
            self.queue = plain(
                RefreshQueue(
                    pending=np.zeros(shape, dtype=np.bool_),
                    # the queue of pairs to refresh (row and column in the weight matrix):
                    # 32 bits hold any pair and halve the largest of the operator's buffers
                    post=np.empty(shape[0] * shape[1], dtype=np.uint32),
                    pre=np.empty(shape[0] * shape[1], dtype=np.uint32),
                    kinds=np.empty(n, dtype=np.int8),
                )
            )
        # pulses per cell, at most max_count: 32 bits where that holds it, half of int64's memory
        self.counts = np.empty(n, dtype=np.int32 if self.max_count < 2**31 else np.int64)
        self.polarity = np.empty(n, dtype=np.bool_)
        self.cells = plain(Cells(rows=r.rows, cols=r.cols, counts=self.counts,
                                 polarity=self.polarity))  # fmt: skip
        self.stream = kernels.new_stream(rng)  # the policy's draws, as many as it needs

    def choose(self, per_step: int) -> tuple[int, Any]:
        self.refreshing = False
        if self.balancing:
            return self._choose_balance()
        if self.refresh is not None:
            self.since_refresh += 1
            if self.n_pending and self.since_refresh >= pairs.REFRESH_PERIOD_STEPS:
                return self._choose_refresh()
        r = self.r
        n_active, n_rows = kernels.select_pulses(r.inputs, r.sel, self.cells, False)
        if n_active * n_rows == 0:
            return 0, 0
        size, r.total = kernels.learning_rate_cells(
            r.inputs, r.sel, self.alpha * per_step, self.levels, self.cal, self.cells, self.stream
        )
        r.size = size
        return size, self.counts[:size]

    def _choose_balance(self) -> tuple[int, Any]:
        """This step balances the pairs (SET pulses towards weight 0), no learning; the last
        balance step is the first with nothing left to balance, or step BALANCE_STEPS."""
        r = self.r
        cap = pairs.balance_count_cap(self.balance_steps, self.max_count)
        size, r.total = pairs.balance_cells(r.pairs, self.cal, self.model, cap, self.cells)
        self.balance_steps += 1
        if size == 0 or self.balance_steps >= pairs.BALANCE_STEPS:
            self.balancing = False
        r.size = size
        return size, self.counts[:size]

    def _choose_refresh(self) -> tuple[int, Any]:
        """This step is a refresh step: the queued pairs' RESET and SET pulses, no learning.

        At most a third of the buffers' cells worth of pairs (three entries each); the rest
        stay queued for the next refresh step.
        """
        r, queue = self.r, RefreshQueue(*self.queue)
        take = min(self.n_pending, r.rows.shape[0] // 3)
        size = pairs.refresh_cells(
            self.queue, take, r.pairs, self.cal, self.model, self.max_count, self.cells
        )
        rest = self.n_pending - take
        queue.post[:rest] = queue.post[take : self.n_pending]
        queue.pre[:rest] = queue.pre[take : self.n_pending]
        self.n_pending = rest
        self.since_refresh = 0
        self.refreshing = True
        r.size = size
        r.total = int(self.counts[:size].sum())
        return size, self.counts[:size]

    def cell_voltages(self, size: int, voltage: float) -> np.ndarray:
        if not self.refreshing:
            return np.full(size, voltage)
        # a new array: only refresh steps (one in REFRESH_PERIOD_STEPS) need one, so no
        # per-device buffer is held for it
        out = np.full(size, voltage)
        out[RefreshQueue(*self.queue).kinds[:size] == pairs.KIND_RESET] = self.refresh.voltage
        return out

    def store(self, resistances: np.ndarray) -> None:
        r = self.r
        if self.refreshing:
            pairs.store_refresh(
                self.cells, r.size, resistances, r.pairs, self.cal, self.model, self.queue
            )
            return
        pairs.store_calibrated(
            self.cells, r.size, resistances, r.pairs, self.cal, self.model,
            pairs.CALIBRATION_RATE,
        )  # fmt: skip
        if self.refresh is not None:
            self.n_pending = pairs.mark_saturated(
                self.cells, r.size, r.pairs, self.refresh.r_limit, self.queue, self.n_pending
            )


#: The policy of each ``ConnectionPart.policy``.
_POLICIES: dict[str, type[_Policy]] = {
    "one": _OnePulse,
    "scaled": _Scaled,
    "stochastic": _Stochastic,
    "learning_rate": _LearningRate,
}
