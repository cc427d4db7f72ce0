"""End to end with learning: the same seeded mPES Nengo run in process, through SerialCrossbar ->
pseudo-terminal -> service, and through VisaCrossbar -> TCP -> service, ends with exactly the
same weights and devices."""

import os
import signal
import subprocess
import sys
import time
from typing import Any

import nengo
import numpy as np
import pytest
from memristor_hil.drivers import SerialCrossbar, VisaCrossbar

from memristor_hil import Crossbar, mPES, open_crossbar

N_PRE = N_POST = 10
URL = f"emulator://?rows={N_POST}&cols={2 * N_PRE}&seed=5&sigma=0.15&noise=0.05"


def mpes_network(crossbar: Crossbar, pulses: str = "learning_rate") -> tuple[nengo.Network, Any]:
    """A seeded 10x10 mPES network on ``crossbar`` and its weight probe (every 10 ms)."""
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
    return net, p_weights


def mpes_run(
    crossbar: Crossbar, sim_time: float = 0.2, pulses: str = "learning_rate"
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 10x10 mPES run on ``crossbar``: the weights probed every 10 ms, and the
    devices' resistances at the end."""
    net, p_weights = mpes_network(crossbar, pulses)
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


HOST_SCRIPT = """
import sys
import nengo
from memristor_hil.drivers import SerialCrossbar, VisaCrossbar
from memristor_hil.lab.recording import RecordingCrossbar
from test_hil_mpes import mpes_network
driver = SerialCrossbar if {transport!r} == "serial" else VisaCrossbar
xbar = RecordingCrossbar(driver({address!r}, timeout=5), {record!r})
net, _ = mpes_network(xbar)
with nengo.Simulator(net, progress_bar=False) as sim:
    while True:
        sim.step()
        print(sim.n_steps, flush=True)
"""


@pytest.mark.parametrize("transport", ["serial", "visa"])
def test_a_host_killed_with_a_batch_in_flight_loses_nothing_acknowledged(
    transport, tmp_path, crossbar_service_factory
):
    """kill -9 of the host while mPES overlaps a step's round trip with the next step: over
    TCP the lost link makes the device safe; a new host takes over; the record holds every
    read-back the run collected, in the in-process run's order, and the device holds the
    in-process state after those batches or after one more (the batch in flight, applied but
    never collected)."""
    from memristor_hil.lab.record import Record

    url = f"{URL}&dtype=float32"
    service = crossbar_service_factory(
        "--serial" if transport == "serial" else "--tcp=127.0.0.1:0", url=url
    )
    path = tmp_path / "killed.sqlite"
    address = service.where if transport == "serial" else service.visa_url.split("://", 1)[1]
    script = HOST_SCRIPT.format(transport=transport, address=address, record=str(path))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    try:
        host = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
        )
        try:
            steps = 0
            while steps < 60:
                line = host.stdout.readline()
                assert line, "the host stopped early"
                steps = int(line)
        finally:
            host.send_signal(signal.SIGKILL)
            host.wait(10)
            host.stdout.close()
        if transport == "visa":  # the TCP connection closed: the claim ends, outputs go safe
            deadline = time.monotonic() + 10
            while "outputs safe" not in service.stderr and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "outputs safe" in service.stderr
        with Record.open(path) as record:
            recorded = list(record.batches())
        driver = SerialCrossbar if transport == "serial" else VisaCrossbar
        with driver(address, timeout=5, takeover=True) as xbar:
            device = xbar.read_all()
    finally:
        service.kill()
    # the in-process run's batches, and the devices after each
    with open_crossbar(url) as local:
        want = [local.read_all()]
        replay = _BatchLog(local)
        net, _ = mpes_network(replay)
        with nengo.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(steps + 20)
            sim.step()
        want += replay.states
    # every step up to the one before the last printed was collected, so recorded
    assert len(recorded) >= steps - 2 > 50
    for event, batch in zip(recorded, replay.batches, strict=False):
        assert event.error is None
        assert np.array_equal(event.rows, batch.rows) and np.array_equal(event.cols, batch.cols)
        assert np.array_equal(event.pulses, np.broadcast_to(batch.pulses, event.pulses.shape))
    k = len(recorded)
    assert any(device.tobytes() == want[n].astype(device.dtype).tobytes() for n in (k, k + 1))


class _BatchLog(Crossbar):
    """Delegates to a crossbar and keeps every batch applied and the devices after it."""

    def __init__(self, inner: Crossbar) -> None:
        super().__init__(inner.shape, limits=inner.limits, identity=inner.identity)
        self.inner = inner
        self.batches: list = []
        self.states: list[np.ndarray] = []

    def _apply(self, batch, cells, read_back):
        from memristor_hil import PulseBatch

        result = self.inner.apply(batch, read_back=read_back)
        self.batches.append(
            PulseBatch(batch.rows.copy(), batch.cols.copy(), batch.pulses.copy(), batch.voltage)
        )
        self.states.append(self.inner.read_all())
        return result

    def _read(self, flat):
        rows, cols = np.divmod(flat, self.shape[1])
        return self.inner.read(rows, cols)
