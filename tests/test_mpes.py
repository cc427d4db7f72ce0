"""mPES: the memristive learning rule, tested in the manner of Nengo's own learning-rule tests.

Every test runs against a real EmulatedCrossbar; ``CountingCrossbar`` is a thin wrapper that
records the calls reaching it.
"""

from __future__ import annotations

import subprocess
import sys

import nengo
import numpy as np
import pytest
from memristor_hil.emulator import EmulatedCrossbar
from nengo.exceptions import BuildError, SimulationError, ValidationError

from memristor_hil import Crossbar, Layout, PowerLaw, PulseBatch, mPES


class CountingCrossbar(Crossbar):
    """Delegates to a real EmulatedCrossbar and records every batch that reaches it."""

    def __init__(self, inner: EmulatedCrossbar, restorable: bool = True) -> None:
        super().__init__(inner.shape, limits=inner.limits, identity=f"counting:{inner.identity}")
        self.inner = inner
        self.restorable = restorable
        self.batches: list[PulseBatch] = []
        self.reads = 0

    # the optional capabilities, declared as the Crossbar interface asks
    @property
    def model(self):
        return self.inner.model

    @property
    def can_restore(self):
        return self.restorable

    def snapshot(self):
        return self.inner.snapshot() if self.restorable else super().snapshot()

    def restore(self, snapshot):
        return self.inner.restore(snapshot) if self.restorable else super().restore(snapshot)

    def _apply(self, batch, cells, read_back):
        # the operator reuses its buffers, so keep a copy of what was sent
        self.batches.append(
            PulseBatch(
                batch.rows.copy(),
                batch.cols.copy(),
                batch.pulses.copy(),
                batch.voltage if batch.uniform_voltage else batch.voltage.copy(),
            )
        )
        return self.inner.apply(batch, read_back=read_back)

    def _read(self, flat):
        self.reads += 1
        rows, cols = np.divmod(flat, self.shape[1])
        return self.inner.read(rows, cols)


def channel_net(
    rule_type, n_pre=40, n_post=40, seed=1, function=lambda x: x, error=True, weight_solver=False
):
    """stim -> pre -> post learned; error = post - f(stim)."""
    with nengo.Network(seed=seed) as net:
        net.stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        net.pre = nengo.Ensemble(n_pre, 1)
        net.post = nengo.Ensemble(n_post, 1)
        nengo.Connection(net.stim, net.pre)
        if weight_solver:
            net.conn = nengo.Connection(
                net.pre,
                net.post,
                solver=nengo.solvers.LstsqL2(weights=True),
                learning_rule_type=rule_type,
            )
        else:
            net.conn = nengo.Connection(
                net.pre.neurons,
                net.post.neurons,
                transform=np.zeros((n_post, n_pre)),
                learning_rule_type=rule_type,
            )
        if error:
            net.err = nengo.Node(size_in=1)
            nengo.Connection(net.post, net.err, synapse=0.01)
            nengo.Connection(net.stim, net.err, function=function, transform=-1, synapse=0.01)
            nengo.Connection(net.err, net.conn.learning_rule)
        net.p_post = nengo.Probe(net.post, synapse=0.02)
        net.p_target = nengo.Probe(net.stim, synapse=0.02)
        net.p_weights = nengo.Probe(net.conn, "weights", sample_every=0.01)
    return net


def late_mse(sim, net, fraction=0.25):
    n = int(len(sim.trange()) * fraction)
    return float(np.mean((sim.data[net.p_post][-n:] - sim.data[net.p_target][-n:]) ** 2))


# ---------------------------------------------------------------------------- learning
@pytest.mark.parametrize("weight_solver", [False, True])
def test_learns_communication_channel(weight_solver):
    # the published rule, with the gain that follows from the connection: a weight-solver
    # connection bypasses the post neurons' gains, so its devices weigh more
    net = channel_net(mPES(pulses="one"), weight_solver=weight_solver)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(3.0)
        end = late_mse(sim, net)
        untrained = float(np.mean(sim.data[net.p_target] ** 2))  # the error of a zero output
    assert end < 0.03, f"mean squared error over the last quarter {end:.4f}"
    assert end < untrained / 15


def test_learns_x_squared_close_to_pes():
    results = {}
    for name, rule in (("mpes", mPES()), ("pes", nengo.PES())):
        net = channel_net(rule, n_pre=60, n_post=60, function=lambda x: x**2)
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(4.0)
        results[name] = late_mse(sim, net)
    assert results["mpes"] < 2 * results["pes"] + 0.005, results


def test_weights_change_only_where_pre_active():
    net = channel_net(mPES())
    silent = np.arange(10)
    with net:
        nengo.Connection(
            nengo.Node([-20.0]), net.pre.neurons[silent], transform=np.ones((10, 1)), synapse=None
        )
        p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances")
        p_neg = nengo.Probe(net.conn.learning_rule, "neg_resistances")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.5)
    weights = sim.data[net.p_weights]
    for data in (weights, sim.data[p_pos], sim.data[p_neg]):
        assert np.array_equal(data[0][:, silent], data[-1][:, silent])
    active = np.setdiff1d(np.arange(40), silent)
    assert np.count_nonzero(weights[-1][:, active] != weights[0][:, active]) > 0.5 * 40 * 30


def test_per_post_neuron_threshold():
    threshold = np.zeros(40)
    frozen = np.arange(0, 40, 2)
    threshold[frozen] = np.inf
    net = channel_net(mPES(error_threshold=threshold))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.5)
    weights = sim.data[net.p_weights]
    assert np.array_equal(weights[0][frozen], weights[-1][frozen])
    learning = np.setdiff1d(np.arange(40), frozen)
    assert np.all(np.any(weights[0][learning] != weights[-1][learning], axis=1))


def test_scaled_pulse_policy_pulses_more_and_learns():
    totals = {}
    for policy in ("one", "scaled"):
        net = channel_net(mPES(pulses=policy, max_pulses=5))
        with net:
            p = nengo.Probe(net.conn.learning_rule, "pulses")
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(2.0)
        totals[policy] = sim.data[p].sum()
        assert late_mse(sim, net) < 0.05
    assert totals["one"] < totals["scaled"] <= 5 * totals["one"]


def test_stochastic_pulse_policy_skips_small_updates_reproducibly():
    net = channel_net(mPES(pulses="stochastic", max_pulses=10))
    with net:
        p = nengo.Probe(net.conn.learning_rule, "pulses")
        p_act = nengo.Probe(net.conn.learning_rule, "activities")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(2.0)
        first = sim.data[p].copy(), sim.data[net.p_weights].copy()
        mse = late_mse(sim, net)
        active = (sim.data[p_act] > 0.5).sum(axis=1)
        sim.reset()
        sim.run(2.0)
        second = sim.data[p], sim.data[net.p_weights]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert mse < 0.05
    # far fewer pulses than one per active synapse and pulsed post neuron
    assert first[0].sum() < 0.5 * 40 * active.sum()


