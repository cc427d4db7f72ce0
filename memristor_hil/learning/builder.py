"""Nengo builder for :class:`memristor_hil.mPES <.mPES>` (registered when ``memristor_hil.learning``
loads, as importing ``nengo`` registers Nengo's own builders).

Everything that can be wrong with a connection is checked here, at build time, before any
device is pulsed: the connection type, its size against the crossbar, overlaps with other
connections on a shared crossbar, the threshold's shape, and the pulse against the crossbar's
safety limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nengo.builder import Builder
from nengo.builder.learning_rules import build_or_passthrough, get_post_ens
from nengo.builder.operator import Copy, DotInc, Reset
from nengo.builder.signal import Signal
from nengo.ensemble import Ensemble, Neurons
from nengo.exceptions import BuildError

from ..backends import open_crossbar
from ..crossbar import Crossbar
from ..errors import CrossbarError
from ..powerlaw import PowerLaw
from . import kernels
from .crossbars import CrossbarUse, crossbar_uses
from .layout import Block
from .nengo_internals import remove_weight_increment, set_initial_value
from .operator import ConnectionPart, ConnectionSignals, Refresh, SimmPES, SimmPESCollect
from .rule import DEFAULT_CROSSBAR, DEFAULT_MODEL, mPES

__all__ = ["BuiltmPES", "build_mpes"]


@dataclass(frozen=True)
class BuiltmPES:
    """What ``sim.data[conn.learning_rule]`` holds for an mPES rule.

    Attributes
    ----------
    crossbar : Crossbar
        The crossbar holding the connection's devices.
    positive, negative : Block
        The cells of the positive and negative devices (post neurons along rows).
    model : PowerLaw
        The model whose nominal ``r0``, ``r1`` map resistances to conductances.
    gain : float
        The weight of a unit conductance difference: the rule's ``gain``, or the one that
        followed from the connection.
    """

    crossbar: Crossbar
    positive: Block
    negative: Block
    model: PowerLaw
    gain: float = 1e3


def _check_connection(conn: Any) -> None:
    """Refuse connections mPES cannot learn on, with the reason."""
    if isinstance(conn.pre_obj, Ensemble) and not conn.solver.weights:
        raise BuildError(
            f"{conn}: mPES learns a full weight matrix; a decoded connection has none. Use "
            "Connection(pre.neurons, post.neurons, transform=...) or "
            "solver=LstsqL2(weights=True)."
        )
    if not isinstance(conn.pre_obj, (Ensemble, Neurons)) or not isinstance(
        conn.post_obj, (Ensemble, Neurons)
    ):
        raise BuildError(
            f"{conn}: mPES needs neurons (or an ensemble with a weight solver) on both ends"
        )
    if not conn._to_neurons:
        raise BuildError(f"{conn}: mPES needs a connection into neurons (a full weight matrix)")
    if conn.pre_slice != slice(None) or conn.post_slice != slice(None):
        raise BuildError(
            f"{conn}: mPES does not support sliced or indexed connections; connect whole "
            "neuron populations"
        )
    rules = conn.learning_rule
    if isinstance(rules, (list, tuple, dict)) and len(rules) > 1:
        raise BuildError(
            f"{conn}: mPES must be the only learning rule on its connection (its devices "
            "define the weights)"
        )


def _crossbar_use(model: Any, rule_type: mPES, extent: tuple[int, int], seed: int) -> CrossbarUse:
    """The crossbar this rule's devices live on, opened or shared as the rule asks."""
    uses = crossbar_uses(model)
    target = rule_type.crossbar
    if target is None:  # a crossbar of its own, sized to the layout
        xbar = _open_url(
            DEFAULT_CROSSBAR,
            extent,
            seed=seed,
            model=rule_type.model or DEFAULT_MODEL,
            record=False,
        )
        use = CrossbarUse(xbar, owned=True)
        uses[("default", id(use))] = use
        return use
    key = target if isinstance(target, str) else id(target)
    use = uses.get(key)
    if use is not None:
        return use
    if isinstance(target, str):
        xbar = _open_url(target, extent)
        use = CrossbarUse(xbar, owned=True)
    else:
        if target.closed:
            raise BuildError(f"mPES(crossbar={target!r}): the crossbar is closed")
        use = CrossbarUse(target, owned=False)
    uses[key] = use
    return use


