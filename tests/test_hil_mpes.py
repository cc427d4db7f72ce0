"""End to end with learning: the same seeded mPES Nengo run in process, through SerialCrossbar ->
pseudo-terminal -> service, and through VisaCrossbar -> TCP -> service, ends with exactly the
same weights and devices."""

import time

import nengo
import numpy as np
import pytest
from memristor_hil.drivers import SerialCrossbar, VisaCrossbar

from memristor_hil import Crossbar, mPES, open_crossbar

N_PRE = N_POST = 10
URL = f"emulator://?rows={N_POST}&cols={2 * N_PRE}&seed=5&sigma=0.15&noise=0.05"


def mpes_run(
    crossbar: Crossbar, sim_time: float = 0.2, pulses: str = "learning_rate"
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 10x10 mPES run on ``crossbar``: the weights probed every 10 ms, and the
    devices' resistances at the end."""
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(2 * np.pi * t))
        pre = nengo.Ensemble(N_PRE, 1)
        post = nengo.Ensemble(N_POST, 1)
        nengo.Connection(stim, pre)
        conn = nengo.Connection(
            pre.neurons,
            post.neurons,
            transform=np.zeros((N_POST, N_PRE)),
            learning_rule_type=mPES(crossbar=crossbar, pulses=pulses),
        )
        err = nengo.Node(size_in=1)
        nengo.Connection(post, err, synapse=0.01)
        nengo.Connection(stim, err, transform=-1, synapse=0.01)
        nengo.Connection(err, conn.learning_rule)
        p_weights = nengo.Probe(conn, "weights", sample_every=0.01)
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(sim_time)
    return sim.data[p_weights], crossbar.read_all()


_IN_PROCESS: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def in_process(url: str, pulses: str = "learning_rate") -> tuple[np.ndarray, np.ndarray]:
    if (url, pulses) not in _IN_PROCESS:
        with open_crossbar(url) as xbar:
            _IN_PROCESS[url, pulses] = mpes_run(xbar, pulses=pulses)
    return _IN_PROCESS[url, pulses]


# float32 devices (mPES's default model): the wire carries their resistances as float64, exactly
@pytest.mark.parametrize(
    ("transport", "dtype"), [("serial", "float64"), ("visa", "float64"), ("serial", "float32")]
)
def test_mpes_run_through_the_service_has_the_in_process_weights(
    transport, dtype, crossbar_service_factory
):
    url = f"{URL}&dtype={dtype}"
    service = crossbar_service_factory(
        "--serial" if transport == "serial" else "--tcp=127.0.0.1:0", url=url
    )
    try:
        if transport == "serial":
            xbar = SerialCrossbar(service.where, timeout=5)
        else:
            xbar = VisaCrossbar(service.visa_url.split("://", 1)[1], timeout=5)
        with xbar:
            weights, devices = mpes_run(xbar)
            assert xbar.stats["commands"] > 20  # it really went through the service
    finally:
        service.kill()
    want_weights, want_devices = in_process(url)
    assert not np.array_equal(want_weights[0], want_weights[-1])  # it learned something
    assert weights.tobytes() == want_weights.tobytes()
    assert devices.tobytes() == want_devices.astype(np.float64).tobytes()


@pytest.mark.parametrize("transport", ["serial", "visa"])
def test_a_crossbar_mpes_opened_is_made_safe_when_the_simulator_closes(
    transport, tmp_path, crossbar_service_factory
):
    """Outputs go safe at sim.close(), while the transport is alive; not at garbage collection
    (after a script's end pyvisa's resource manager is gone and the safe command is lost)."""
    service = crossbar_service_factory(
        "--serial" if transport == "serial" else "--tcp=127.0.0.1:0", url=URL
    )
    try:
        url = service.serial_url if transport == "serial" else service.visa_url
        with nengo.Network(seed=1) as net:
            pre = nengo.Ensemble(N_PRE, 1)
            post = nengo.Ensemble(N_POST, 1)
            conn = nengo.Connection(
                pre.neurons,
                post.neurons,
                transform=np.zeros((N_POST, N_PRE)),
                learning_rule_type=mPES(crossbar=f"{url}?record={tmp_path / 'run.sqlite'}"),
            )
            nengo.Connection(nengo.Node(0.5), conn.learning_rule)
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run(0.05)
            xbar = sim.data[conn.learning_rule].crossbar
            assert not xbar.closed
            before = service.stderr.count("outputs safe")
        assert xbar.closed  # leaving the block closed the crossbar mPES opened ...
        deadline = time.monotonic() + 10
        while service.stderr.count("outputs safe") == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.stderr.count("outputs safe") > before  # ... and the device heard SAFE
        del sim, net, conn  # the model is still alive until here: it was not the GC
    finally:
        service.kill()


def test_a_crossbar_the_user_passed_stays_open_after_the_simulator_closes():
    with open_crossbar(URL) as xbar:
        weights, _ = mpes_run(xbar, sim_time=0.02)
        assert not xbar.closed