def test_stochastic_simulators_stepped_in_turn_reproduce_their_separate_runs():
    """Each operator draws from its own generator: interleaving two simulators in one thread
    changes neither run."""

    nets = []
    for seed in (1, 2):
        net = channel_net(mPES(pulses="stochastic", max_pulses=10), seed=seed)
        with net:
            net.p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
        nets.append(net)
    alone = []
    for net in nets:
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(300)
            alone.append((sim.data[net.p_pulses].copy(), sim.data[net.p_weights].copy()))
    sims = [nengo.Simulator(net, progress_bar=False) for net in nets]
    try:
        for _ in range(300):
            for sim in sims:
                sim.step()
        together = [
            (sim.data[net.p_pulses], sim.data[net.p_weights])
            for sim, net in zip(sims, nets, strict=True)
        ]
    finally:
        for sim in sims:
            sim.close()
    assert alone[0][0].sum() > 0 and not np.array_equal(alone[0][0], alone[1][0])
    for (p_alone, w_alone), (p_both, w_both) in zip(alone, together, strict=True):
        assert np.array_equal(p_alone, p_both)
        assert np.array_equal(w_alone, w_both)


def test_a_crossbar_mpes_opened_closes_with_the_simulator():
    net = channel_net(mPES(crossbar="emulator://?seed=3"))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.01)
        xbar = sim.data[net.conn.learning_rule].crossbar
        assert not xbar.closed and xbar.shape == (40, 80)  # sized to the connection
    assert xbar.closed


def test_the_default_crossbar_is_an_emulator_opened_by_url_and_closed_with_the_simulator():
    net = channel_net(mPES())
    with nengo.Simulator(net, progress_bar=False) as sim:
        xbar = sim.data[net.conn.learning_rule].crossbar
        assert type(xbar).__name__ == "EmulatedCrossbar" and xbar.model.dtype == "float32"
    assert xbar.closed


def test_nengo_internals_fail_loudly_when_nengo_changes():
    from nengo.builder.signal import Signal

    from memristor_hil.learning.nengo_internals import (
        NengoInternalsChanged,
        remove_weight_increment,
        set_initial_value,
    )

    class Model:  # a built model in which Nengo added no weight-increment copy
        operators: list = []
        sig = {"rule": {"delta": Signal(shape=(2, 2))}}

    with pytest.raises(NengoInternalsChanged, match="nengo .*Copy"):
        remove_weight_increment(Model(), "rule")

    class NewSignal:  # a Signal without the private attribute mPES writes
        shape, dtype = (2,), np.float64

    with pytest.raises(NengoInternalsChanged, match="_initial_value"):
        set_initial_value(NewSignal(), np.zeros(2))


# ---------------------------------------------------------------------------- state, probes
def test_reset_reproduces_run_exactly():
    xbar = EmulatedCrossbar(40, 80, PowerLaw(variability=0.15, noise=0.1), seed=3)
    net = channel_net(mPES(crossbar=xbar))
    with net:
        p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances", sample_every=0.05)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.2)
        sim.run(0.1)
        first = (sim.data[net.p_post].copy(), sim.data[net.p_weights].copy(), sim.data[p_pos])
        devices = xbar.read_all()
        sim.reset()
        sim.run(0.3)
        second = (sim.data[net.p_post], sim.data[net.p_weights], sim.data[p_pos])
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(devices, xbar.read_all())
    assert not np.array_equal(first[1][0], first[1][-1])


def test_reset_on_a_crossbar_that_cannot_restore_raises():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, seed=0), restorable=False)
    net = channel_net(mPES(crossbar=xbar))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.reset()  # nothing pulsed yet: fine
        sim.run(0.05)
        with pytest.raises(SimulationError, match="cannot reset"):
            sim.reset()


def test_probes_and_weights_follow_read_back_resistances():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, PowerLaw(variability=0.15), seed=2))
    rule = mPES(crossbar=xbar, gain=2e3)
    net = channel_net(rule)
    with net:
        lr = net.conn.learning_rule
        probes = {name: nengo.Probe(lr, name) for name in mPES.probeable}
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.299)
        held = xbar.inner.read_all()  # the devices after the batch of step 299
        sim.step()
    steps = len(sim.trange())
    assert sim.data[probes["error"]].shape == (steps, 1)
    assert sim.data[probes["local_error"]].shape == (steps, 40)
    assert sim.data[probes["activities"]].shape == (steps, 40)
    for name in ("pos_resistances", "neg_resistances", "weights"):
        assert sim.data[probes[name]].shape == (steps, 40, 40)
    built = sim.data[net.conn.learning_rule]
    r_pos, r_neg = sim.data[probes["pos_resistances"]][-1], sim.data[probes["neg_resistances"]][-1]
    # the operator's resistances are exactly what the crossbar holds; in step t, after the
    # batch of step t - 1 (SimmPESCollect stores a step's read-back in the next step)
    assert np.array_equal(r_pos, held[:, :40])
    assert np.array_equal(r_neg, held[:, 40:])
    model = built.model
    expected = 2e3 * (model.conductance(r_pos) - model.conductance(r_neg))
    np.testing.assert_allclose(sim.data[probes["weights"]][-1], expected, rtol=1e-9, atol=1e-15)
    # pulses per step: what reached the crossbar, step by step
    pulses = sim.data[probes["pulses"]][:, 0]
    assert np.array_equal(pulses[pulses > 0], [b.total_pulses for b in xbar.batches])


def test_every_backend_learns_identically():
    """The same devices behind another Crossbar class give bit-identical learning."""
    runs = []
    for wrap in (False, True):
        inner = EmulatedCrossbar(40, 80, PowerLaw(variability=0.15, dtype="float32"), seed=11)
        xbar = CountingCrossbar(inner) if wrap else inner
        net = channel_net(mPES(crossbar=xbar))
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(0.4)
        runs.append((sim.data[net.p_weights], sim.data[net.p_post]))
    assert np.array_equal(runs[0][0], runs[1][0])
    # Nengo may order the summations into post differently between builds: last-bit only
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=0, atol=1e-12)
    assert not np.array_equal(runs[0][0][0], runs[0][0][-1])


def test_batch_is_one_ascending_product_set_per_step():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, seed=0))
    net = channel_net(mPES(crossbar=xbar))
    with net:
        p_err = nengo.Probe(net.conn.learning_rule, "local_error")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.2)
    assert len(xbar.batches) > 100
    for batch in xbar.batches:
        flat = batch.rows.astype(np.int64) * 80 + batch.cols
        assert np.all(np.diff(flat) > 0)  # ascending row-major: the emulator's fast path
        for row in np.unique(batch.rows):
            cols = batch.cols[batch.rows == row]
            assert np.all(cols < 40) or np.all(cols >= 40)  # one polarity per post neuron
    assert sim.data[p_err].shape[1] == 40


