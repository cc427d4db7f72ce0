"""NengoDL's host call against the emulator service over VISA (TCP, pyvisa-py): the same
pulses, weights and devices as ``nengo.Simulator`` on the in-process emulator."""

import nengo
import nengo_dl
import numpy as np
from memristor_hil.drivers import VisaCrossbar

from memristor_hil import mPES, open_crossbar
from memristor_hil.testing import EmulatorService

N_PRE = N_POST = 10
URL = f"emulator://?rows={N_POST}&cols={2 * N_PRE}&seed=5&sigma=0.15&noise=0.05"
STEPS = 200


def build(crossbar):
    with nengo.Network(seed=1) as net:
        nengo_dl.configure_settings(dtype="float64")
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre = nengo.Ensemble(N_PRE, 1)
        post = nengo.Ensemble(N_POST, 1)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((N_POST, N_PRE)),
            learning_rule_type=mPES(crossbar=crossbar, pulses="scaled"),
        )
        err = nengo.Node(size_in=1)
        nengo.Connection(post, err, synapse=0.01)
        nengo.Connection(stim, err, transform=-1, synapse=0.01)
        nengo.Connection(err, conn.learning_rule)
        net.p_pulses = nengo.Probe(conn.learning_rule, "pulses")
        net.p_weights = nengo.Probe(conn, "weights", sample_every=0.01)
    return net


def test_nengo_dl_through_visa_matches_the_numpy_simulator_in_process():
    with open_crossbar(URL) as xbar:
        net = build(xbar)
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(STEPS)
        want_pulses, want_weights = sim.data[net.p_pulses], sim.data[net.p_weights]
        want_devices = xbar.read_all()

    service = EmulatorService("--tcp=127.0.0.1:0", url=URL)
    try:
        with VisaCrossbar(service.visa_url.split("://", 1)[1], timeout=5) as xbar:
            net = build(xbar)
            with nengo_dl.Simulator(net, progress_bar=False) as sim:
                sim.run_steps(STEPS)
                pulses = np.asarray(sim.data[net.p_pulses])  # minibatch_size None: no axis
                weights = np.asarray(sim.data[net.p_weights])
            assert xbar.stats["commands"] > 20  # it really went through the service
            devices = xbar.read_all()
    finally:
        service.kill()
    assert want_pulses.sum() > 100
    np.testing.assert_array_equal(pulses, want_pulses)
    np.testing.assert_allclose(
        weights.reshape(want_weights.shape), want_weights, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(devices, want_devices)
