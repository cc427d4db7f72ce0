"""``SimmPES``: the operator that runs one mPES connection's devices each timestep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from nengo.builder.operator import Operator
from nengo.builder.signal import Signal

from . import mpes_kernels
from .mpes_devices import CrossbarUse
from .pulses import PulseBatch

__all__ = ["SimmPES"]


class SimmPES(Operator):
    r"""Pulse a connection's memristors from the PES direction, and update its weights.

    Each step: the pre neurons with ``a_j > 0.5`` and the post neurons with
    ``|e_i| > threshold_i`` choose the cells (positive devices where :math:`e_i < 0`, negative
    where :math:`e_i > 0`); the whole batch goes to the crossbar in one
    ``apply(batch, read_back=True)`` call (no call when nothing is pulsed); the resistances
    read back replace the touched entries of ``pos_resistances``/``neg_resistances`` and the
    touched weights become ``gain * (g(R+) - g(R-))``.

    Parameters
    ----------
    pre_filtered : Signal
        Filtered presynaptic activities, ``(n_pre,)``.
    local_error : Signal
        Error per post neuron, ``(n_post,)``.
    threshold : Signal
        Error threshold: ``(1,)`` or ``(n_post,)``.
    pos_resistances, neg_resistances : Signal
        Resistances of the positive and negative devices, ``(n_post, n_pre)``, in ohm.
    weights : Signal
        The connection's weights, ``(n_post, n_pre)``.
    pulses : Signal
        Pulses applied in the step, ``(1,)``.
    state : Signal
        ``[pulse credit, running max |Delta|]``: the rule's own state, so a reset restores it.
    use : CrossbarUse
        The crossbar and the connection's share of it.
    origins : tuple of int
        ``(pos_row, pos_col, neg_row, neg_col)``: top-left cells of the two device blocks.
    order : int
        Row order of the batch (``mpes_kernels.ORDER_*``).
    gain : float
        :math:`\gamma`.
    conductance_scale : float
        ``1 / (1/r0 - 1/r1)`` of the nominal model.
    voltage, width : float
        SET pulse voltage (V) and width (s).
    pulse_interval : float or None
        Simulated seconds per pulse; None for one pulse per step.
    scaled_levels : int or None
        With the "scaled" policy, the most pulses per device per interval; None for one.
    tag : str, optional
        A label for debugging.

    Notes
    -----
    1. sets ``[]``
    2. incs ``[]``
    3. reads ``[pre_filtered, local_error, threshold]``
    4. updates ``[pos_resistances, neg_resistances, weights, pulses, state]``
    """

    def __init__(
        self,
        pre_filtered: Signal,
        local_error: Signal,
        threshold: Signal,
        pos_resistances: Signal,
        neg_resistances: Signal,
        weights: Signal,
        pulses: Signal,
        state: Signal,
        use: CrossbarUse,
        origins: tuple[int, int, int, int],
        order: int,
        gain: float,
        conductance_scale: float,
        voltage: float,
        width: float,
        pulse_interval: float | None,
        scaled_levels: int | None,
        tag: str | None = None,
    ) -> None:
        super().__init__(tag=tag)
        self.use = use
        self.origins = np.asarray(origins, dtype=np.int64)
        self.order = order
        self.gain = gain
        self.conductance_scale = conductance_scale
        self.voltage = float(voltage)
        self.width = float(width)
        self.pulse_interval = pulse_interval
        self.scaled_levels = scaled_levels
        self.sets = []
        self.incs = []
        self.reads = [pre_filtered, local_error, threshold]
        self.updates = [pos_resistances, neg_resistances, weights, pulses, state]

    pre_filtered = property(lambda self: self.reads[0])
    local_error = property(lambda self: self.reads[1])
    threshold = property(lambda self: self.reads[2])
    pos_resistances = property(lambda self: self.updates[0])
    neg_resistances = property(lambda self: self.updates[1])
    weights = property(lambda self: self.updates[2])
    pulses = property(lambda self: self.updates[3])
    state = property(lambda self: self.updates[4])

    @property
    def _descstr(self) -> str:
        return (
            f"pre={self.pre_filtered}, error={self.local_error} -> {self.weights} "
            f"on {self.use.crossbar.identity!r}"
        )

    def make_step(self, signals: Any, dt: float, rng: np.random.RandomState) -> Callable[[], None]:
        # make_step runs when a Simulator starts and on every reset: a restart from step 0
        # must find the devices as they were built.
        self.use.rewind()
        acts = signals[self.pre_filtered]
        local_error = signals[self.local_error]
        threshold = signals[self.threshold]
        r_pos = signals[self.pos_resistances]
        r_neg = signals[self.neg_resistances]
        weights = signals[self.weights]
        pulses_applied = signals[self.pulses]
        state = signals[self.state]
        n_post, n_pre = weights.shape
        use = self.use
        apply = use.crossbar.apply
        origins, order = self.origins, self.order
        c = self.gain * self.conductance_scale
        voltage, width = self.voltage, self.width
        interval_steps = None if self.pulse_interval is None else dt / self.pulse_interval
        levels = self.scaled_levels
        select, store = mpes_kernels.select_pulses, mpes_kernels.store

        active = np.empty(n_pre, dtype=np.int64)
        rows_sel = np.empty(n_post, dtype=np.int64)
        positive = np.empty(n_post, dtype=np.bool_)
        rows = np.empty(n_post * n_pre, dtype=np.int32)
        cols = np.empty(n_post * n_pre, dtype=np.int32)
        counts = np.empty(n_post * n_pre if levels else 0, dtype=np.int64)
        running_max = state[1:2]

        def step_simmpes() -> None:
            pulses_applied[0] = 0.0
            if interval_steps is None:
                per_step = 1
            else:
                credit = state[0] + interval_steps
                per_step = int(credit + 1e-9)  # tolerate dt/interval rounding, e.g. 0.1/0.1
                state[0] = credit - per_step
                if per_step == 0:
                    return
            n_active, n_rows = select(
                acts,
                local_error,
                threshold,
                order,
                origins,
                active,
                rows_sel,
                positive,
                rows,
                cols,
            )
            size = n_active * n_rows
            if size == 0:
                return
            if levels:
                total = mpes_kernels.scaled_counts(
                    acts,
                    local_error,
                    active,
                    n_active,
                    rows_sel,
                    n_rows,
                    levels,
                    per_step,
                    running_max,
                    counts,
                )
                count = counts[:size]
            else:
                total = size * per_step
                count = per_step
            batch = PulseBatch(rows[:size], cols[:size], count, voltage, width)
            use.pulsed = True
            resistances = apply(batch, read_back=True)
            store(
                rows_sel, positive, n_rows, active, n_active, resistances, r_pos, r_neg, weights, c
            )
            pulses_applied[0] = total

        return step_simmpes