@pytest.mark.parametrize(
    "layout",
    [
        Layout(3, 7),  # negative block beside the positive one
        Layout(0, 0, neg_row=40, neg_col=5),  # negative block below
        Layout(40, 2, neg_row=0, neg_col=0),  # negative block above
    ],
)
def test_layouts_place_devices_and_learn_the_same(layout):
    """Identical devices (no variability) learn identically wherever the blocks are (the
    published rule: the stochastic policies draw in batch order, which follows the layout)."""
    xbar = CountingCrossbar(EmulatedCrossbar(80, 90, PowerLaw(), seed=0))
    net = channel_net(mPES(crossbar=xbar, layout=layout, pulses="one"))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.3)
        built = sim.data[net.conn.learning_rule]
    reference = channel_net(mPES(model=PowerLaw(), pulses="one"))
    with nengo.Simulator(reference, progress_bar=False) as ref:
        ref.run(0.3)
    assert np.array_equal(sim.data[net.p_weights], ref.data[reference.p_weights])
    pos, neg = built.positive, built.negative
    rows = np.concatenate([b.rows for b in xbar.batches])
    cols = np.concatenate([b.cols for b in xbar.batches])
    in_pos = (rows >= pos.row) & (rows < pos.row_stop) & (cols >= pos.col) & (cols < pos.col_stop)
    in_neg = (rows >= neg.row) & (rows < neg.row_stop) & (cols >= neg.col) & (cols < neg.col_stop)
    assert np.all(in_pos ^ in_neg) and in_pos.any() and in_neg.any()
    for batch in xbar.batches:  # every layout keeps the emulator's ascending fast path
        assert np.all(np.diff(batch.rows.astype(np.int64) * 90 + batch.cols) > 0)


def test_crossbar_url_that_cannot_be_opened_is_a_build_error():
    net = channel_net(mPES(crossbar="nosuchscheme://device"))
    with pytest.raises(BuildError, match="cannot open the crossbar"):
        nengo.Simulator(net, progress_bar=False)


def test_exactly_one_crossbar_call_per_step_and_none_without_error():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, seed=0))
    net = channel_net(mPES(crossbar=xbar))
    with net:
        p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.3)
    pulsed_steps = np.count_nonzero(sim.data[p_pulses])
    assert pulsed_steps > 200
    assert len(xbar.batches) == pulsed_steps

    quiet = CountingCrossbar(EmulatedCrossbar(40, 80, seed=0))
    net = channel_net(mPES(crossbar=quiet), error=False)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.2)
    assert quiet.batches == []


def test_dt_dependence():
    """Learning per simulated second does not depend on dt (one pulse per millisecond)."""
    final = {}
    for dt in (0.001, 0.0005):
        net = channel_net(mPES(), seed=4)
        with nengo.Simulator(net, dt=dt, progress_bar=False) as sim:
            sim.run(0.5)
        final[dt] = sim.data[net.p_weights]
    change = np.abs(final[0.001][-1] - final[0.001][0]).mean()
    diff = np.abs(final[0.001][-1] - final[0.0005][-1]).mean()
    assert change > 0
    assert diff < 0.25 * change, (diff, change)

    # pulse_interval=None is the published per-step rule: halving dt doubles the pulses
    pulses = {}
    for dt in (0.001, 0.0005):
        net = channel_net(mPES(pulse_interval=None, pulses="one"), seed=4)
        with net:
            p = nengo.Probe(net.conn.learning_rule, "pulses")
        with nengo.Simulator(net, dt=dt, progress_bar=False) as sim:
            sim.run(0.2)
        pulses[dt] = sim.data[p].sum()
    assert 1.6 < pulses[0.0005] / pulses[0.001] < 2.4


def test_connections_sharing_a_crossbar_get_one_batch_per_step():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 200, seed=5))
    net = channel_net(mPES(crossbar=xbar, layout=Layout(0, 0)))
    with net:
        post2 = nengo.Ensemble(30, 1)
        conn2 = nengo.Connection(
            net.pre.neurons,
            post2.neurons,
            transform=np.zeros((30, 40)),
            learning_rule_type=mPES(crossbar=xbar, layout=Layout(5, 100)),
        )
        err2 = nengo.Node(size_in=1)
        nengo.Connection(post2, err2, synapse=0.01)
        nengo.Connection(net.stim, err2, transform=-1, synapse=0.01)
        nengo.Connection(err2, conn2.learning_rule)
        p1 = nengo.Probe(net.conn.learning_rule, "pulses")
        p2 = nengo.Probe(conn2.learning_rule, "pulses")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.3)
    per_step = sim.data[p1][:, 0] + sim.data[p2][:, 0]
    assert len(xbar.batches) == np.count_nonzero(per_step) > 200
    assert np.array_equal(per_step[per_step > 0], [b.total_pulses for b in xbar.batches])
    both = (sim.data[p1][:, 0] > 0) & (sim.data[p2][:, 0] > 0)
    assert both.sum() > 100  # steps where one batch carried both connections' pulses
    cols = np.concatenate([b.cols for b in xbar.batches])
    rows = np.concatenate([b.rows for b in xbar.batches])
    second = cols >= 100
    assert np.all((rows[second] >= 5) & (rows[second] < 35))


def test_shared_crossbar_needs_one_pulse_shape():
    xbar = EmulatedCrossbar(40, 200, seed=5)
    net = channel_net(mPES(crossbar=xbar))
    with net:
        nengo.Connection(
            net.pre.neurons,
            nengo.Ensemble(30, 1).neurons,
            transform=np.zeros((30, 40)),
            learning_rule_type=mPES(crossbar=xbar, layout=Layout(0, 100), pulse_width=2e-6),
        )
    with pytest.raises(BuildError, match="same pulse"):
        nengo.Simulator(net, progress_bar=False)


def test_two_learned_connections_on_one_shared_crossbar():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 160, seed=5))
    with nengo.Network(seed=2) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre = nengo.Ensemble(40, 1)
        nengo.Connection(stim, pre)
        probes, conns = [], []
        for k, (fn, layout) in enumerate(
            ((lambda x: x, Layout(0, 0)), (lambda x: -x, Layout(0, 80)))
        ):
            post = nengo.Ensemble(40, 1)
            conn = nengo.Connection(
                pre.neurons,
                post.neurons,
                transform=np.zeros((40, 40)),
                learning_rule_type=mPES(crossbar=xbar, layout=layout, seed=k),
            )
            err = nengo.Node(size_in=1)
            nengo.Connection(post, err, synapse=0.01)
            nengo.Connection(stim, err, function=fn, transform=-1, synapse=0.01)
            nengo.Connection(err, conn.learning_rule)
            probes.append((nengo.Probe(post, synapse=0.02), fn))
            conns.append(conn)
        p_stim = nengo.Probe(stim, synapse=0.02)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(2.5)
    n = len(sim.trange()) // 4
    for probe, fn in probes:
        mse = np.mean((sim.data[probe][-n:] - fn(sim.data[p_stim][-n:])) ** 2)
        assert mse < 0.05
    blocks = [sim.data[c.learning_rule] for c in conns]
    assert blocks[0].crossbar is blocks[1].crossbar is xbar
    assert (blocks[1].positive.col, blocks[1].negative.col) == (80, 120)


