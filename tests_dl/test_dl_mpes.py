"""mPES in ``nengo_dl.Simulator``: the native TensorFlow builder (in-process emulator) and the
host call (every other crossbar) apply the pulses ``nengo.Simulator`` applies.

Exactness needs the same neurons on both sides, so the equivalence runs set NengoDL's signals
to float64 (``nengo_dl.configure_settings(dtype="float64")``), as NumPy Nengo computes; the
devices keep their own (float32) precision on both sides.
"""

from __future__ import annotations

import nengo
import nengo_dl
import numpy as np
import pytest
from memristor_hil.emulator import EmulatedCrossbar
from nengo.exceptions import BuildError

from memristor_hil import Crossbar, Layout, mPES
from memristor_hil.learning import DEFAULT_MODEL, dl_builders

DT = 0.001
N = 20


class ForwardingCrossbar(Crossbar):
    """An emulator behind a wrapper that declares no ``device_parameters``: to the builders it
    is a crossbar outside the process (the host call), and it counts what reaches it."""

    def __init__(self, inner: EmulatedCrossbar) -> None:
        super().__init__(inner.shape, limits=inner.limits, identity=f"fwd:{inner.identity}")
        self.inner = inner
        self.batches = 0

    @property
    def model(self):
        return self.inner.model

    def _apply(self, batch, cells, read_back):
        self.batches += 1
        return self.inner.apply(batch, read_back=read_back)

    def _read(self, flat):
        rows, cols = np.divmod(flat, self.shape[1])
        return self.inner.read(rows, cols)


def make_net(rule, *, closed_loop=True, stim=None, seed=1, n=N, dl_float64=True):
    """stim -> pre -> post learned with ``rule``; error = post - stim**2 (or just -stim**2)."""
    with nengo.Network(seed=seed) as net:
        if dl_float64:
            nengo_dl.configure_settings(dtype="float64")
        net.stim = nengo.Node(stim if stim is not None else (lambda t: np.sin(2 * np.pi * t)))
        pre = nengo.Ensemble(n, 1)
        post = nengo.Ensemble(n, 1)
        nengo.Connection(net.stim, pre)
        net.conn = nengo.Connection(
            pre.neurons, post.neurons, transform=np.zeros((n, n)), learning_rule_type=rule
        )
        err = nengo.Node(size_in=1)
        if closed_loop:
            nengo.Connection(post, err, synapse=0.01)
        nengo.Connection(net.stim, err, function=lambda x: x**2, transform=-1, synapse=0.01)
        nengo.Connection(err, net.conn.learning_rule)
        net.p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
        net.p_weights = nengo.Probe(net.conn, "weights", sample_every=0.05)
        net.p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances", sample_every=0.05)
        net.p_neg = nengo.Probe(net.conn.learning_rule, "neg_resistances", sample_every=0.05)
        net.p_acts = nengo.Probe(net.conn.learning_rule, "activities")
        net.p_error = nengo.Probe(net.conn.learning_rule, "local_error")
    return net


def numpy_run(net, steps):
    with nengo.Simulator(net, dt=DT, progress_bar=False) as sim:
        sim.run_steps(steps)
        if hasattr(net, "conn"):  # the rule's gain, or the one the builder chose
            net.built_gain = sim.data[net.conn.learning_rule].gain
        return {p: sim.data[p].copy() for p in net.all_probes}


def dl_run(net, steps, minibatch_size=1, **run):
    with nengo_dl.Simulator(net, dt=DT, minibatch_size=minibatch_size, progress_bar=False) as sim:
        sim.run_steps(steps, **run)
        return {p: np.asarray(sim.data[p]).copy() for p in net.all_probes}


def per_sample(data, item=None):
    """Probe data as (samples, values), from NumPy (item None) or one NengoDL item."""
    data = np.asarray(data if item is None else data[item])
    return data.reshape(len(data), -1)


EPS32 = float(np.finfo(np.float32).eps)


