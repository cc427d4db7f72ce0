"""``mPES``: the memristive PES learning rule, as a Nengo learning rule type.

Importing this module registers the rule's builder with Nengo (``memristor_hil.learning.builder``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from nengo.exceptions import ValidationError
from nengo.learning_rules import LearningRuleType
from nengo.params import BoolParam, Default, IntParam, NumberParam, Parameter, equal
from nengo.synapses import Lowpass, SynapseParam

from ..crossbar import Crossbar
from ..powerlaw import PowerLaw, Variability
from .layout import Layout

__all__ = ["DEFAULT_CROSSBAR", "DEFAULT_LEARNING_RATE", "DEFAULT_MODEL", "DEFAULT_REFRESH", "mPES"]

_POLICIES = ("learning_rate", "one", "scaled", "stochastic")
_MASKS = ("filtered", "spikes")

#: The device model of the emulator mPES creates when given no crossbar: the published
#: parameters, with states in single precision. That halves the cost of the power law, the
#: emulator's hot spot, and learning matches double precision (f(x) = x, 30 s, 100 neurons:
#: test MSE 0.0162 in float32 against 0.0165 in float64). Pass ``dtype="float64"`` to change it.
#: Its RESET branch is on (SET pulses are unchanged by it) so the ``learning_rate`` policy
#: can refresh saturated pairs.
DEFAULT_MODEL = PowerLaw(dtype="float32", reset=True)

#: The default policy's learning rate: Nengo PES's meaning, and the best of PES's 1e-5, 3e-5
#: and 1e-4 on the published tasks with 100 neurons (see docs/learning.md's accuracy table).
DEFAULT_LEARNING_RATE = 1e-5

#: The ``learning_rate`` policy's refresh threshold on the normalised conductance
#: ``g = (1/R - 1/r1) / (1/r0 - 1/r1)``: a pair whose two devices both exceed it is refreshed.
#: With the published model ``g = 3e-6`` is ``R ~ 5.2e7`` ohm, where a SET pulse changes ``g``
#: about 50 times less than at the initial ``1e8`` ohm.
DEFAULT_REFRESH = 3e-6

#: The crossbar a rule without ``crossbar=`` gets: an in-process emulator of its own, sized to
#: the connection's layout and seeded from the connection.
DEFAULT_CROSSBAR = "emulator://"


class _ThresholdParam(Parameter):
    """A non-negative error threshold: a scalar or one entry per post neuron."""

    equatable = True

    def coerce(self, instance: Any, value: Any) -> np.ndarray:
        try:
            array = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"must be a number or a 1-D array of numbers, got {value!r}",
                attr=self.name,
                obj=instance,
            ) from exc
        if array.ndim > 1 or np.any(np.isnan(array)) or np.any(array < 0):
            raise ValidationError(
                "must be a number >= 0 (inf: never pulse), or a 1-D array of them (one per "
                "post neuron)",
                attr=self.name,
                obj=instance,
            )
        array.setflags(write=False)
        return super().coerce(instance, array)

    def hashvalue(self, instance: Any) -> int:
        value = self.__get__(instance, None)
        return hash((value.shape, value.tobytes()))


class _TypedParam(Parameter):
    """A read-only parameter whose value must be one of ``types`` (or None when optional)."""

    equatable = True

    def __init__(self, name: str, types: tuple[type, ...], default: Any, optional: bool) -> None:
        self.types = types
        super().__init__(name, default=default, optional=optional, readonly=True)

    def coerce(self, instance: Any, value: Any) -> Any:
        self.check_type(instance, value, self.types)
        return super().coerce(instance, value)

    def hashvalue(self, instance: Any) -> int:
        value = self.__get__(instance, None)
        try:
            return hash(value)
        except TypeError:
            return id(value)


class mPES(LearningRuleType):  # noqa: N801 - the rule's name in the literature
    r"""Memristive PES: learn a connection's weights on pairs of power-law memristors.

    Each weight is the difference of two devices' normalised conductances,
    :math:`w_{ij} = \gamma\,(g(R^+_{ij}) - g(R^-_{ij}))`. Every timestep the local error
    :math:`e = E \cdot \mathrm{err}` (post encoders ``E``, as Nengo's :class:`nengo.PES`) and the
    filtered presynaptic activity :math:`a` give the PES direction
    :math:`\Delta_{ij} = -e_i a_j`. For each pre neuron with ``round(a_j) > 0`` and each post
    neuron whose :math:`|e_i|` exceeds its threshold, SET pulses go to the positive
    device where :math:`\Delta_{ij} > 0` and to the negative one where
    :math:`\Delta_{ij} < 0`: by default as many as give Nengo PES's expected weight change
    at ``learning_rate`` (``pulses="learning_rate"``), or one per step as published
    (``pulses="one"``). All of a timestep's pulses go to the crossbar in one batch, and
    the weights are recomputed from the resistances the crossbar reads back, so every backend
    (emulator or hardware) learns the same way.

    Parameters
    ----------
    pre_synapse : nengo.synapses.Synapse, optional
        Filter for the presynaptic activities. Default ``Lowpass(0.005)``.
    gain : float, optional
        :math:`\gamma`, the weight of a unit conductance difference. Default: follows from
        the connection. Into neurons (``pre.neurons -> post.neurons``), where Nengo scales
        the weights by the post neurons' gains, 1e3 (as published); with a weight solver,
        whose weights carry the post gains themselves, 1e3 times the post neurons' mean gain
        (about 2e4 for Nengo's default ensembles), so both learn at the same scale.
    error_threshold : float or array_like, optional
        A post neuron's devices are pulsed only where its :math:`|e_i|` is above this
        threshold: one value for all, or one per post neuron. Default 1e-5 (as published).
    pulses : {"learning_rate", "one", "scaled", "stochastic"}, optional
        Pulse-count policy. ``"learning_rate"`` (default): pulse counts from Nengo PES's
        expected weight change at ``learning_rate`` (below), with the pair balance and
        refresh.
        ``"one"`` (the published rule): one pulse per device per pulse interval.
        ``"scaled"`` (the published variant): ``ceil(max_pulses * |Delta| / running max
        |Delta|)`` pulses, at least one. ``"stochastic"``: that count's expected
        value rounded stochastically, so small updates are often 0 pulses and the expected
        change follows PES's ``e_i * a_j`` (seeded by ``seed``, so runs and rebuilds reproduce).
    max_pulses : int, optional
        The most pulses per device per pulse interval with ``"scaled"``, ``"stochastic"``
        and ``"learning_rate"``. Default 100.
    learning_rate : float, optional
        Nengo PES's learning rate, for the ``"learning_rate"`` policy: each selected device
        gets the pulse count whose expected weight change is PES's ``learning_rate * dt /
        n_pre * |e_i| a_j`` on the same connection, from the device's current state (the
        nominal model's change per pulse at the resistance read back, scaled by the ratio of
        measured to nominal change this device has shown in its read-backs), rounded
        stochastically (so an expected fraction of a pulse is kept on average) and capped at
        ``max_pulses``. Default :data:`.DEFAULT_LEARNING_RATE` (1e-5). Giving it with another
        ``pulses`` policy is an error.
    refresh : float or None, optional
        With ``learning_rate``: refresh a pair once both its devices' normalised conductances
        exceed this threshold (default :data:`.DEFAULT_REFRESH`, 3e-6): both get one RESET
        pulse (the model's RESET branch, at minus the SET voltage) and the one that must
        conduct more gets the SET pulses that restore the pair's weight (nominal model,
        scaled by the device's measured response), in one batch of a step that then sends no
        learning pulses (at most one step in 100); counted in the ``pulses`` probe. Only
        where the device model has a RESET branch (``PowerLaw(reset=True)``; the default
        emulator's has); without one (hardware that cannot RESET) pairs are not refreshed and
        the calibrated pulse counts grow as devices saturate. A crossbar without a model of
        its own (hardware, a served emulator) gets RESET pulses only when the user declares
        the branch, with ``model=PowerLaw(reset=True, ...)`` or ``reset=True``
        (``variability=`` alone describes the default emulator, not those devices).
        ``None``: off. Ignored by the other policies (the published rule has no refresh).
    balance : bool, optional
        With ``learning_rate``: the run's first steps (at most
        ``memristor_hil.learning.pairs.BALANCE_STEPS``) send no learning pulses but
        bring every pair towards weight 0, as Nengo's PES starts from zero weights: each step
        the device that conducts less gets the SET pulses that close half the conductance
        difference (nominal model, scaled by the device's measured response, which these
        pulses also calibrate), until pairs are within half a pulse; counted in the
        ``pulses`` probe. Without it the weights start
        where the devices' drawn resistances put them (with 15% spread, about four times the
        weights PES learns for f(x) = x at 100x100) and learning must first undo that.
        Default True. Ignored by the other policies (the published rule starts as drawn).
    mask : {"filtered", "spikes"}, optional
        Which pre neurons count as active: ``"filtered"`` (default, as published): filtered
        activity ``round(a_j) > 0``; ``"spikes"``: the pre neurons that spiked in this step.
    pulse_interval : float or None, optional
        Seconds of simulated time per pulse while learning. Default 0.001: at ``dt = 1 ms``
        exactly one pulse per step, as published; with a smaller ``dt`` some steps apply no
        pulse and with a larger one each step applies several, so learning per simulated
        second does not depend on ``dt``. ``None``: one pulse every step whatever ``dt``.
    voltage : float or None, optional
        SET pulse voltage in volt. Default: the model's ``v_ref`` (0.1 V).
    pulse_width : float, optional
        SET pulse width in seconds. Default 1e-6.
    model : PowerLaw, optional
        Device model: for the default emulator's devices and for the resistance-to-conductance
        map (nominal ``r0``, ``r1``). Default: the crossbar's own model if it has one, else
        :data:`.DEFAULT_MODEL` (``PowerLaw(dtype="float32")``).
    variability : float or Variability, optional
        Device-to-device spread of the default emulator (shorthand for
        ``model=PowerLaw(variability=...)``).
    seed : int, optional
        Seed of the default emulator's devices and of the ``"stochastic"`` policy's random
        stream. Default: the connection's build seed.
    crossbar : str or Crossbar, optional
        Where the devices live: a URL (``"emulator://?seed=1"``, ``"serial://..."``,
        ``"visa://..."``) or an open :class:`~memristor_hil.Crossbar`. Default: an in-process
        :class:`~memristor_hil.emulator.EmulatedCrossbar` sized to the layout. Connections
        of one model given the same URL or object share that crossbar; their layouts must not
        overlap.
    layout : Layout, optional
        Placement of the positive and negative device blocks. Default ``Layout()``: positive
        block at the top-left, negative block beside it.
    **model_fields
        Any other :class:`.PowerLaw` field (``r0``, ``r1``, ``a``, ``r_init``, ``noise``,
        ``dtype``, ...), applied on top of ``model``.

    Notes
    -----
    The connection's weights are defined by its devices: the transform's (or solver's) values
    are replaced, at build time, by the weights the devices read. Use
    ``nengo.Connection(pre.neurons, post.neurons, transform=np.zeros((n_post, n_pre)))`` or
    ``nengo.Connection(pre, post, solver=nengo.solvers.LstsqL2(weights=True))``. mPES must be
    the only learning rule on its connection.

    Probeable: ``"error"`` (the error input), ``"local_error"`` (per post neuron),
    ``"activities"`` (filtered pre activities), ``"pos_resistances"`` and
    ``"neg_resistances"`` (ohm, ``n_post x n_pre``), ``"weights"`` and ``"pulses"`` (pulses
    sent in the step). A step's batch is read back while Nengo runs its other operators and
    stored in the next step, before the weights are read (so the device round trip of a
    serial or VISA crossbar overlaps the simulation): the resistances and weights probed in
    step ``t`` are those after the batch of step ``t - 1``, as Nengo's PES weight probe in
    step ``t`` shows its updates up to step ``t - 1``.

    Examples
    --------
    >>> import nengo, numpy as np
    >>> from memristor_hil import mPES
    >>> with nengo.Network(seed=0) as net:
    ...     pre, post = nengo.Ensemble(50, 1), nengo.Ensemble(50, 1)
    ...     conn = nengo.Connection(pre.neurons, post.neurons, transform=np.zeros((50, 50)),
    ...                             learning_rule_type=mPES(variability=0.15))
    """

    modifies = "weights"
    probeable = (
        "error",
        "local_error",
        "activities",
        "pos_resistances",
        "neg_resistances",
        "weights",
        "pulses",
    )

    pre_synapse = SynapseParam("pre_synapse", default=Lowpass(tau=0.005), readonly=True)
    gain = NumberParam("gain", low=0, low_open=True, default=None, optional=True, readonly=True)
    error_threshold = _ThresholdParam("error_threshold", default=1e-5, readonly=True)
    pulses = Parameter("pulses", default="learning_rate", readonly=True)
    max_pulses = IntParam("max_pulses", low=1, default=100, readonly=True)
    pulse_interval = NumberParam(
        "pulse_interval", low=0, low_open=True, default=0.001, optional=True, readonly=True
    )
    voltage = NumberParam("voltage", default=None, optional=True, readonly=True)
    pulse_width = NumberParam("pulse_width", low=0, low_open=True, default=1e-6, readonly=True)
    learning_rate = NumberParam(
        "learning_rate", low=0, low_open=True, default=DEFAULT_LEARNING_RATE, readonly=True
    )
    mask = Parameter("mask", default="filtered", readonly=True)
    refresh = NumberParam(
        "refresh", low=0, low_open=True, default=DEFAULT_REFRESH, optional=True, readonly=True
    )
    balance = BoolParam("balance", default=True, readonly=True)
    model = _TypedParam("model", (PowerLaw,), default=None, optional=True)
    seed = IntParam("seed", low=0, default=None, optional=True, readonly=True)
    crossbar = _TypedParam("crossbar", (str, Crossbar), default=None, optional=True)
    layout = _TypedParam("layout", (Layout,), default=Layout(), optional=False)

    def __init__(
        self,
        pre_synapse: Any = Default,
        gain: float = Default,
        error_threshold: Any = Default,
        pulses: str = Default,
        max_pulses: int = Default,
        pulse_interval: float | None = Default,
        voltage: float | None = Default,
        pulse_width: float = Default,
        model: PowerLaw | None = Default,
        variability: float | Variability | None = None,
        seed: int | None = Default,
        crossbar: str | Crossbar | None = Default,
        layout: Layout = Default,
        learning_rate: float | None = Default,
        mask: str = Default,
        refresh: float | None = Default,
        balance: bool = Default,
        **model_fields: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, size_in="post_state")
        if pulses is not Default and pulses not in _POLICIES:
            raise ValidationError(
                f"must be one of {_POLICIES}, got {pulses!r}", attr="pulses", obj=self
            )
        if mask is not Default and mask not in _MASKS:
            raise ValidationError(f"must be one of {_MASKS}, got {mask!r}", attr="mask", obj=self)
        if pulses not in (Default, "learning_rate") and learning_rate is not Default:
            raise ValidationError(
                "give either learning_rate (pulse counts from PES's expected change) or a "
                "pulses policy, not both",
                attr="learning_rate",
                obj=self,
            )
        self.pre_synapse = pre_synapse
        self.gain = gain
        self.error_threshold = error_threshold
        self.pulses = pulses
        self.max_pulses = max_pulses
        self.pulse_interval = pulse_interval
        self.voltage = voltage
        self.pulse_width = pulse_width
        self.model = self._model(model, variability, model_fields)
        # whether the user says the devices have a RESET branch (a model of theirs, or reset=),
        # as opposed to the default model's, which only describes the default emulator
        given = model if isinstance(model, PowerLaw) else None
        self.declares_reset = bool(model_fields.get("reset", given is not None and given.reset))
        self.seed = seed
        self.crossbar = crossbar
        self.layout = layout
        self.mask = mask
        self.refresh = refresh
        self.balance = balance

    def _model(self, model: Any, variability: Any, fields: dict[str, Any]) -> PowerLaw | None | Any:
        """``model`` with ``variability`` and any PowerLaw fields applied on top."""
        if variability is not None:
            fields = {**fields, "variability": variability}
        if not fields:
            return model
        known = {f.name for f in dataclasses.fields(PowerLaw)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(
                f"mPES got unknown arguments {unknown}; device-model fields are {sorted(known)}"
            )
        base = DEFAULT_MODEL if model is Default or model is None else model
        if not isinstance(base, PowerLaw):
            raise ValidationError(
                f"must be a PowerLaw, got {type(base).__name__}", attr="model", obj=self
            )
        try:
            return base.replace(**fields)
        except ValueError as exc:
            raise ValidationError(str(exc), attr="model", obj=self) from None

    @property
    def _argreprs(self) -> list[str]:
        """The arguments that differ from their defaults, for ``repr``."""
        out = []
        for name in self._param_order:
            value = getattr(self, name)
            if not equal(value, getattr(type(self), name).default):
                out.append(f"{name}={value!r}")
        return out

    _param_order = (
        "pre_synapse",
        "gain",
        "error_threshold",
        "pulses",
        "max_pulses",
        "pulse_interval",
        "voltage",
        "pulse_width",
        "model",
        "seed",
        "crossbar",
        "layout",
        "learning_rate",
        "mask",
        "refresh",
        "balance",
    )