def test_two_learned_connections_with_their_own_emulators():
    net = channel_net(mPES(seed=1))
    with net:
        post2 = nengo.Ensemble(30, 1)
        conn2 = nengo.Connection(
            net.pre.neurons,
            post2.neurons,
            transform=np.zeros((30, 40)),
            learning_rule_type=mPES(crossbar="emulator://?seed=7&sigma=0.1"),
        )
        err2 = nengo.Node(size_in=1)
        nengo.Connection(post2, err2, synapse=0.01)
        nengo.Connection(net.stim, err2, transform=-1, synapse=0.01)
        nengo.Connection(err2, conn2.learning_rule)
        p2 = nengo.Probe(post2, synapse=0.02)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(2.5)
        built1, built2 = sim.data[net.conn.learning_rule], sim.data[conn2.learning_rule]
    assert built1.crossbar is not built2.crossbar
    assert built2.crossbar.shape == (30, 80)  # an emulator:// URL without a size fits the rule
    assert late_mse(sim, net) < 0.05
    n = len(sim.trange()) // 4
    assert np.mean((sim.data[p2][-n:] - sim.data[net.p_target][-n:]) ** 2) < 0.05


# ---------------------------------------------------------------------------- bad input
def test_decoded_connection_is_refused():
    with nengo.Network() as net:
        a, b = nengo.Ensemble(10, 1), nengo.Ensemble(10, 1)
        with pytest.raises((ValidationError, BuildError)):
            nengo.Connection(a, b, learning_rule_type=mPES())
        nengo.Connection(a, b)
    del net


def test_sliced_connection_is_refused():
    with nengo.Network() as net:
        a, b = nengo.Ensemble(10, 1), nengo.Ensemble(10, 1)
        nengo.Connection(
            a.neurons[:5], b.neurons, transform=np.zeros((10, 5)), learning_rule_type=mPES()
        )
    with pytest.raises(BuildError, match="sliced"):
        nengo.Simulator(net, progress_bar=False)


def test_connection_that_does_not_fit_is_refused_before_any_pulse():
    inner = EmulatedCrossbar(40, 60, seed=0)
    before = inner.read_all()
    xbar = CountingCrossbar(inner)
    net = channel_net(mPES(crossbar=xbar))
    with pytest.raises(BuildError, match="do not fit the 40x60 crossbar"):
        nengo.Simulator(net, progress_bar=False)
    assert xbar.batches == []
    assert np.array_equal(inner.read_all(), before)


def test_overlapping_layouts_on_a_shared_crossbar_are_refused():
    xbar = CountingCrossbar(EmulatedCrossbar(40, 200, seed=0))
    net = channel_net(mPES(crossbar=xbar, layout=Layout(0, 0)))
    with net:
        post2 = nengo.Ensemble(40, 1)
        nengo.Connection(
            net.pre.neurons,
            post2.neurons,
            transform=np.zeros((40, 40)),
            learning_rule_type=mPES(crossbar=xbar, layout=Layout(0, 60)),
        )
    with pytest.raises(BuildError, match="overlap"):
        nengo.Simulator(net, progress_bar=False)
    assert xbar.batches == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"error_threshold": np.ones(3)}, BuildError, "error_threshold has 3 entries"),
        ({"voltage": 5.0}, BuildError, "safety limits"),
        ({"layout": Layout(0, 0, neg_row=0, neg_col=10)}, BuildError, "over negative"),
    ],
)
def test_bad_rule_configurations_fail_at_build(kwargs, error, match):
    net = channel_net(mPES(**kwargs))
    with pytest.raises(error, match=match):
        nengo.Simulator(net, progress_bar=False)


def test_bad_rule_arguments_fail_at_construction():
    with pytest.raises(ValidationError):
        mPES(pulses="many")
    with pytest.raises(ValidationError):
        mPES(error_threshold=-1)
    with pytest.raises(TypeError, match="unknown arguments"):
        mPES(r_zero=3)
    with pytest.raises(ValidationError):
        mPES(a=0.5)
    with pytest.raises(ValidationError):
        mPES(crossbar=3)
    with pytest.raises(ValueError):
        Layout(row=-1)
    assert mPES(r0=100).model == PowerLaw(r0=100, dtype="float32", reset=True)
    assert mPES(model=PowerLaw(), a=-0.2).model == PowerLaw(a=-0.2)


def test_closed_crossbar_is_refused():
    xbar = EmulatedCrossbar(40, 80, seed=0)
    xbar.close()
    with pytest.raises(BuildError, match="closed"):
        nengo.Simulator(channel_net(mPES(crossbar=xbar)), progress_bar=False)


