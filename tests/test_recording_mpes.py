"""Recording a Nengo run: mPES on a RecordingCrossbar, or on a URL with record=PATH."""

import nengo
import numpy as np
import pytest
from memristor_hil.emulator import EmulatedCrossbar
from nengo.exceptions import SimulationError

from memristor_hil import PowerLaw, mPES
from memristor_hil.lab.record import Record
from memristor_hil.lab.recording import RecordingCrossbar

N = 20


def network(crossbar):
    with nengo.Network(seed=2) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre, post = nengo.Ensemble(N, 1), nengo.Ensemble(N, 1)
        nengo.Connection(stim, pre)
        net.conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((N, N)),
            learning_rule_type=mPES(crossbar=crossbar),
        )
        err = nengo.Node(size_in=1)
        nengo.Connection(post, err, synapse=0.01)
        nengo.Connection(stim, err, transform=-1, synapse=0.01)
        nengo.Connection(err, net.conn.learning_rule)
        net.p_pos = nengo.Probe(net.conn.learning_rule, "pos_resistances")
        net.p_neg = nengo.Probe(net.conn.learning_rule, "neg_resistances")
        net.p_pulses = nengo.Probe(net.conn.learning_rule, "pulses")
    return net


def test_a_recorded_mpes_run_holds_every_step_and_the_final_devices(tmp_path):
    path = tmp_path / "learn.sqlite"
    inner = EmulatedCrossbar(N, 2 * N, PowerLaw(variability=0.15, dtype="float32"), seed=4)
    xbar = RecordingCrossbar(inner, path, parameters={"task": "channel"})
    net = network(xbar)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.3)
        with pytest.raises(SimulationError):  # the record would stop matching the devices
            sim.reset()
    xbar.close()
    pulses_per_step = sim.data[net.p_pulses].reshape(len(sim.trange()), -1).sum(axis=1)
    with Record.open(path) as record:
        assert record.parameters == {"task": "channel"}
        batches = list(record.batches())
        # One apply per step that pulsed anything (mPES sends none on a quiet step).
        assert len(batches) == np.count_nonzero(pulses_per_step) > 100
        np.testing.assert_array_equal(
            [int(b.pulses.sum()) for b in batches], pulses_per_step[pulses_per_step > 0]
        )
        # The last reading of every cell is the device state the network ended with: the
        # resistances probed in the last step (after the batch of the step before), with the
        # last step's batch, whose read-back the next step would store (SimmPESCollect).
        final = np.hstack([sim.data[net.p_pos][-1], sim.data[net.p_neg][-1]]).reshape(-1)
        last = batches[-1]
        assert np.any(final[last.cells] != last.resistance)  # the last batch not yet stored
        final[last.cells] = last.resistance
        for cell, (_, r) in record.readings().by_cell().items():
            assert r[-1] == pytest.approx(final[cell], rel=1e-6), cell


def test_a_crossbar_url_with_record_records_the_run(tmp_path):
    path = tmp_path / "url.sqlite"
    net = network(f"emulator://?rows={N}&cols={2 * N}&seed=1&record={path}")
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(0.1)
    with Record.open(path) as record:
        assert record.shape == (N, 2 * N) and "EmulatedCrossbar" in record.identity
        assert record.counts()["apply"] > 20