def _open_url(url: str, extent: tuple[int, int], **options: Any) -> Crossbar:
    """Open ``url``; a backend whose shape is the caller's choice gets the layout's extent."""
    try:
        return open_crossbar(url, default_shape=extent, **options)
    except (CrossbarError, ValueError, OSError) as exc:
        raise BuildError(f"mPES(crossbar={url!r}): cannot open the crossbar: {exc}") from exc


def _row_order(pos: Block, neg: Block) -> int:
    """The batch row order that keeps cells ascending row-major for this layout."""
    if pos.row == neg.row:
        return kernels.ORDER_NATURAL
    if pos.row_stop <= neg.row:
        return kernels.ORDER_POS_FIRST
    if neg.row_stop <= pos.row:
        return kernels.ORDER_NEG_FIRST
    return kernels.ORDER_NATURAL  # correct, just not the emulator's fastest path


def _conductance(model: PowerLaw, resistance: np.ndarray) -> np.ndarray:
    """``g(R)`` with the model's nominal r0, r1, in double precision whatever its dtype."""
    resistance = resistance.astype(np.float64)
    return (1.0 / resistance - 1.0 / model.r1) / (1.0 / model.r0 - 1.0 / model.r1)


#: :math:`\gamma` of a connection into neurons (the published value).
_NEURON_GAIN = 1e3


def _gain(model: Any, mpes: mPES, conn: Any) -> float:
    """The rule's ``gain``, else the one that follows from the connection.

    Into neurons, Nengo multiplies the weights by the post neurons' gains: the published 1e3.
    A weight-solver connection's weights carry those gains themselves (Nengo does not apply
    them again), so the same conductances must weigh the post neurons' mean gain more.
    """
    if mpes.gain is not None:
        return float(mpes.gain)
    if isinstance(conn.post_obj, Neurons):
        return _NEURON_GAIN
    gains = model.params[get_post_ens(conn)].gain
    return _NEURON_GAIN * float(np.mean(np.abs(gains)))


def _refresh(mpes: mPES, xbar: Crossbar, device_model: PowerLaw, voltage: float) -> Refresh | None:
    """The pair refresh of a ``learning_rate`` rule, or None (off, or no RESET branch)."""
    if mpes.pulses != "learning_rate" or mpes.refresh is None:
        return None
    # what the crossbar's devices do: its own model, else only what the user says of them (a
    # crossbar without a model, hardware or a served emulator, gets no RESET pulses unless the
    # user's model or reset=True declares a RESET branch; variability= alone does not)
    if xbar.model is not None:
        devices = xbar.model
    elif mpes.declares_reset:
        devices = mpes.model
    else:
        return None
    if not devices.reset:
        return None
    # g > threshold  <=>  R < 1 / (threshold * (1/r0 - 1/r1) + 1/r1), nominal r0, r1
    inv_r1 = 1.0 / device_model.r1
    r_limit = 1.0 / (float(mpes.refresh) * (1.0 / device_model.r0 - inv_r1) + inv_r1)
    try:
        xbar.limits.check_voltage(-voltage)
    except CrossbarError as exc:
        raise BuildError(f"mPES refresh: the RESET pulse cannot be sent: {exc}") from exc
    return Refresh(
        r_limit=r_limit,
        voltage=-voltage,
        r3=float(devices.reset_r3),
        exponent=float(devices.reset_exponent),
    )


def _builds_for_nengo_dl(model: Any) -> bool:
    """True when ``model`` is NengoDL's (``nengo_dl.Simulator`` builds into its own subclass
    of Nengo's ``Model``, with Nengo's builders, this one included)."""
    return any(cls.__module__.partition(".")[0] == "nengo_dl" for cls in type(model).__mro__)


def _lag_for_nengo_dl(model: Any, pos: Signal, neg: Signal) -> tuple[Signal, Signal]:
    """NengoDL's one-step lag of the probed resistances and weights; the devices' signals.

    ``nengo.Simulator`` gets the lag from :class:`~.SimmPESCollect`, which ``sets`` the
    weights in the next step. NengoDL refuses that operator (a learned connection's weights
    are a NengoDL parameter, which no operator may set), so in its models ``SimmPES`` keeps
    the devices in signals of its own (returned) and writes the weights' change into Nengo's
    ``delta`` (:meth:`~.SimmPES.add_weight_change`), and, in the next step, before the
    weights are read, two ``Copy`` operators copy those resistances into the probed ``pos``
    and ``neg`` and Nengo's own ``Copy(delta, weights, inc=True)`` (kept, as for Nengo's PES)
    adds the change to the weights: the probes of step ``t`` show the devices after the
    batch of step ``t - 1`` in both simulators.
    """
    staged = []
    for sig in (pos, neg):
        stage = Signal(sig.initial_value, name=f"{sig.name} (next step)")
        model.add_op(Copy(stage, sig, tag=f"{sig.name} of the previous step"))
        staged.append(stage)
    return staged[0], staged[1]