def test_importing_the_package_does_not_import_nengo():
    code = (
        "import sys, memristor_hil; assert 'nengo' not in sys.modules; "
        "from memristor_hil import mPES; assert 'nengo' in sys.modules; "
        "import nengo.builder; assert mPES in nengo.builder.Builder.builders"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_emulator_snapshot_restores_devices_and_noise():
    xbar = EmulatedCrossbar(4, 6, PowerLaw(variability=0.1, noise=0.2), seed=9)
    snap = xbar.snapshot()
    batch = PulseBatch([0, 1, 3], [2, 5, 0], pulses=[3, 1, 7])
    first = xbar.apply(batch, read_back=True)
    xbar.restore(snap)
    assert np.array_equal(xbar.apply(batch, read_back=True), first)  # same noise draws too
    with pytest.raises(ValueError, match="shape"):
        EmulatedCrossbar(2, 2).restore(snap)


def test_a_snapshot_of_unpulsed_devices_holds_one_value_and_restores_them_all():
    """mPES snapshots the emulator at build, when every device is at the model's start: the
    snapshot keeps one value, not a second copy of the state (issue 27, item 5)."""
    xbar = EmulatedCrossbar(30, 40, PowerLaw(noise=0.2), seed=3)  # mPES's default kind
    start = xbar._n.copy()
    snap = xbar.snapshot()
    assert snap["n"].size == 1
    xbar.apply(PulseBatch([0, 29], [0, 39], pulses=[5, 2]))
    assert not np.array_equal(xbar._n, start)
    xbar.restore(snap)
    assert np.array_equal(xbar._n.view(np.uint32), start.view(np.uint32))
    xbar.apply(PulseBatch([0], [0], pulses=5))
    pulsed = xbar.snapshot()  # devices that differ keep a full copy
    assert pulsed["n"].shape == start.shape
    with pytest.raises(ValueError, match="shape"):
        EmulatedCrossbar(2, 2).restore(snap)


def test_learning_rate_matches_pes_weight_change_in_expectation():
    """On a fixed activity pattern, the mean weight change of ``mPES(learning_rate=...)``'s
    pulses equals Nengo PES's ``-learning_rate * dt / n_pre * e_i * a_j`` per cell."""
    from memristor_hil.learning import kernels, pairs
    from memristor_hil.learning.groups import Cells, Inputs, Selection

    n_post, n_pre, dt, learning_rate, gain = 4, 6, 0.001, 1e-4, 1e3
    model = PowerLaw(dtype="float32")
    c = gain / (1 / model.r0 - 1 / model.r1)
    acts = np.array([0.0, 20.0, 80.0, 150.0, 0.2, 40.0])  # Hz, filtered
    local_error = np.array([-0.3, 0.05, 0.0, 0.6])
    threshold = np.array([1e-5])
    origins = np.array([0, 0, 0, n_pre], dtype=np.int64)
    active = np.empty(n_pre, np.uint64)
    rows_sel = np.empty(n_post, np.uint64)
    positive = np.empty(n_post, np.bool_)
    rows = np.empty(n_post * n_pre, np.int32)
    cols = np.empty(n_post * n_pre, np.int32)
    counts = np.empty(n_post * n_pre, np.int64)
    polarity = np.empty(n_post * n_pre, np.bool_)
    stream = kernels.new_stream(np.random.default_rng(0))
    xbar = EmulatedCrossbar(n_post, 2 * n_pre, model, seed=0)
    start = xbar.read_all()
    per_pos, per_neg = (
        pairs.nominal_pulse_change(block, c, model.r0, model.r1, model.a)
        for block in (start[:, :n_pre], start[:, n_pre:])
    )
    inputs = Inputs(acts=acts, local_error=local_error, threshold=threshold, mask_source=acts)
    sel = Selection(order=0, mask_threshold=0.5, origins=origins, active=active,
                    post_rows=rows_sel, positive=positive, scratch=np.empty(n_pre, np.int32),
                    sizes=np.zeros(2, np.int64))  # fmt: skip
    cells = Cells(rows=rows, cols=cols, counts=counts, polarity=polarity)
    cal = (per_pos, per_neg, np.ones_like(per_pos), np.ones_like(per_neg))
    kernels.select_pulses(inputs, sel, cells, False)
    trials = 20000
    mean_counts = np.zeros((n_post, 2 * n_pre))
    for _ in range(trials):
        size, _total = kernels.learning_rate_cells(
            inputs, sel, learning_rate * dt / n_pre, 100, cal, cells, stream
        )
        np.add.at(mean_counts, (rows[:size], cols[:size]), counts[:size])
    mean_counts /= trials
    # the weight change of one pulse on each device, measured on the emulator
    all_rows, all_cols = np.divmod(np.arange(2 * n_post * n_pre), 2 * n_pre)
    xbar.apply(PulseBatch(all_rows, all_cols, 1, model.v_ref))
    one = xbar.read_all().astype(float)
    g = 1 / start.astype(float)
    per_pulse = c * (1 / one - g)  # conductance gain of one pulse, times c
    mean = (
        mean_counts[:, :n_pre] * per_pulse[:, :n_pre]
        - mean_counts[:, n_pre:] * per_pulse[:, n_pre:]
    )
    pes = -learning_rate * dt / n_pre * np.outer(local_error, acts)
    selected = np.outer(np.abs(local_error) > 1e-5, acts > 0.5)  # mPES's mask
    # a count is floor(x + u): its variance is at most its mean, so 4 standard errors bound
    # the sampling noise; the 1% beyond it is the per-pulse slope taken at the current state
    spread = np.sqrt(mean_counts / trials) * np.abs(per_pulse)
    spread = np.maximum(spread[:, :n_pre], spread[:, n_pre:])
    error = np.abs(mean - pes)[selected]
    assert np.all(error <= 4 * spread[selected] + 0.01 * np.abs(pes[selected]))
    assert np.all(mean[~selected] == 0)
    chosen = np.concatenate([mean_counts[:, :n_pre][selected], mean_counts[:, n_pre:][selected]])
    assert 0 < chosen[chosen > 0].min() < 0.5  # expectations below one pulse are kept too


@pytest.mark.parametrize("scale", [0.02, 3.0])  # thinning (every x < 1); one uniform per cell
def test_learning_rate_counts_are_stochastic_roundings_of_their_expectation(scale):
    """Each cell's count is floor(x) or floor(x) + 1 with mean x = alpha |e_i| a_j / per_pulse,
    whether the row is sampled by thinning (all x < 1) or cell by cell (some x >= 1)."""
    from memristor_hil.learning import kernels
    from memristor_hil.learning.groups import Calibration, Cells, Inputs, Selection

    n_post, n_pre = 3, 40
    rng = np.random.default_rng(1)
    acts = rng.uniform(0.0, 2.0, n_pre)
    local_error = np.array([-1.0, 0.5, 2.0])
    per_pos = rng.uniform(0.5, 2.0, (n_post, n_pre))
    per_neg = rng.uniform(0.5, 2.0, (n_post, n_pre))
    per_pos[0, :3] = np.inf  # saturated devices: never pulsed
    active = np.flatnonzero(acts > 0.5).astype(np.uint64)
    rows_sel = np.arange(n_post, dtype=np.uint64)
    positive = local_error < 0
    origins = np.array([0, 0, 0, n_pre], dtype=np.int64)
    out = [np.empty(n_post * n_pre, t) for t in (np.int32, np.int32, np.int64, np.bool_)]
    stream = kernels.new_stream(np.random.default_rng(2))
    inputs = Inputs(acts=acts, local_error=local_error, threshold=np.zeros(1), mask_source=acts)
    sel = Selection(order=0, mask_threshold=0.5, origins=origins, active=active,
                    post_rows=rows_sel, positive=positive, scratch=np.empty(n_pre, np.int32),
                    sizes=np.array([active.size, n_post]))  # fmt: skip
    cal = Calibration(per_pos=per_pos, per_neg=per_neg, ratio_pos=per_pos, ratio_neg=per_neg)
    trials = 20000
    sums = np.zeros((n_post, 2 * n_pre))
    for _ in range(trials):
        size, total = kernels.learning_rate_cells(inputs, sel, scale, 100, cal, Cells(*out), stream)
        rows, cols, counts = (a[:size] for a in out[:3])
        assert total == counts.sum() and np.all(np.diff(rows * 2 * n_pre + cols) > 0)
        np.add.at(sums, (rows, cols), counts)
    per = np.where(positive[:, None], per_pos, per_neg)
    x = np.zeros((n_post, n_pre))
    x[:, active] = scale * np.abs(local_error)[:, None] * acts[active] / per[:, active]
    expected = np.zeros((n_post, 2 * n_pre))
    expected[:, :n_pre][positive] = x[positive]
    expected[:, n_pre:][~positive] = x[~positive]
    assert (expected.max() < 1) == (scale < 1)
    # a count of floor(x) or floor(x) + 1 has variance frac(x) (1 - frac(x)) <= 1/4
    bound = 4 * np.sqrt(0.25 / trials) + 1e-12
    assert np.all(np.abs(sums / trials - expected) <= bound)
    assert np.all(sums[expected == 0] == 0)


def test_spike_mask_selects_the_pre_neurons_that_spiked():
    """mask="spikes" pulses only where a pre neuron spiked in this step; the published
    filtered mask also pulses neurons that spiked recently."""
    totals = {}
    for mask in ("filtered", "spikes"):
        net = channel_net(mPES(mask=mask))
        with net:
            p_spikes = nengo.Probe(net.pre.neurons, "output")
            p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances")
            p_neg = nengo.Probe(net.conn.learning_rule, "neg_resistances")
            p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(0.3)
        totals[mask] = sim.data[p_pulses].sum()
        changed = (np.diff(sim.data[p_pos], axis=0) != 0) | (np.diff(sim.data[p_neg], axis=0) != 0)
        touched_cols = changed.any(axis=1)  # (steps - 1, n_pre)
        # the batch of step t shows in the resistances probed in step t + 1
        spiked = sim.data[p_spikes][:-1] > 0
        if mask == "spikes":
            assert touched_cols.any()
            assert not np.any(touched_cols & ~spiked)
    assert 0 < totals["spikes"] < totals["filtered"]


def test_learning_rate_and_mask_are_checked():
    with pytest.raises(ValidationError, match="learning_rate"):
        mPES(learning_rate=1e-4, pulses="scaled")
    with pytest.raises(ValidationError, match="mask"):
        mPES(mask="rates")
    with pytest.raises(ValidationError):
        mPES(learning_rate=-1.0)


def test_read_back_calibration_learns_each_devices_change_per_pulse():
    """With device-to-device variability the nominal model's change per pulse is off by
    factors of 2-3; after one calibrated store (the read-back of a few pulses) each device's
    predicted change of its next pulse matches what the device then does."""
    from memristor_hil.learning import pairs
    from memristor_hil.learning.groups import Calibration, Cells, HostModel, Pairs

    n_post, n_pre, gain = 8, 10, 1e3
    model = PowerLaw(dtype="float64", variability=0.15)
    c = gain / (1 / model.r0 - 1 / model.r1)
    xbar = EmulatedCrossbar(n_post, 2 * n_pre, model, seed=3)
    start = xbar.read_all()
    r_pos, r_neg = start[:, :n_pre].copy(), start[:, n_pre:].copy()
    weights = c * (1 / r_pos - 1 / r_neg)
    inv_a = 1.0 / model.a
    per_pos, per_neg = (
        pairs.nominal_pulse_change(r, c, model.r0, model.r1, model.a) for r in (r_pos, r_neg)
    )
    ratio_pos, ratio_neg = np.ones((n_post, n_pre)), np.ones((n_post, n_pre))
    rows, cols = (a.ravel() for a in np.indices((n_post, 2 * n_pre)))
    polarity = cols < n_pre
    counts = np.full(rows.size, 5, dtype=np.int64)
    origins = np.array([0, 0, 0, n_pre], dtype=np.int64)
    back = xbar.apply(PulseBatch(rows, cols, counts, model.v_ref), read_back=True)
    pairs.store_calibrated(
        Cells(rows=rows, cols=cols, counts=counts, polarity=polarity), rows.size, back,
        Pairs(origins=origins, r_pos=r_pos, r_neg=r_neg, weights=weights, c=c),
        Calibration(per_pos=per_pos, per_neg=per_neg, ratio_pos=ratio_pos, ratio_neg=ratio_neg),
        HostModel(r0=model.r0, r1=model.r1, inv_a=inv_a), 1.0,
    )  # fmt: skip
    after = xbar.read_all()
    assert np.allclose(weights, c * (1 / after[:, :n_pre] - 1 / after[:, n_pre:]))
    xbar.apply(PulseBatch(rows, cols, 1, model.v_ref))
    actual = c * (1 / xbar.read_all() - 1 / after)  # the next pulse's weight change, measured
    predicted = np.hstack([per_pos, per_neg])
    uncalibrated = np.hstack(
        [pairs.nominal_pulse_change(after[:, s], c, model.r0, model.r1, model.a) for s in
         (slice(0, n_pre), slice(n_pre, None))]
    )  # fmt: skip
    assert np.median(np.abs(uncalibrated / actual - 1)) > 0.3  # the nominal model is far off
    off = np.abs(predicted / actual - 1)
    # the calibrated one is not (a few devices start outside the nominal model's range, where
    # one ratio cannot describe them yet: the running ratio follows them step by step)
    assert np.median(off) < 0.02 and np.quantile(off, 0.9) < 0.1
    assert np.all(ratio_pos > 0) and np.all(ratio_neg > 0)


def test_one_pulse_calibration_reuses_the_kept_nominal_change():
    """For a one-pulse cell, store_calibrated takes the nominal change it kept at the last
    store instead of evaluating the model again: the ratios come out as from the model."""
    from memristor_hil.learning import pairs
    from memristor_hil.learning.groups import Calibration, Cells, HostModel, Pairs

    n_post, n_pre, gain = 6, 7, 1e3
    model = PowerLaw(dtype="float64", variability=0.15)
    c = gain / (1 / model.r0 - 1 / model.r1)
    xbar = EmulatedCrossbar(n_post, 2 * n_pre, model, seed=4)
    start = xbar.read_all()
    rows, cols = (a.ravel() for a in np.indices((n_post, 2 * n_pre)))
    counts = np.ones(rows.size, dtype=np.int64)
    backs = [xbar.apply(PulseBatch(rows, cols, counts, model.v_ref), read_back=True)]
    backs.append(xbar.apply(PulseBatch(rows, cols, counts, model.v_ref), read_back=True))
    results = []
    for kept in (True, False):  # the kept nominal change, or none (inf: evaluate the model)
        r_pos, r_neg = start[:, :n_pre].copy(), start[:, n_pre:].copy()
        per = [
            pairs.nominal_pulse_change(r, c, model.r0, model.r1, model.a) for r in (r_pos, r_neg)
        ]
        ratios = [np.ones((n_post, n_pre)), np.ones((n_post, n_pre))]
        for back in backs:  # the second store starts from calibrated ratios
            if not kept:
                for p in per:
                    p[...] = np.inf
            pairs.store_calibrated(
                Cells(rows=rows, cols=cols, counts=counts, polarity=cols < n_pre), rows.size,
                back, Pairs(np.array([0, 0, 0, n_pre]), r_pos, r_neg, np.zeros((n_post, n_pre)), c),
                Calibration(*per, *ratios), HostModel(model.r0, model.r1, 1.0 / model.a), 0.5,
            )  # fmt: skip
        results.append(np.hstack([*ratios, *per]))
    assert np.allclose(results[0], results[1], rtol=1e-9, atol=0)
    assert not np.allclose(results[0][:, : 2 * n_pre], 1.0)  # the ratios did move


def test_refresh_resets_saturated_pairs_keeps_their_weights_and_counts_the_pulses():
    """A pair whose two devices pass the refresh threshold gets one RESET pulse on each device
    and SET pulses on one of them, in a step's one batch (with per-cell voltages) that holds
    nothing else; the pair's weight moves by at most half a pulse's weight change (the
    devices follow the host's nominal model exactly here), and the ``pulses`` probe counts
    the refresh pulses."""
    from memristor_hil.learning import pairs

    model = PowerLaw(reset=True)  # no variability: every device is the nominal one
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, model, seed=0))
    # threshold g = 1e-6 is R ~ 1.07e8: every pair pulsed once is queued (devices start at 1e8)
    net = channel_net(mPES(learning_rate=1e-4, refresh=1e-6, crossbar=xbar))
    with net:
        p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
        p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances")
        p_neg = nengo.Probe(net.conn.learning_rule, "neg_resistances")
        p_w = nengo.Probe(net.conn.learning_rule, "weights")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.35)
    refreshes = [b for b in xbar.batches if np.any(np.asarray(b.voltage) < 0)]
    assert len(refreshes) >= 2  # one refresh step per REFRESH_PERIOD_STEPS at most
    pos, neg, w = sim.data[p_pos], sim.data[p_neg], sim.data[p_w]
    # only RESET raises a resistance: the steps whose resistances rose are the refresh steps
    rose = np.flatnonzero(((np.diff(pos, axis=0) > 0) | (np.diff(neg, axis=0) > 0)).any((1, 2)))
    assert len(rose) == len(refreshes)
    assert np.all(np.diff(rose) >= pairs.REFRESH_PERIOD_STEPS)
    c = 1e3 / (1 / model.r0 - 1 / model.r1)
    # a batch sent in step t (the pulses probe's step) shows in the resistances and weights
    # probed in step t + 1 (SimmPESCollect stores it there)
    for step, batch in zip(rose + 1, refreshes, strict=True):
        assert sim.data[p_pulses][step - 1, 0] == batch.pulses.sum()  # the refresh pulses
        voltage = np.asarray(batch.voltage)
        reset = voltage < 0
        assert np.all(voltage[reset] == -model.v_ref) and np.all(batch.pulses[reset] == 1)
        assert np.all(voltage[~reset] == model.v_ref)
        # every cell of the batch belongs to a refreshed pair: no learning pulses this step
        rows, cols = batch.rows, batch.cols % 40
        pairs_reset = set(zip(rows[reset], cols[reset], strict=True))
        assert reset.sum() == 2 * len(pairs_reset)  # one RESET on each device of each pair
        assert set(zip(rows[~reset], cols[~reset], strict=True)) <= pairs_reset
        refreshed = (rows[reset], cols[reset])
        before, after = w[step - 1][refreshed], w[step][refreshed]
        r_new = np.minimum(pos[step][refreshed], neg[step][refreshed]).astype(float)
        n_new = ((r_new - model.r0) / model.r1) ** (1 / model.a)
        per_pulse = c * (1 / (model.r0 + model.r1 * (n_new + 1) ** model.a) - 1 / r_new)
        assert np.all(np.abs(after - before) <= 0.5 * per_pulse * 1.05 + 1e-9)
        assert np.all(np.maximum(pos[step][refreshed], neg[step][refreshed]) > 1.2e8)
        changed = (w[step] != w[step - 1]).sum()
        assert changed == len(set(zip(*refreshed, strict=True)))