def assert_equivalent(want, got, net, net_dl=None, item=0):
    """Same pulses at every step; devices and weights equal to float32 precision.

    A weight is ``c * (1/R+ - 1/R-)``, a small difference of two terms of size ``c / R``: its
    float32 tolerance is a few ulps of those terms, not of the weight.
    """
    net_dl = net_dl or net
    pulses = want[net.p_pulses]
    np.testing.assert_array_equal(per_sample(got[net_dl.p_pulses], item), pulses)
    assert pulses.sum() > 100  # it really pulsed
    for p, p_dl in ((net.p_pos, net_dl.p_pos), (net.p_neg, net_dl.p_neg)):
        np.testing.assert_allclose(
            per_sample(got[p_dl], item), per_sample(want[p]), rtol=8 * EPS32, atol=0
        )
    w_want = per_sample(want[net.p_weights])
    assert not np.allclose(w_want[0], w_want[-1])  # it really learned
    rule = net.conn.learning_rule_type
    model = rule.model or DEFAULT_MODEL
    c = net.built_gain / (1 / model.r0 - 1 / model.r1)
    r_min = min(per_sample(want[net.p_pos]).min(), per_sample(want[net.p_neg]).min())
    np.testing.assert_allclose(
        per_sample(got[net_dl.p_weights], item), w_want, rtol=0, atol=16 * EPS32 * c / r_min
    )


# ---------------------------------------------------------------------------- native
@pytest.mark.parametrize(
    "rule",
    [
        mPES(seed=3, pulses="one"),
        mPES(pulses="scaled", variability=0.15, seed=3),
        mPES(pulses="scaled", max_pulses=4, voltage=0.12, pulse_interval=0.0025, seed=3),
    ],
    ids=["one", "scaled-variability", "scaled-voltage-interval"],
)
def test_native_builder_applies_the_numpy_pulses(rule):
    net = make_net(rule)
    want = numpy_run(net, 400)
    got = dl_run(net, 400)
    assert_equivalent(want, got, net)


def test_native_is_chosen_for_the_emulator_and_host_call_for_others():
    net = make_net(mPES(seed=3, pulses="one"))
    with nengo_dl.Simulator(net, dt=DT, progress_bar=False) as sim:
        xbar = sim.data[net.conn.learning_rule].crossbar
        assert xbar.device_parameters is not None
        impls = [
            type(b.impl)
            for b in sim.tensor_graph.op_builder.op_builds.values()
            if isinstance(b, dl_builders.SimmPESBuilder)
        ]
        assert impls == [dl_builders.NativemPES]
        before = xbar.read_all()
        sim.run_steps(100)
        assert np.asarray(sim.data[net.p_pulses]).sum() > 0
        # the devices live in the graph: the emulator object is never pulsed
        np.testing.assert_array_equal(xbar.read_all(), before)


def test_each_minibatch_item_has_its_own_devices():
    amps = [1.0, 0.5, -0.8]
    t = DT * np.arange(1, 301)
    data = np.stack([a * np.sin(2 * np.pi * t) for a in amps])[:, :, None]
    net = make_net(mPES(pulses="scaled", seed=3), stim=np.zeros(1))
    got = dl_run(net, 300, minibatch_size=len(amps), data={net.stim: data})
    for item, amp in enumerate(amps):
        single = make_net(
            mPES(pulses="scaled", seed=3), stim=lambda t, amp=amp: amp * np.sin(2 * np.pi * t)
        )
        want = numpy_run(single, 300)
        assert_equivalent(want, got, single, net, item=item)
    assert not np.array_equal(got[net.p_pulses][0], got[net.p_pulses][1])


def test_connections_sharing_a_crossbar_and_on_separate_emulators():
    """Two connections on one shared emulator (one operator of two connections) and two on
    emulators of their own (two operators of one connection each, which NengoDL merges into
    one builder group)."""
    shared = EmulatedCrossbar(N, 4 * N, seed=4)
    shared_dl = EmulatedCrossbar(N, 4 * N, seed=4)

    def build(xbar):
        with nengo.Network(seed=2) as net:
            nengo_dl.configure_settings(dtype="float64")
            stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
            pre = nengo.Ensemble(N, 1)
            nengo.Connection(stim, pre)
            net.mpes_probes = []
            rules = [
                mPES(crossbar=xbar, layout=Layout(0, 0), pulses="one"),
                mPES(crossbar=xbar, layout=Layout(0, 2 * N), pulses="scaled"),
                mPES(seed=9, pulses="one"),
                mPES(seed=10, pulses="scaled"),
            ]
            for rule in rules:
                post = nengo.Ensemble(N, 1)
                conn = nengo.Connection(
                    pre.neurons, post.neurons, transform=np.zeros((N, N)), learning_rule_type=rule
                )
                err = nengo.Node(size_in=1)
                nengo.Connection(post, err, synapse=0.01)
                nengo.Connection(stim, err, transform=-1, synapse=0.01)
                nengo.Connection(err, conn.learning_rule)
                net.mpes_probes.append(nengo.Probe(conn.learning_rule, "pulses"))
        return net

    net = build(shared)
    want = numpy_run(net, 300)
    net_dl = build(shared_dl)
    with nengo_dl.Simulator(net_dl, dt=DT, progress_bar=False) as sim:
        groups = [
            b
            for b in sim.tensor_graph.op_builder.op_builds.values()
            if isinstance(b, dl_builders.SimmPESBuilder)
        ]
        assert sorted(len(g.ops) for g in groups) == [1, 2]  # the two alike merged
        sim.run_steps(300)
        for p, p_dl in zip(net.mpes_probes, net_dl.mpes_probes, strict=True):
            np.testing.assert_array_equal(sim.data[p_dl], want[p])  # minibatch_size None: no axis
            assert want[p].sum() > 50