@Builder.register(mPES)
def build_mpes(model: Any, mpes: mPES, rule: Any) -> None:
    """Build an :class:`~.mPES` rule into a model.

    Checks the connection and the devices' placement, reads the devices' initial
    resistances, makes the connection's weights ``gain * (g(R+) - g(R-))`` of them, and adds
    the connection to its crossbar's ``SimmPES`` operator
    (one per crossbar, so a shared crossbar still gets one batch per step).

    Parameters
    ----------
    model : nengo.builder.Model
        The model to build into.
    mpes : mPES
        The learning rule type.
    rule : nengo.connection.LearningRule
        The learning rule object of the connection.

    Notes
    -----
    Sets ``model.params[rule]`` to a :class:`BuiltmPES`.
    """
    conn = rule.connection
    _check_connection(conn)
    for_dl = _builds_for_nengo_dl(model)
    if for_dl:  # building for nengo_dl.Simulator: register our op builder
        from . import dl_builders  # noqa: F401  (imports TensorFlow; NumPy users never get here)
    weights = model.sig[conn]["weights"]
    if weights.ndim != 2:
        raise BuildError(
            f"{conn}: mPES needs a 2-D weight matrix; give the connection "
            "transform=np.zeros((post.n_neurons, pre.n_neurons))"
        )
    n_post, n_pre = weights.shape

    threshold = np.atleast_1d(mpes.error_threshold).astype(np.float64)
    if threshold.shape not in ((1,), (n_post,)):
        raise BuildError(
            f"{conn}: mPES error_threshold has {threshold.size} entries; give one value or "
            f"one per post neuron ({n_post})"
        )

    pos, neg = mpes.layout.blocks(n_pre, n_post)
    if pos.overlaps(neg):
        raise BuildError(f"{conn}: mPES layout puts positive {pos} over negative {neg}")
    seed = mpes.seed if mpes.seed is not None else model.seeds[conn]
    use = _crossbar_use(model, mpes, mpes.layout.extent(n_pre, n_post), seed)
    xbar = use.crossbar
    if xbar.closed:
        raise BuildError(f"{conn}: mPES crossbar {xbar!r} is closed")
    use.claim(pos, f"{conn} (positive devices)")
    use.claim(neg, f"{conn} (negative devices)")

    device_model = mpes.model or xbar.model or DEFAULT_MODEL
    voltage = device_model.v_ref if mpes.voltage is None else float(mpes.voltage)
    try:
        xbar.limits.check_voltage(voltage)
        xbar.limits.check_width(float(mpes.pulse_width))
        if voltage <= 0:
            raise CrossbarError(f"mPES pulses must be SET pulses (voltage > 0), got {voltage}")
        uses_levels = mpes.pulses != "one"
        if uses_levels and mpes.max_pulses > xbar.limits.max_pulses:
            raise CrossbarError(
                f"max_pulses={mpes.max_pulses} exceeds the crossbar's limit of "
                f"{xbar.limits.max_pulses} pulses per cell per batch"
            )
        r_pos = xbar.read_region(pos.row, pos.col, pos.nrows, pos.ncols)
        r_neg = xbar.read_region(neg.row, neg.col, neg.nrows, neg.ncols)
    except CrossbarError as exc:
        raise BuildError(f"{conn}: mPES cannot use {xbar!r}: {exc}") from exc

    # The signals hold what the crossbar returns, in its precision (float32 from a float32
    # emulator): converting would add nothing but memory traffic to the store kernel.
    read_dtype = np.float32 if np.asarray(r_pos).dtype == np.float32 else np.float64
    r_pos = np.asarray(r_pos, dtype=read_dtype)
    r_neg = np.asarray(r_neg, dtype=read_dtype)
    gain = _gain(model, mpes, conn)
    initial_weights = gain * (_conductance(device_model, r_pos) - _conductance(device_model, r_neg))
    set_initial_value(weights, initial_weights)
    if not for_dl:  # NengoDL keeps it: its weights lag one step through it (_lag_for_nengo_dl)
        remove_weight_increment(model, rule)

    # Error input (the error connection attaches here) and its projection per post neuron.
    error = Signal(shape=rule.size_in, name="mPES:error")
    model.add_op(Reset(error))
    model.sig[rule]["in"] = error
    encoders = model.sig[get_post_ens(conn)]["encoders"]
    local_error = Signal(shape=(n_post,), name="mPES:local_error")
    model.add_op(Reset(local_error))
    model.add_op(DotInc(encoders, error, local_error, tag="mPES:encode"))

    pre_out = model.sig[conn.pre_obj]["out"]
    acts = build_or_passthrough(model, mpes.pre_synapse, pre_out)
    mask_source = pre_out if mpes.mask == "spikes" else acts
    pos_sig = Signal(r_pos, name="mPES:pos_resistances")
    neg_sig = Signal(r_neg, name="mPES:neg_resistances")
    threshold_sig = Signal(threshold, name="mPES:threshold", readonly=True)
    pulses = Signal(shape=(1,), name="mPES:pulses")
    state = Signal(shape=(2,), name="mPES:state")
    width = float(mpes.pulse_width)
    op = use.operator
    if op is None:  # the first connection on this crossbar: its operator
        op = use.operator = SimmPES(use, voltage, width, tag=f"mPES on {xbar.identity}")
        model.add_op(op)
        if not for_dl:
            # stores each step's read-back in the next step: the round trip overlaps Nengo's
            # work (NengoDL gets the same lag from _lag_for_nengo_dl)
            model.add_op(SimmPESCollect(op, tag=f"mPES read-back of {xbar.identity}"))
    elif (op.voltage, op.width) != (voltage, width):
        raise BuildError(
            f"{conn}: connections sharing the crossbar {xbar.identity!r} share its one batch "
            f"per step, so they need the same pulse: the first uses {op.voltage} V, "
            f"{op.width} s; this one asks for {voltage} V, {width} s"
        )
    if op.collector is not None:
        # the read-back is collected as late as it can be: once the pre neurons' output, which
        # the weights multiply, is computed (it reads it), just before the weights are read
        op.collector.wait_for(model.sig[conn]["in"])
    refresh = _refresh(mpes, xbar, device_model, voltage)
    part = ConnectionPart(
        origins=(pos.row, pos.col, neg.row, neg.col),
        order=_row_order(pos, neg),
        gain=gain,
        conductance_scale=1.0 / (1.0 / device_model.r0 - 1.0 / device_model.r1),
        pulse_interval=mpes.pulse_interval,
        policy=mpes.pulses,
        levels=mpes.max_pulses,
        seed=int(seed),
        mask_threshold=0.0 if mpes.mask == "spikes" else 0.5,
        learning_rate=mpes.learning_rate,
        # the exponent at the SET voltage used (a(V)), so the nominal change per pulse is right
        nominal=(
            float(device_model.r0),
            float(device_model.r1),
            float(device_model.exponent(voltage)),
        ),
        refresh=refresh,
        balance=bool(mpes.balance),
        max_count=int(xbar.limits.max_pulses),
    )
    pos_devices, neg_devices = (
        _lag_for_nengo_dl(model, pos_sig, neg_sig) if for_dl else (pos_sig, neg_sig)
    )
    signals = ConnectionSignals(
        pre_filtered=acts,
        local_error=local_error,
        threshold=threshold_sig,
        mask_source=mask_source,
        pos_resistances=pos_devices,
        neg_resistances=neg_devices,
        weights=weights,
        pulses=pulses,
        state=state,
    )
    op.add_connection(part, signals)
    if for_dl:
        op.add_weight_change(model.sig[rule]["delta"])

    model.sig[rule]["error"] = error
    model.sig[rule]["local_error"] = local_error
    model.sig[rule]["activities"] = acts
    model.sig[rule]["pos_resistances"] = pos_sig
    model.sig[rule]["neg_resistances"] = neg_sig
    model.sig[rule]["weights"] = weights
    model.sig[rule]["pulses"] = pulses
    model.params[rule] = BuiltmPES(xbar, pos, neg, device_model, gain)