def test_gain_follows_from_the_connection_unless_given():
    """1e3 into neurons (Nengo scales those weights by the post gains); with a weight solver,
    whose weights carry the post gains, 1e3 times their mean; ``gain=`` overrides both."""
    for weight_solver in (False, True):
        for gain in (None, 5e2):
            net = channel_net(mPES(pulses="one", gain=gain), weight_solver=weight_solver)
            with nengo.Simulator(net, progress_bar=False) as sim:
                built = sim.data[net.conn.learning_rule]
                weights = sim.signals[sim.model.sig[net.conn]["weights"]].copy()
                r_pos, r_neg = (
                    built.crossbar.read_region(b.row, b.col, b.nrows, b.ncols).astype(float)
                    for b in (built.positive, built.negative)
                )
            mean_gain = np.mean(sim.data[net.post].gain)
            want = gain or (1e3 * mean_gain if weight_solver else 1e3)
            assert built.gain == pytest.approx(want)
            g = built.model.conductance
            assert np.allclose(weights, want * (g(r_pos) - g(r_neg)))
    assert 10 < mean_gain < 40  # so the weight solver's gain is well above 1e3


@pytest.mark.parametrize(
    ("rule", "reset", "refreshes"),
    [
        ({"pulses": "one"}, True, False),  # the published rule has no refresh
        ({"refresh": None}, True, False),  # turned off
        ({}, False, False),  # devices without a RESET branch: no RESET pulse is ever sent
        ({}, True, True),
    ],
)
def test_refresh_only_for_the_learning_rate_policy_on_devices_that_reset(rule, reset, refreshes):
    xbar = CountingCrossbar(EmulatedCrossbar(40, 80, PowerLaw(reset=reset), seed=0))
    rule = {"refresh": 1e-6, **rule}  # g = 1e-6: every pair pulsed once is due
    if "pulses" not in rule:
        rule["learning_rate"] = 1e-4
    net = channel_net(mPES(crossbar=xbar, **rule))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.25)
    resets = sum(np.any(np.asarray(b.voltage) < 0) for b in xbar.batches)
    assert len(xbar.batches) > 100
    assert (resets > 0) == refreshes