def test_reset_rewinds_devices_weights_and_pulse_credit():
    net = make_net(mPES(pulses="scaled", pulse_interval=0.0025, seed=3))
    with nengo_dl.Simulator(net, dt=DT, progress_bar=False) as sim:
        sim.run_steps(200)
        first = {p: np.asarray(sim.data[p]).copy() for p in (net.p_pulses, net.p_weights)}
        sim.reset()
        sim.run_steps(200)
        for p, value in first.items():
            np.testing.assert_array_equal(np.asarray(sim.data[p]), value)
        # without build_post (the old soft_reset): signals only, which is all mPES state here
        sim.reset(include_probes=True, include_processes=False)
        sim.run_steps(200)
        np.testing.assert_array_equal(np.asarray(sim.data[net.p_pulses]), first[net.p_pulses])


def test_stochastic_native_matches_numpy_in_distribution():
    """Open loop (the error does not depend on the learned weights), so both simulators see
    the same activities, errors and running maximum at every step; each pulse count is
    ``floor(x + u)``, whose mean is ``x``. The total over the run must agree within 5 standard
    deviations of two independent sums of per-cell draws (variance <= 1/4 per candidate cell),
    and no pulse may appear where there is no candidate cell."""
    rule = mPES(pulses="stochastic", seed=3)
    net = make_net(rule, closed_loop=False, n=30)
    steps = 400
    want = numpy_run(net, steps)
    got = dl_run(net, steps)
    np.testing.assert_allclose(got[net.p_acts][0], want[net.p_acts], rtol=1e-12)
    np.testing.assert_allclose(got[net.p_error][0], want[net.p_error], rtol=1e-12)
    candidates = (want[net.p_acts] > 0.5).sum(axis=1) * (
        np.abs(want[net.p_error]) > rule.error_threshold
    ).sum(axis=1)
    pulses_np = want[net.p_pulses][:, 0]
    pulses_dl = got[net.p_pulses][0][:, 0]
    assert np.all(pulses_dl[candidates == 0] == 0)
    assert np.all(pulses_dl <= rule.max_pulses * candidates)
    sigma = np.sqrt(2 * 0.25 * candidates.sum())
    assert candidates.sum() > 10_000
    assert abs(pulses_dl.sum() - pulses_np.sum()) < 5 * sigma, (pulses_dl.sum(), pulses_np.sum())
    assert not np.array_equal(pulses_dl, pulses_np)  # a stream of its own, not a copy


def test_native_default_float32_signals_stay_close():
    """NengoDL's default float32 signals: neurons differ from NumPy's float64 at rounding level,
    so spikes may eventually differ; the learned weights stay close."""
    net = make_net(mPES(pulses="scaled", seed=3), dl_float64=False)
    want = numpy_run(net, 300)
    got = dl_run(net, 300)
    w_want = per_sample(want[net.p_weights])[-1]
    w_got = per_sample(got[net.p_weights], 0)[-1]
    assert np.corrcoef(w_want, w_got)[0, 1] > 0.99