class ModellessCrossbar(CountingCrossbar):
    """A crossbar that does not say what its devices are (hardware, a served emulator)."""

    @property
    def model(self):
        return None


@pytest.mark.parametrize(
    ("declared", "refreshes"),
    [
        ({"variability": 0.15}, False),  # describes the default emulator, not these devices
        ({"variability": 0.15, "reset": True}, True),  # the user says they RESET
        ({"model": PowerLaw(reset=True)}, True),
    ],
)
def test_a_crossbar_without_a_model_gets_reset_pulses_only_if_the_user_declares_them(
    declared, refreshes
):
    # The devices RESET either way; what decides is what the rule may assume about them. The
    # demo against a served emulator without RESET used to fail mid-run on the first refresh.
    xbar = ModellessCrossbar(EmulatedCrossbar(40, 80, PowerLaw(reset=True), seed=0))
    net = channel_net(mPES(crossbar=xbar, refresh=1e-6, learning_rate=1e-4, **declared))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.25)
    resets = sum(np.any(np.asarray(b.voltage) < 0) for b in xbar.batches)
    assert len(xbar.batches) > 100
    assert (resets > 0) == refreshes


@pytest.mark.parametrize("voltage", [0.1, 0.05])
def test_the_nominal_change_per_pulse_is_the_one_at_the_set_voltage(voltage):
    # the learning_rate policy's pulse counts start from the nominal model's change per pulse;
    # at another SET voltage the exponent is a(V), and the devices' first pulse must match it
    from memristor_hil.learning import pairs
    from memristor_hil.learning.operator import SimmPES

    model = PowerLaw(dtype="float64", reset=True)  # no variability or noise: nominal = actual
    xbar = EmulatedCrossbar(40, 80, model, seed=0)
    net = channel_net(mPES(crossbar=xbar, voltage=voltage))
    with nengo.Simulator(net, progress_bar=False) as sim:
        (op,) = [op for op in sim.model.operators if isinstance(op, SimmPES)]
        r0, r1, a = op.parts[0].nominal
        start = xbar.read_all()
        predicted = pairs.nominal_pulse_change(start, 1.0, r0, r1, a)
        rows, cols = np.divmod(np.arange(start.size), start.shape[1])
        xbar.apply(PulseBatch(rows, cols, 1, voltage))
        measured = 1 / xbar.read_all() - 1 / start
        np.testing.assert_allclose(predicted, measured, rtol=1e-6)


def test_balance_brings_pairs_to_zero_weight_before_learning_and_counts_its_pulses():
    from memristor_hil.learning import pairs

    def run(**rule):
        net = channel_net(mPES(variability=0.15, seed=3, **rule), error=False)  # nothing to learn
        with net:
            weights = nengo.Probe(net.conn, "weights")
            pulses = nengo.Probe(net.conn.learning_rule, "pulses")
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(0.001 * (pairs.BALANCE_STEPS + 5))
        return np.abs(sim.data[weights]).mean(axis=(1, 2)), sim.data[pulses][:, 0]

    drawn, none = run(balance=False)
    assert np.all(none == 0) and np.allclose(drawn, drawn[0])  # no error: nothing moves
    balanced, counted = run()
    assert np.all(counted[: pairs.BALANCE_STEPS] > 0)  # the balance pulses, in the probe
    assert np.all(counted[pairs.BALANCE_STEPS :] == 0)  # then learning (nothing to learn)
    assert balanced[-1] < drawn[0] / 10  # the drawn spread is mostly gone
    # the published rule starts as drawn
    assert run(pulses="one")[0][-1] == pytest.approx(drawn[0])


class DeferredCrossbar(CountingCrossbar):
    """A link-like backend: ``submit`` returns at once and the batch reaches the devices only
    when its read-back is collected (as late as a remote device could answer)."""

    def __init__(self, inner: EmulatedCrossbar) -> None:
        super().__init__(inner)
        self.events: list[str] = []

    def _submit(self, batch, cells, read_back):
        from memristor_hil.crossbar import PendingApply

        self.events.append("submit")
        batch = PulseBatch(
            batch.rows.copy(),
            batch.cols.copy(),
            batch.pulses.copy(),
            batch.voltage if batch.uniform_voltage else batch.voltage.copy(),
            batch.width,
        )

        def finish():
            self.events.append("collect")
            return self._apply(batch, cells, read_back)

        return PendingApply(finish)


def _run_with_probes(net, xbar, overlap: bool, seconds: float = 0.1):
    """Probe data of ``net`` with the read-back stored in the next step (``overlap``, the
    default build) or in the step itself (the collector taken out of the built model)."""
    from memristor_hil.learning.operator import SimmPESCollect

    with net:
        lr = net.conn.learning_rule
        probes = {
            "post": nengo.Probe(net.post.neurons),
            "weights": nengo.Probe(lr, "weights"),
            "pos": nengo.Probe(lr, "pos_resistances"),
            "pulses": nengo.Probe(lr, "pulses"),
        }
    model = nengo.builder.Model(dt=0.001)
    model.build(net)
    if not overlap:
        model.operators[:] = [op for op in model.operators if not isinstance(op, SimmPESCollect)]
    with nengo.Simulator(None, model=model, progress_bar=False) as sim:
        start = np.asarray(xbar.read_all())
        sim.run(seconds)
        final = np.asarray(xbar.read_all())
    return {name: sim.data[p] for name, p in probes.items()}, start, final


@pytest.mark.parametrize("rule", [{}, {"pulses": "one"}, {"pulses": "stochastic"}])
@pytest.mark.parametrize("deferred", [False, True])
def test_read_back_stored_next_step_computes_the_same_network_and_probes_one_step_later(
    rule, deferred
):
    """SimmPES submits a step's batch (Crossbar.submit) and SimmPESCollect stores its
    read-back in the next step, before the weights are read: the network computes bit for bit
    what it computes when each step stores its own read-back (the collector taken out), even
    when the devices are pulsed only as the read-back is collected; the probes of the weights
    and resistances show in step t what they showed in step t - 1 (as Nengo's PES weight probe
    lags its update by one step; step 0 shows the devices as built), the pulses probe still
    counts the pulses sent in the step."""
    runs = []
    for overlap in (True, False):
        inner = EmulatedCrossbar(40, 80, PowerLaw(variability=0.15), seed=2)
        xbar = DeferredCrossbar(inner) if deferred else CountingCrossbar(inner)
        runs.append(_run_with_probes(channel_net(mPES(crossbar=xbar, **rule)), xbar, overlap))
        if deferred and overlap:  # every step submits, the next step (or read_all) collects
            assert xbar.events[:4] == ["submit", "collect", "submit", "collect"]
            assert len(xbar.events) > 50
    (new, start, new_final), (old, _, old_final) = runs
    assert old["pulses"].sum() > 0
    assert np.array_equal(new["post"], old["post"])
    assert np.array_equal(new["pulses"], old["pulses"])  # sent in the step: no shift
    for name in ("weights", "pos"):
        assert np.array_equal(new[name][1:], old[name][:-1]), name
    assert np.array_equal(new["pos"][0], start[:, :40])
    assert np.array_equal(new_final, old_final)


def test_a_read_back_that_fails_raises_in_the_next_step_and_nothing_more_is_sent():
    """The overlapped step's error is not lost: the read-back collected in the next step
    raises it there, before that step's weights are read or its batch is sent."""
    from memristor_hil.errors import DeviceError

    class FailingOnFifth(DeferredCrossbar):
        def _submit(self, batch, cells, read_back):
            pending = super()._submit(batch, cells, read_back)
            if self.events.count("submit") < 5:
                return pending
            from memristor_hil.crossbar import PendingApply

            def fail():
                self.events.append("failed")
                raise DeviceError("the device reported an error")

            return PendingApply(fail)

    xbar = FailingOnFifth(EmulatedCrossbar(40, 80, PowerLaw(variability=0.15), seed=2))
    with nengo.Simulator(channel_net(mPES(crossbar=xbar)), progress_bar=False) as sim:
        with pytest.raises(DeviceError, match="reported an error"):
            sim.run(0.2)
    assert xbar.events[-2:] == ["submit", "failed"]
    assert xbar.events.count("submit") == 5


def test_the_read_back_is_collected_late_in_the_step_but_before_the_weights_are_read():
    """The later the collector runs, the more of Nengo's step overlaps the round trip: after
    the pre neurons' output is computed, before any operator reads the weights."""
    from memristor_hil.learning.operator import SimmPES, SimmPESCollect

    net = channel_net(mPES())
    with nengo.Simulator(net, progress_bar=False) as sim:
        order = list(sim.step_order)
        weights = sim.model.sig[net.conn]["weights"]
        pre_out = sim.model.sig[net.conn]["in"]
    (collect,) = [i for i, op in enumerate(order) if isinstance(op, SimmPESCollect)]
    (simmpes,) = [i for i, op in enumerate(order) if isinstance(op, SimmPES)]

    def touches(op, sig, kinds):
        return any(s.base is sig.base for kind in kinds for s in getattr(op, kind))

    writers = [i for i, op in enumerate(order) if touches(op, pre_out, ("sets", "incs"))]
    readers = [
        i
        for i, op in enumerate(order)
        if touches(op, weights, ("reads",)) and not isinstance(op, SimmPES)
    ]
    assert writers and readers
    assert max(writers) < collect < min(readers) and collect < simmpes
    assert collect > len(order) // 2  # most of the step runs before it