@pytest.mark.parametrize("native", [True, False], ids=["native", "host-call"])
def test_probes_show_the_previous_steps_batch_as_in_nengo_simulator(native):
    """Every step, the resistances and weights probed in step t are those after step t-1's
    batch in both simulators (nengo.Simulator stores the read-back in the next step with
    SimmPESCollect; NengoDL, which refuses that operator, gets the same lag from Copy
    operators), while ``pulses`` counts step t's own pulses."""

    def run(sim_class):
        xbar = EmulatedCrossbar(N, 2 * N, seed=6)
        net = make_net(mPES(crossbar=xbar if native else ForwardingCrossbar(xbar), pulses="one"))
        with net:
            rule = net.conn.learning_rule
            net.every_step = [
                nengo.Probe(rule, "pos_resistances"),
                nengo.Probe(rule, "neg_resistances"),
                nengo.Probe(net.conn, "weights"),
            ]
        return net, (numpy_run(net, 80) if sim_class is nengo.Simulator else dl_run(net, 80))

    net, want = run(nengo.Simulator)
    net_dl, got = run(nengo_dl.Simulator)
    pulses = want[net.p_pulses][:, 0]
    np.testing.assert_array_equal(per_sample(got[net_dl.p_pulses], 0)[:, 0], pulses)
    first = int(np.flatnonzero(pulses)[0])  # the first step that pulsed
    assert first > 0
    for p, p_dl in zip(net.every_step, net_dl.every_step, strict=True):
        w, g = per_sample(want[p]), per_sample(got[p_dl], 0)
        scale = np.abs(w).max()
        np.testing.assert_allclose(g, w, rtol=0, atol=16 * EPS32 * scale)
        for data in (w, g):  # unchanged in the step that pulsed, changed in the next
            np.testing.assert_array_equal(data[first], data[first - 1])
            assert not np.allclose(data[first + 1], data[first], rtol=0, atol=16 * EPS32 * scale)


# ---------------------------------------------------------------------------- host call
@pytest.mark.parametrize("policy", ["one", "scaled"])
def test_host_call_applies_the_numpy_pulses(policy):
    def run(sim_class):
        xbar = ForwardingCrossbar(EmulatedCrossbar(N, 2 * N, seed=6))
        net = make_net(mPES(crossbar=xbar, pulses=policy))
        data = numpy_run(net, 300) if sim_class is nengo.Simulator else dl_run(net, 300)
        return net, data, xbar

    net, want, xbar_np = run(nengo.Simulator)
    net_dl, got, xbar_dl = run(nengo_dl.Simulator)
    assert_equivalent(want, got, net, net_dl)
    assert xbar_dl.batches == xbar_np.batches > 100  # one batch per pulsing step, as NumPy
    np.testing.assert_array_equal(xbar_dl.read_all(), xbar_np.read_all())


def test_host_call_refuses_a_minibatch_before_pulsing():
    xbar = ForwardingCrossbar(EmulatedCrossbar(N, 2 * N, seed=6))
    before = xbar.read_all()
    net = make_net(mPES(crossbar=xbar, pulses="one"))
    with pytest.raises(BuildError, match="minibatch_size=1 only, not 4"):
        nengo_dl.Simulator(net, dt=DT, minibatch_size=4, progress_bar=False)
    assert xbar.batches == 0
    np.testing.assert_array_equal(xbar.read_all(), before)


def test_host_call_reset_rewinds_an_emulator_and_refuses_on_hardware():
    inner = EmulatedCrossbar(N, 2 * N, seed=6)
    net = make_net(mPES(crossbar=ForwardingCrossbar(inner), pulses="one"))
    with nengo_dl.Simulator(net, dt=DT, progress_bar=False) as sim:
        sim.run_steps(100)
        assert np.asarray(sim.data[net.p_pulses]).sum() > 0
        # the wrapper cannot restore its devices: like hardware, a full reset is refused
        with pytest.raises(nengo.exceptions.SimulationError, match="cannot reset"):
            sim.reset()


def test_stochastic_host_call_runs_the_numpy_operator():
    xbar = ForwardingCrossbar(EmulatedCrossbar(N, 2 * N, seed=6))
    net = make_net(mPES(crossbar=xbar, pulses="stochastic"))
    got = dl_run(net, 200)
    assert got[net.p_pulses].sum() > 0
    assert xbar.batches == np.count_nonzero(got[net.p_pulses])


def test_the_builder_registers_itself_inside_nengo_dl():
    assert nengo_dl.builder.Builder.builders[dl_builders.SimmPES] is dl_builders.SimmPESBuilder
    # an op of a crossbar outside the process never merges
    emu = EmulatedCrossbar(2, 2)
    assert emu.device_parameters is not None
    assert ForwardingCrossbar(emu).device_parameters is None
