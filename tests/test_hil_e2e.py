"""End to end: drivers -> real transports -> the emulator service in its own process.

Serial runs over a pseudo-terminal, VISA over a TCP socket through pyvisa-py; every service is a
subprocess started with ``python -m memristor_hil emulate`` and killed in a finalizer.
"""

import os
import re
import signal
import socket
import struct
import time
import zlib

import numpy as np
import pytest
import serial
from memristor_hil.drivers import SerialCrossbar, VisaCrossbar
from memristor_hil.drivers.serial import open_serial
from memristor_hil.drivers.visa import open_visa
from reference_model import ReferenceCrossbar
from workloads import (
    BOARD_IDENTITY,
    COLS,
    EMULATOR_URL,
    ROWS,
    FirmwareProcess,
    assert_bitwise_equal,
    run_workload,
    workload,
)

from memristor_hil import (
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    PulseBatch,
    SafetyLimitError,
    SafetyLimits,
    open_crossbar,
)
from memristor_hil.errors import ConnectionLostError, UnsupportedError
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.framing import FrameDecoder, encode_frame
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.protocol.scpi import encode_command, read_block
from memristor_hil.testing import EmulatorService

STEPS = 120


#: "serial" and "visa" reach the Python service; "firmware" is the serial driver against the
#: reference C firmware (firmware/, its sanitizer build), in the same test functions.
SERIAL_BACKENDS = ["serial", "firmware"]
ALL_BACKENDS = ["serial", "visa", "firmware"]


@pytest.fixture
def services(crossbar_service_factory):
    """Start services with ``services(*args)`` (``firmware=True``: the C firmware); the plugin
    stops the Python services, and the firmware is killed when the test ends and its
    sanitizers must have found nothing."""
    firmwares: list[FirmwareProcess] = []

    def start(*args: str, url: str = EMULATOR_URL, firmware: bool = False) -> EmulatorService:
        if not firmware:
            return crossbar_service_factory(*args, url=url)
        service = FirmwareProcess(*args, url=url)
        firmwares.append(service)
        return service

    yield start
    for service in firmwares:
        service.kill()
    for service in firmwares:
        service.assert_clean()


def start_backend(services, transport: str, *args: str, port: int = 0) -> EmulatorService:
    return services(*transport_args(transport, port), *args, firmware=transport == "firmware")


@pytest.fixture(scope="module")
def in_process() -> list[np.ndarray]:
    """What the workload gives on the in-process emulator."""
    with open_crossbar(EMULATOR_URL) as xbar:
        return run_workload(xbar, STEPS)


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    """What the workload gives on the firmware's model, in Python (the same libm pow)."""
    return run_workload(ReferenceCrossbar(ROWS, COLS), STEPS)


def expected(transport: str, in_process, reference) -> list[np.ndarray]:
    return reference if transport == "firmware" else in_process


def connect(service: EmulatorService, transport: str, **options):
    """The driver itself (open_crossbar may wrap it, e.g. to record; see test_urls_open_drivers)."""
    if transport in ("serial", "firmware"):
        return SerialCrossbar(service.where, **options)
    return VisaCrossbar(service.visa_url.split("://", 1)[1], **options)


def transport_args(transport: str, port: int = 0) -> list[str]:
    if transport in ("serial", "firmware"):
        return ["--serial"]
    return ["--tcp", f"127.0.0.1:{port}"]


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_workload_through_the_service_equals_the_in_process_run(
    services, in_process, reference, transport
):
    service = start_backend(services, transport)
    with connect(service, transport, timeout=5) as xbar:
        assert isinstance(xbar, VisaCrossbar if transport == "visa" else SerialCrossbar)
        assert xbar.shape == (12, 10)
        assert (BOARD_IDENTITY if transport == "firmware" else "EmulatedCrossbar") in (
            xbar.identity
        )
        got = run_workload(xbar, STEPS)
        assert xbar.stats["retries"] == 0
    assert_bitwise_equal(got, expected(transport, in_process, reference))
    assert "outputs safe" in service.stderr  # close() left the outputs safe


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_injected_faults_do_not_change_the_final_state(services, in_process, reference, transport):
    in_process = expected(transport, in_process, reference)
    service = start_backend(
        services,
        transport,
        "--corrupt=0.01",
        "--drop-reply=0.01",
        "--drop-byte=0.01",
        "--fault-seed=3",
    )
    with connect(service, transport, timeout=0.3, retries=6) as xbar:
        got = run_workload(xbar, STEPS)
        # reads are repeated too, so run the read-heavy tail again to give faults a chance
        for _ in range(STEPS):
            np.testing.assert_array_equal(xbar.read_all(), in_process[-1])
        retries = xbar.stats["retries"]
    assert_bitwise_equal(got, in_process)
    assert retries > 0, "no fault was injected: the test would prove nothing"
    service.stop()
    assert "faults injected" in service.stderr


@pytest.mark.parametrize("transport", SERIAL_BACKENDS)
def test_malformed_frames_get_error_replies_and_change_nothing(services, transport):
    service = start_backend(services, transport)
    with connect(service, "serial", timeout=5) as xbar:
        before = xbar.read_all()
    port = serial.serial_for_url(service.where, timeout=2)
    decoder = FrameDecoder()

    def exchange(data: bytes) -> list[wire.Reply]:
        port.write(data)
        replies: list[wire.Reply] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            decoder.feed(port.read(max(1, port.in_waiting)))
            replies += [wire.decode_reply(m) for m in decoder.events() if isinstance(m, bytes)]
            if replies and not port.in_waiting:
                time.sleep(0.05)
                if not port.in_waiting:
                    break
        return replies

    me = 0x7E57
    claimed = exchange(encode_frame(wire.encode_request(1, Op.CLAIM, b"\x00", me)))
    assert [r.status for r in claimed] == [Status.OK]
    apply_out_of_range = wire.encode_request(
        1,
        Op.APPLY,
        struct.pack("<BBII", 0, 1, 1, 9999) + b"\x05" + struct.pack("<dd", 0.1, 1e-6),
        me,
    )
    good = encode_frame(wire.encode_request(2, Op.APPLY, b"", me))
    damaged = bytearray(encode_frame(wire.encode_request(3, Op.READ_ALL)))
    damaged[-6] ^= 0xFF
    cases = [
        (b"\x00garbage\xa5 not a frame", Status.FRAME),
        (bytes(damaged), Status.FRAME),
        (encode_frame(b"\x01\x00"), Status.MALFORMED),  # shorter than a request header
        (encode_frame(wire.encode_request(4, 0x7F)), Status.UNKNOWN_COMMAND),
        (encode_frame(apply_out_of_range), Status.OUT_OF_RANGE),
        (good[:-3] + encode_frame(wire.encode_request(5, Op.READ_ALL, b"x")), Status.FRAME),
    ]
    for data, status in cases:
        replies = exchange(data)
        assert replies, f"no reply to {data!r}"
        assert all(r.status != Status.OK for r in replies)
        assert replies[0].status == status, (data, replies)
    released = exchange(encode_frame(wire.encode_request(9, Op.CLAIM, b"\x02", me)))
    assert [r.status for r in released] == [Status.OK]
    port.close()
    with connect(service, "serial", timeout=5) as xbar:
        assert xbar.read_all().tobytes() == before.tobytes()
        code, message = xbar.next_error()
        assert code < 0 and message


@pytest.mark.parametrize("transport", SERIAL_BACKENDS)
def test_a_partial_frame_costs_the_idle_timeout_not_the_link(services, transport):
    """Issue 9 item 2: a valid header announcing more bytes than ever arrive (a client killed
    mid-write) used to swallow every later request. The service drops it after the documented
    idle timeout, answers FRAME, and serves the next client at once."""
    from memristor_hil.protocol.framing import FRAME_IDLE_TIMEOUT

    service = start_backend(services, transport)
    port = serial.serial_for_url(service.where, timeout=0.05)
    port.write(encode_frame(b"\x00" * 5000)[:200])  # killed mid-write
    decoder = FrameDecoder()
    t0 = time.monotonic()
    replies: list[wire.Reply] = []
    while not replies and time.monotonic() - t0 < 5:
        decoder.feed(port.read(64))
        replies += [wire.decode_reply(m) for m in decoder.events() if isinstance(m, bytes)]
    elapsed = time.monotonic() - t0
    assert [r.status for r in replies] == [Status.FRAME]
    assert FRAME_IDLE_TIMEOUT * 0.9 <= elapsed < FRAME_IDLE_TIMEOUT + 1.0
    # a request right behind a partial frame is found by the hunt once the frame expires
    port.write(encode_frame(b"\x00" * 5000)[:200] + encode_frame(wire.encode_request(7, Op.SAFE)))
    replies = []
    while len(replies) < 2 and time.monotonic() - t0 < 10:
        decoder.feed(port.read(64))
        replies += [wire.decode_reply(m) for m in decoder.events() if isinstance(m, bytes)]
    assert [(r.status, r.op) for r in replies] == [(Status.FRAME, 0), (Status.OK, Op.SAFE)]
    port.close()
    with connect(service, "serial", timeout=1, retries=0) as xbar:
        assert xbar.shape == (12, 10)


def test_malformed_scpi_gets_errors_and_changes_nothing(services):
    service = services("--tcp", "127.0.0.1:0")
    with open_crossbar(EMULATOR_URL) as fresh:
        before = fresh.read_all()
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"FOO:BAR 1,2\n\xff\xfe\x00\n" + b"X" * 300 + b"\n*IDN?\n")
        assert b"EmulatedCrossbar" in stream.readline()
        sock.sendall(b"SYST:ERR?\n")
        assert stream.readline().startswith(b"-113,")
        line = bytearray(encode_command(Op.APPLY, wire.encode_request(9, Op.APPLY, b"\x00" * 20)))
        line[-3] ^= 0x55  # damage the block's CRC
        sock.sendall(bytes(line))
        reply = wire.decode_reply(read_block(stream.read)[:-4])
        assert reply.status == Status.FRAME
        sock.sendall(b"XBAR:APPL? #9999999999\n*OPC?\n")
        reply = wire.decode_reply(read_block(stream.read)[:-4])
        assert reply.status == Status.FRAME
        assert stream.readline() == b"1\n"
    with connect(service, "visa", timeout=5) as xbar:
        assert xbar.read_all().tobytes() == before.tobytes()


@pytest.mark.parametrize("transport", ["serial", "visa"])
def test_killed_service_gives_a_clear_error_and_restarts_from_its_state(
    services, in_process, transport, tmp_path
):
    state = tmp_path / "state.npz"
    first = services(*transport_args(transport), "--state", str(state), "--save-interval=0")
    half = STEPS // 2
    xbar = connect(first, transport, timeout=0.3, retries=2)
    try:
        head = run_workload(xbar, half)[:-1]
        first.stop(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises((CrossbarTimeoutError, ConnectionLostError)) as info:
            run_workload(xbar, STEPS, start=half)
        assert time.monotonic() - t0 < 10
        assert isinstance(info.value, CrossbarError)
        port = first.port if transport == "visa" else 0
        second = services(*transport_args(transport, port), "--state", str(state))
        assert "restored" in second.stderr
        if transport == "serial":  # a new pseudo-terminal: open it
            xbar.close()
            xbar = connect(second, transport, timeout=5)
        # the VISA driver reconnects by itself to the restarted service on the same port
        tail = run_workload(xbar, STEPS, start=half)
    finally:
        xbar.close()
    assert_bitwise_equal(head + tail, in_process)


def test_clean_stop_saves_everything(services, tmp_path):
    state = tmp_path / "state.npz"
    first = services("--serial", "--state", str(state), "--save-interval=3600")
    with connect(first, "serial", timeout=5) as xbar:
        run_workload(xbar, 20)
        expected = xbar.read_all()
    assert first.stop(signal.SIGINT) == 0
    second = services("--serial", "--state", str(state))
    with connect(second, "serial", timeout=5) as xbar:
        assert xbar.read_all().tobytes() == expected.tobytes()


def test_a_crash_loses_at_most_the_last_save_interval(services, tmp_path):
    state = tmp_path / "state.npz"
    first = services("--tcp", "127.0.0.1:0", "--state", str(state), "--save-interval=0.2")
    with connect(first, "visa", timeout=0.5, retries=1) as xbar:
        run_workload(xbar, 20)
        expected = xbar.read_all()
        time.sleep(0.6)  # more than one interval with no traffic: the change must be saved
        first.stop(signal.SIGKILL)
    second = services("--tcp", "127.0.0.1:0", "--state", str(state))
    with connect(second, "visa", timeout=5) as xbar:
        assert xbar.read_all().tobytes() == expected.tobytes()


@pytest.mark.parametrize("transport", SERIAL_BACKENDS)
def test_driver_errors_are_clear(services, tmp_path, transport):
    service = start_backend(services, transport)
    with connect(service, "serial", timeout=5) as xbar:
        sent = xbar.stats["commands"]
        with pytest.raises(SafetyLimitError):
            xbar.apply(PulseBatch([0], [0], voltage=5.0))
        assert xbar.stats["commands"] == sent  # refused before anything was sent
        with pytest.raises(DeviceError, match="RESET"):  # the device's own message
            xbar.apply(PulseBatch([0], [0], voltage=-0.5))
        code, message = xbar.next_error()
        assert code == -200 and "RESET" in message
    narrow = SafetyLimits(v_min=-1.0, v_max=1.0, max_pulses=100)
    with SerialCrossbar(service.where, timeout=5, limits=narrow) as xbar:
        assert xbar.limits == narrow
        with pytest.raises(SafetyLimitError):
            xbar.apply(PulseBatch([0], [0], pulses=101))
    with pytest.raises(DeviceError, match="wider"):
        SerialCrossbar(service.where, timeout=5, limits=SafetyLimits(v_max=9.0))
    master, slave = os.openpty()  # a port where nobody answers
    try:
        t0 = time.monotonic()
        with pytest.raises(CrossbarTimeoutError, match="no reply"):
            SerialCrossbar(os.ttyname(slave), timeout=0.1, retries=2)
        assert time.monotonic() - t0 < 2
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(ConnectionLostError):
        SerialCrossbar(str(tmp_path / "no-such-port"), timeout=0.1)
    with pytest.raises(ValueError, match=r"bad (serial:// )?option"):
        open_serial(f"{service.serial_url}?timeout=soon")
    with open_serial(f"{service.serial_url}?timeout=2.5&retries=1") as xbar:
        assert (xbar.timeout, xbar.retries) == (2.5, 1)


@pytest.mark.parametrize("transport", ["serial", "visa"])
def test_urls_open_drivers(services, transport, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMRISTOR_HIL_RECORDS", str(tmp_path))  # should anything record
    service = services(*transport_args(transport))
    url = service.serial_url if transport == "serial" else service.visa_url
    with open_crossbar(f"{url}?timeout=5") as xbar, open_crossbar(EMULATOR_URL) as fresh:
        assert xbar.shape == fresh.shape and xbar.identity == fresh.identity
        assert xbar.read_all().tobytes() == fresh.read_all().tobytes()
    opener = open_serial if transport == "serial" else open_visa
    with opener(f"{url}?timeout=5&retries=0") as xbar:
        assert isinstance(xbar, SerialCrossbar if transport == "serial" else VisaCrossbar)
        assert xbar.retries == 0
    with pytest.raises(ValueError, match="unknown visa"):
        open_visa(f"{service.visa_url}?speed=3" if transport == "visa" else "visa://X?speed=3")


def test_emulate_shape_and_seed_options_override_the_url(services):
    from memristor_hil.emulator.url import open_emulator

    service = services("--serial", "--rows", "3", "--cols", "4", "--seed", "2")
    with connect(service, "serial", timeout=5) as xbar:
        expected = open_emulator(EMULATOR_URL, rows=3, cols=4, seed=2)
        assert xbar.shape == (3, 4)
        assert xbar.read_all().tobytes() == expected.read_all().tobytes()


def test_emulate_refuses_non_loopback_without_allow_remote(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "memristor_hil", "emulate", "--tcp", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert re.search(r"not a loopback address.*--allow-remote", result.stderr)


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_two_hosts_are_never_merged_and_a_dead_host_can_be_taken_over(services, transport):
    """Issue 9 item 4: the second host is refused with a clear error; after it takes over, the
    first host's batches are refused; so both never believe their batch was applied.

    On a serial line the port itself is opened exclusively (issue 9 item 5), so a second
    program is refused at the port; once the first host's port closes, the device sees the
    hang-up and its claim ends (issue 25, defect 3): a plain open succeeds at once.
    """
    service = start_backend(services, transport)
    first = connect(service, transport, timeout=2)
    try:
        if transport != "visa":
            with pytest.raises(ConnectionLostError, match="port in use"):
                connect(service, transport, timeout=2)
            first._session.link.close()  # the first host dies: its port closes
            with open_when_free(service, transport) as plain:  # the claim went with it
                assert plain.read_all().shape == (12, 10)
            return
        with pytest.raises(DeviceError, match=r"controlled by another host .* since"):
            connect(service, transport, timeout=2)
        with connect(service, transport, timeout=2, takeover=True) as second:
            before = second.read_all()
            with pytest.raises(DeviceError, match="controlled by another host") as refused:
                first.apply(PulseBatch([0], [0], pulses=100), read_back=True)
            assert refused.value.status == Status.BUSY
            assert second.read_all().tobytes() == before.tobytes()  # nothing was applied
            after = second.apply(PulseBatch([0], [0], pulses=100), read_back=True)
            assert after[0] < before[0, 0]
    finally:
        first.close()
    with connect(service, transport, timeout=2) as third:  # released on close: free again
        assert third.read_all()[0, 0] == after[0]


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_a_silent_host_loses_its_claim_after_the_lease_and_keep_alive_renews_it(
    services, transport
):
    """Issue 25, defect 3: a claim is a lease. A host whose link stays open but which sends
    nothing for the lease time (here 1 s) loses its claim; keep_alive() within the lease keeps
    it. Afterwards its next apply claims again when nobody else holds the device, and is
    refused (BUSY, nothing applied) when another host does."""
    service = start_backend(services, transport, "--lease=1")

    def owner(xbar) -> int:  # what IDENTIFY reports (the holder's IDENTIFY would renew it)
        return wire.decode_info(xbar._session.call(Op.IDENTIFY)).owner

    with connect(service, transport, timeout=2) as idle:
        for _ in range(3):  # 1.5 s in all, renewed within each lease
            time.sleep(0.5)
            idle.keep_alive()
        assert owner(idle) == idle.session
        time.sleep(1.3)
        assert owner(idle) == 0
        idle.apply(PulseBatch([0], [0], pulses=1))
        assert idle.stats["reclaims"] == 1
        if transport == "visa":  # a second host, beside the silent one
            time.sleep(1.3)
            with connect(service, transport, timeout=2) as plain:
                before = plain.read_all()
                with pytest.raises(DeviceError, match="controlled by another host"):
                    idle.apply(PulseBatch([0], [0], pulses=100))
                assert plain.read_all().tobytes() == before.tobytes()


@pytest.mark.parametrize("transport", ["visa"])
def test_a_monitor_reads_beside_the_owner_and_cannot_pulse(services, transport):
    """Reads need no claim (docs/protocol.md 5.1): a monitor watches the owner's device, is
    refused pulses before anything is sent, and its close leaves the owner's claim alone."""
    service = start_backend(services, transport)
    with connect(service, transport, timeout=2) as owner:
        owner.apply(PulseBatch([0], [0], pulses=10))
        with connect(service, transport, timeout=2, monitor=True) as monitor:
            np.testing.assert_array_equal(monitor.read_all(), owner.read_all())
            sent = monitor.stats["commands"]
            with pytest.raises(UnsupportedError, match="monitor"):
                monitor.apply(PulseBatch([1], [1]))
            assert monitor.stats["commands"] == sent
        after = owner.apply(PulseBatch([0], [0], pulses=10), read_back=True)  # still the owner
        assert after[0] == owner.read([0], [0])[0]


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_a_device_with_small_bounds_gets_split_batches_with_the_same_result(
    services, in_process, reference, transport
):
    """256-byte messages and 16 cells per command: every batch of more than a few cells is sent
    as several sequenced APPLY parts (and read back in pieces); the result is the same."""
    service = start_backend(services, transport, "--max-message=256", "--max-cells=16")
    with connect(service, transport, timeout=5) as xbar:
        assert (xbar.device_info.max_message, xbar.device_info.max_cells) == (256, 16)
        got = run_workload(xbar, STEPS)
        parts = xbar.stats["split_parts"]
    multi = sum(len(batch) > 16 for batch, _ in workload(STEPS, 0, ROWS, COLS))
    assert parts > 2 * multi > 0
    assert_bitwise_equal(got, expected(transport, in_process, reference))


HOST_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from memristor_hil.drivers import SerialCrossbar
from workloads import workload
with SerialCrossbar({port!r}, timeout=5) as xbar:
    for step, (batch, read_back) in enumerate(workload({steps})):
        xbar.apply(batch, read_back=read_back)
        print(step, flush=True)
"""


def open_when_free(service, transport: str, within: float = 2.0):
    """A plain open (no takeover), tried until ``within`` seconds have passed: the device
    notices a closed link as soon as it is scheduled, a few ms (a new client that opens the
    terminal before it looked hides the hang-up until that client closes in turn)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return connect(service, transport, timeout=2)
        except DeviceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


HOST_SCRIPT_VISA = """
import sys
sys.path.insert(0, {tests!r})
from memristor_hil.drivers import VisaCrossbar
from workloads import workload
with VisaCrossbar({port!r}, timeout=5) as xbar:
    for step, (batch, read_back) in enumerate(workload({steps})):
        xbar.apply(batch, read_back=read_back)
        print(step, flush=True)
"""


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_a_host_killed_mid_workload_leaves_a_consistent_device(services, transport):
    """kill -9 of the controlling host: the device holds the state after some whole number of
    batches; its claim ends with its link (the pty hangs up, the TCP connection closes: issue
    25, defect 3), so a plain open succeeds at once, and finishing the workload from there
    gives exactly the uninterrupted result."""
    import subprocess
    import sys

    service = start_backend(services, transport)
    model = ReferenceCrossbar(ROWS, COLS) if transport == "firmware" else None
    states = []
    with model or open_crossbar(EMULATOR_URL) as local:
        states.append(local.read_all())
        for batch, read_back in workload(STEPS):
            local.apply(batch, read_back=read_back)
            states.append(local.read_all())
    tests = os.path.dirname(__file__)
    where = service.visa_url.split("://", 1)[1] if transport == "visa" else service.where
    script = (HOST_SCRIPT_VISA if transport == "visa" else HOST_SCRIPT).format(
        tests=tests, port=where, steps=STEPS
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        for _ in range(STEPS // 3):
            assert host.stdout.readline(), "the host stopped early"
    finally:
        host.kill()  # SIGKILL: no close, no release, maybe mid-batch
        host.wait(10)
        host.stdout.close()
    with open_when_free(service, transport) as xbar:
        now = xbar.read_all()
        done = [k for k, state in enumerate(states) if state.tobytes() == now.tobytes()]
        assert done and done[0] >= STEPS // 3, "the device holds a state no prefix produced"
        k = done[0]
        if transport == "firmware":  # the model has no noise: a fresh run from state k
            tail = run_workload(xbar, STEPS, start=k)
            assert tail[-1].tobytes() == states[-1].tobytes()


SPLIT_HOST_SCRIPT = """
import os, signal, sys
import numpy as np
from memristor_hil import PulseBatch
from memristor_hil.drivers import {driver}
from memristor_hil.protocol.messages import Op
xbar = {driver}({port!r}, timeout=5)
print(xbar.session, flush=True)
session, answered = xbar._session, []
exchange = session._exchange

def dying_exchange(op, message, *args):  # kill -9 once the third part is answered
    reply = exchange(op, message, *args)
    if op == Op.APPLY:
        answered.append(message)
        if len(answered) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return reply

session._exchange = dying_exchange
batch = np.load({batch!r})
xbar.apply(PulseBatch.from_flat(batch["flat"], {cols}, pulses=batch["pulses"],
                                voltage=batch["voltage"]))
"""


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_a_host_killed_mid_split_batch_is_reported_and_the_next_host_finishes_it(
    services, transport, tmp_path
):
    """Issue 25, defect 3, last clause (docs/protocol.md 5.2): a host is killed (kill -9) after
    the third of several parts of a split batch. Its claim ends with its link; the next host
    is told (a RuntimeWarning and ``interrupted_batch``: the dead host's session, the last part
    and how many entries were applied), applies the remaining entries, and the device holds
    exactly the state of one whole apply: no entry applied twice, none missing."""
    import subprocess
    import sys

    bounds = ("--max-message=256", "--max-cells=16")
    service = start_backend(services, transport, *bounds)
    rng = np.random.default_rng(11)
    flat = rng.choice(ROWS * COLS, 100, replace=False)
    pulses, voltage = rng.integers(1, 50, 100), rng.uniform(0.05, 0.3, 100)
    np.savez(tmp_path / "batch.npz", flat=flat, pulses=pulses, voltage=voltage)

    def entries(k: int, stop: int = 100) -> PulseBatch:
        part = slice(k, stop)
        return PulseBatch.from_flat(flat[part], COLS, pulses=pulses[part], voltage=voltage[part])

    model = ReferenceCrossbar(ROWS, COLS) if transport == "firmware" else None
    with model or open_crossbar(EMULATOR_URL) as local:
        local.apply(entries(0))
        want = local.read_all()
    parts = wire.split_batch(
        entries(0), entries(0).locate((ROWS, COLS), SafetyLimits()), False, False, (256, 16)
    )
    applied = sum(struct.unpack_from("<I", body, 2)[0] for body in parts[:3])
    assert len(parts) > 3
    where = service.visa_url.split("://", 1)[1] if transport == "visa" else service.where
    script = SPLIT_HOST_SCRIPT.format(
        driver="VisaCrossbar" if transport == "visa" else "SerialCrossbar", port=where,
        batch=str(tmp_path / "batch.npz"), cols=COLS,
    )  # fmt: skip
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        dead = int(host.stdout.readline())
        assert host.wait(30) == -signal.SIGKILL
    finally:
        host.kill()
        host.stdout.close()
    with pytest.warns(RuntimeWarning, match=rf"session {dead:08x}.* first {applied} entries"):
        xbar = open_when_free(service, transport)
    with xbar:
        assert xbar.device_info.version == 4
        session, seq, done = xbar.interrupted_batch
        assert (session, done) == (dead, applied)
        assert seq == wire.decode_info(xbar._session.call(Op.IDENTIFY)).last_seq
        xbar.apply(entries(done))  # the rest: split again, in this host's own parts
        assert xbar.read_all().tobytes() == want.tobytes()
        assert wire.decode_info(xbar._session.call(Op.IDENTIFY)).interrupted is None


def test_a_split_apply_cut_by_a_crash_is_resumed_without_applying_any_part_twice(
    services, tmp_path
):
    """The device dies between the parts of a split batch: the error says which parts are
    applied; after a restart (from its state file, on the same port) resume() sends the
    rest with their original sequence numbers, and the result equals one whole apply."""
    import threading

    state = tmp_path / "state.npz"
    bounds = ("--max-message=256", "--max-cells=16")
    first = services("--tcp", "127.0.0.1:0", "--state", str(state), "--save-interval=0",
                     "--latency=0.05", *bounds)  # fmt: skip
    rng = np.random.default_rng(5)
    flat = rng.choice(ROWS * COLS, 100, replace=False)
    batch = PulseBatch.from_flat(flat, COLS, pulses=rng.integers(1, 50, 100),
                                 voltage=rng.uniform(0.05, 0.3, 100))  # fmt: skip
    with open_crossbar(EMULATOR_URL) as local:
        want = local.apply(batch, read_back=True)
        want_all = local.read_all()
    xbar = connect(first, "visa", timeout=0.3, retries=1)
    try:
        caught: list[BaseException] = []

        def run() -> None:
            try:
                xbar.apply(batch, read_back=True)
            except CrossbarError as exc:
                caught.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.25)  # a few parts in
        first.stop(signal.SIGKILL)
        worker.join(30)
        assert caught, "the apply should have failed with the device gone"
        assert re.search(r"parts 1\.\.\d+ of \d+ are applied.*resume\(\)", str(caught[0]))
        with pytest.raises(CrossbarError, match="unfinished"):
            xbar.apply(batch)
        services("--tcp", f"127.0.0.1:{first.port}", "--state", str(state), *bounds)
        got = xbar.resume()
        assert xbar.stats["reclaims"] >= 1  # the restarted device forgot the claim
        np.testing.assert_array_equal(got, want)
        assert xbar.read_all().tobytes() == want_all.tobytes()
    finally:
        xbar.close()


def _apply_body(cells, pulses=5, volts=0.1, width=1e-6, flags=0x01, size=1, bitmap=None):
    """A hand-built APPLY body (so it can be wrong on purpose)."""
    count = len(cells) if bitmap is None else bitmap[2]
    head = struct.pack("<BBI", flags | (0x02 if bitmap else 0), size, count)
    where = (
        struct.pack("<II", *bitmap[:2]) + bitmap[3]
        if bitmap
        else struct.pack(f"<{len(cells)}I", *cells)
    )
    return head + where + pulses.to_bytes(size, "little") + struct.pack("<dd", volts, width)


@pytest.mark.parametrize("transport", SERIAL_BACKENDS)
def test_conformance_table_every_bad_request_gets_its_status_and_changes_nothing(
    services, transport
):
    """The same bytes get the same status from the Python service and the C firmware, in the
    order of checks of docs/protocol.md 1.1; none of them changes the devices."""
    service = start_backend(services, transport, "--max-message=256", "--max-cells=40")
    me, other = 0x600D, 0xBAD
    with connect(service, "serial", timeout=5) as xbar:
        before = xbar.read_all()
    port = serial.serial_for_url(service.where, timeout=2)
    decoder = FrameDecoder()

    def ask(message: bytes) -> wire.Reply:
        port.write(message if message[:2] == b"\xa5\x5a" else encode_frame(message))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            decoder.feed(port.read(max(1, port.in_waiting)))
            for event in decoder.events():
                if isinstance(event, bytes):
                    return wire.decode_reply(event)
        raise AssertionError(f"no reply to {message.hex()}")

    def req(seq, op, body=b"", session=me):
        return wire.encode_request(seq, op, body, session)

    limits = SafetyLimits()
    empty_apply = req(10, Op.APPLY, _apply_body([]))
    cases = [
        (b"\x01\x00\x00\x00\x04", Status.MALFORMED),  # shorter than a header
        (req(1, 0x7F), Status.UNKNOWN_COMMAND),
        (req(1, Op.IDENTIFY, b"x"), Status.MALFORMED),
        (req(2, Op.CLAIM, b"\x05"), Status.MALFORMED),
        (req(3, Op.CLAIM, b"\x00", 0), Status.MALFORMED),
        (req(3, Op.CLAIM, b"\x00"), Status.OK),
        (req(4, Op.CLAIM, b"\x00", other), Status.BUSY),
        (req(0, Op.APPLY, _apply_body([1])), Status.MALFORMED),  # sequence 0
        (req(5, Op.APPLY, _apply_body([1]), other), Status.BUSY),
        (req(5, Op.APPLY, _apply_body([999])[:-3]), Status.MALFORMED),  # truncated first
        (req(5, Op.APPLY, _apply_body([999])), Status.OUT_OF_RANGE),
        (req(5, Op.APPLY, _apply_body([], bitmap=(0, 3, 2, b"\x0b"))), Status.MALFORMED),  # pad
        (req(5, Op.APPLY, _apply_body([], bitmap=(118, 4, 1, b"\x08"))), Status.OUT_OF_RANGE),
        (req(5, Op.APPLY, _apply_body([1], volts=0.0)), Status.SAFETY),
        (req(5, Op.APPLY, _apply_body([1], volts=5.0)), Status.SAFETY),
        (req(5, Op.APPLY, _apply_body([1], pulses=70000, size=4)), Status.SAFETY),
        (req(5, Op.APPLY, _apply_body([1], flags=0x41)), Status.MALFORMED),
        (req(5, Op.APPLY, _apply_body(list(range(41)))), Status.TOO_LARGE),  # > max_cells
        (req(5, Op.APPLY, _apply_body(list(range(31)))), Status.TOO_LARGE),  # reply > 256 B
        (req(6, Op.READ, struct.pack("<II", 2, 1)), Status.MALFORMED),
        (req(6, Op.READ, wire.encode_cells(np.array([120]))), Status.OUT_OF_RANGE),
        (req(6, Op.READ, wire.encode_cells(np.array([], int))), Status.OK),
        (req(6, Op.READ_REGION, wire.encode_region(11, 0, 2, 1)), Status.OUT_OF_RANGE),
        (req(6, Op.READ_REGION, wire.encode_region(12, 10, 0, 0)), Status.OK),
        (req(6, Op.READ_ALL), Status.TOO_LARGE),  # 120 cells > 40
        (req(7, Op.CONFIGURE, wire.encode_limits(12, 10, SafetyLimits(v_max=9))), Status.SAFETY),
        (req(7, Op.CONFIGURE, wire.encode_limits(3, 10, limits)), Status.OUT_OF_RANGE),
        (req(7, Op.CONFIGURE, wire.encode_limits(12, 10, limits) + b"\x00"), Status.MALFORMED),
        (empty_apply, Status.OK),  # an empty batch: sequenced, changes nothing
        (empty_apply, Status.OK),  # its retry: answered from the window
        (req(10, Op.APPLY, _apply_body([1])), Status.SEQUENCE),  # same number, other bytes
        (req(8, Op.APPLY, _apply_body([1])), Status.SEQUENCE),  # older than the last
        (req(11, Op.SAFE), Status.OK),
    ]
    got = []
    for message, status in cases:
        reply = ask(message)
        got.append((message.hex(), reply.status))
        assert reply.status == status, (message.hex(), reply, status)
        if len(message) >= 9 and status != Status.MALFORMED or reply.seq:
            assert reply.session == int.from_bytes(message[5:9], "little")
    # a frame header announcing 300 bytes (> max_message 256) is refused, hunted away: FRAME
    head = b"\xa5\x5a" + struct.pack("<I", 300)
    frame = ask(head + struct.pack("<I", zlib.crc32(head)))
    assert (frame.status, frame.seq, frame.session) == (Status.FRAME, 0, 0)
    assert ask(req(13, Op.CLAIM, b"\x02")).status == Status.OK
    port.close()
    with connect(service, "serial", timeout=5) as xbar:
        assert xbar.read_all().tobytes() == before.tobytes()
        assert xbar.device_info.last_seq == 10


@pytest.mark.parametrize("transport", SERIAL_BACKENDS)
def test_interrupted_batch_rules_are_the_same_in_the_service_and_the_firmware(services, transport):
    """docs/protocol.md 5.2, byte for byte over the serial line: a release mid batch records
    it; its own host, back, continues it with the next number and the count goes on; a take
    over reports it; 0x40 with read-back is MALFORMED and clears nothing; the next executed
    APPLY clears it."""
    service = start_backend(services, transport, "--max-message=256", "--max-cells=16")
    me, other = 0x600D, 0xBAD
    port = serial.serial_for_url(service.where, timeout=2)
    decoder = FrameDecoder()

    def ask(seq, op, body=b"", session=me) -> wire.Reply:
        port.write(encode_frame(wire.encode_request(seq, op, body, session)))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            decoder.feed(port.read(max(1, port.in_waiting)))
            for event in decoder.events():
                if isinstance(event, bytes):
                    return wire.decode_reply(event)
        raise AssertionError(f"no reply to {op!r}")

    def ok(seq, op, body=b"", session=me) -> wire.Reply:
        reply = ask(seq, op, body, session)
        assert reply.status == Status.OK, (reply, wire.decode_error(reply.body))
        return reply

    def reported(reply=None) -> tuple | None:
        return wire.decode_info((reply or ok(1, Op.IDENTIFY)).body).interrupted

    batch = PulseBatch.from_flat(np.arange(40), COLS, pulses=3)
    cells = batch.locate((ROWS, COLS), SafetyLimits())
    parts = wire.split_batch(batch, cells, False, False, (256, 16), True)
    assert len(parts) == 3 and parts[0][0] & 0x40 and parts[1][0] & 0x40
    ok(2, Op.CLAIM, b"\x00")
    ok(10, Op.APPLY, parts[0])
    assert reported() is None  # in progress, not interrupted
    ok(3, Op.CLAIM, b"\x02")  # released mid batch
    assert reported() == (me, 10, 16)
    ok(4, Op.CLAIM, b"\x00")
    assert reported() == (me, 10, 16)  # reported to its own host too
    ok(11, Op.APPLY, parts[1])  # its host resumes it with the next number
    assert reported() is None
    taken = ok(5, Op.CLAIM, b"\x01", other)
    assert reported(taken) == (me, 11, 32)
    bad = bytes([parts[2][0] | 0x41]) + parts[2][1:]
    assert ask(20, Op.APPLY, bad, other).status == Status.MALFORMED
    assert reported() == (me, 11, 32)  # not executed: still reported
    ok(20, Op.APPLY, parts[2], other)  # the rest, by the next host
    assert reported() is None
    ok(6, Op.CLAIM, b"\x02", other)
    assert reported() is None  # a finished batch is not interrupted
    port.close()


def run_workload_submitted(xbar, steps: int) -> list[np.ndarray]:
    """:func:`run_workload` through ``submit``: every read-back is collected with ``result()``,
    half of them only after the next call on the crossbar (which must collect them first)."""
    pending = []
    for step, (batch, read_back) in enumerate(workload(steps, 0, *xbar.shape)):
        handle = xbar.submit(batch, read_back=read_back)
        if step % 2:
            handle.result()  # at once
        if read_back:
            pending.append(handle)
    final = xbar.read_all()  # collects the last one
    assert all(handle.done for handle in pending)
    return [handle.result() for handle in pending] + [final]


@pytest.mark.parametrize("transport", ALL_BACKENDS)
def test_submitted_batches_give_the_in_process_results_bit_for_bit(services, reference, transport):
    """Crossbar.submit sends at once and collects later; float32 devices answer through
    protocol version 3's native read-back (float32 arrays, as in-process), the version-2
    firmware in float64 as always."""
    url = EMULATOR_URL if transport == "firmware" else EMULATOR_URL + "&dtype=float32"
    if transport == "firmware":
        want = reference
    else:
        with open_crossbar(url) as xbar:
            want = run_workload(xbar, STEPS)
    service = services(*transport_args(transport), url=url, firmware=transport == "firmware")
    with connect(service, transport, timeout=5) as xbar:
        got = run_workload_submitted(xbar, STEPS)
        assert xbar.stats["retries"] == 0
    assert_bitwise_equal(got[:-1], want[:-1])
    assert got[0].dtype == (np.float64 if transport == "firmware" else np.float32)
    assert got[-1].astype(np.float64).tobytes() == want[-1].astype(np.float64).tobytes()


def test_visa_sends_each_command_at_once(services):
    # pyvisa-py writes in 4096-byte chunks; with Nagle's algorithm on, a larger command's last
    # chunk waited for the service's delayed ACK (up to 40 ms): the default policy's per-cell
    # batches (about 450 cells at 100x100) took 26 ms a step over VISA instead of about 1.3 ms
    service = start_backend(services, "visa")
    xbar = connect(service, "visa")
    try:
        for _ in range(2):  # as opened, and after a reopen
            sock = xbar._session.link.visa.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            xbar._session.link.reopen()
        rows, cols = np.divmod(np.arange(600), COLS)  # a command well over 4096 bytes
        batch = PulseBatch(rows % ROWS, cols, pulses=np.arange(600) % 7 + 1)
        assert xbar.apply(batch, read_back=True).shape == (600,)
    finally:
        xbar.close()


# ---------------------------------------------------------------------- issue 25, defect 1
class _Proxy:
    """Sits between a driver and a service and loses one APPLY request or reply on demand:
    frames on a pseudo-terminal (the lost frame is not forwarded), SCPI on TCP (the connection
    is cut where the lost bytes were, so they never arrive)."""

    def __init__(self, service: EmulatorService, transport: str) -> None:
        import threading

        self.lose: str | None = None  # "request" or "reply": the next APPLY one is lost
        self._stop = False
        if transport == "serial":
            import tty

            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.where = os.ttyname(self._slave)
            self._up = os.open(service.where, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self._up)
            target = self._pump_frames
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self._service = ("127.0.0.1", service.port)
            self.where = f"TCPIP::127.0.0.1::{self._listener.getsockname()[1]}::SOCKET"
            target = self._pump_tcp
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _pump_frames(self) -> None:
        import select

        from memristor_hil.protocol.framing import FrameFault

        decoders = {self._master: FrameDecoder(), self._up: FrameDecoder()}
        while not self._stop:
            for fd in select.select(list(decoders), [], [], 0.05)[0]:
                try:
                    decoders[fd].feed(os.read(fd, 1 << 16))
                except OSError:
                    continue
                direction, to = ("request", self._up) if fd == self._master else ("reply", None)
                for message in decoders[fd].events():
                    if isinstance(message, FrameFault):
                        continue
                    if message[4] == Op.APPLY and self.lose == direction:
                        self.lose = None
                        continue
                    os.write(to if to is not None else self._master, encode_frame(message))

    def _pump_tcp(self) -> None:
        import select

        pairs: dict[socket.socket, socket.socket] = {}
        clients: set[socket.socket] = set()
        while not self._stop:
            ready = select.select([self._listener, *pairs], [], [], 0.05)[0]
            for sock in ready:
                if sock is self._listener:
                    client, _ = sock.accept()
                    upstream = socket.create_connection(self._service)
                    pairs[client], pairs[upstream] = upstream, client
                    clients.add(client)
                    continue
                if sock not in pairs:
                    continue
                other = pairs[sock]
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                direction = "request" if sock in clients else "reply"
                if data and self.lose == direction:
                    self.lose, data = None, b""  # cut: these bytes never arrive
                if data:
                    other.sendall(data)
                    continue
                for end in (sock, other):
                    pairs.pop(end, None)
                    clients.discard(end)
                    end.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        if hasattr(self, "_listener"):
            self._listener.close()
        else:
            for fd in (self._master, self._slave, self._up):
                os.close(fd)


@pytest.mark.parametrize("lost", ["request", "reply"])
@pytest.mark.parametrize("transport", ["serial", "visa"])
def test_a_lost_apply_then_a_split_batch_then_another_apply_are_each_applied_once(
    services, transport, lost
):
    """Issue 25, defect 1: an APPLY whose request or reply is lost (no retries left), then a
    batch large enough to be split, then an unrelated apply. The unanswered APPLY stays in the
    driver's outbox with its number and is confirmed first (applied once whether it was lost
    before or after the device executed it); the parts and the third apply get new numbers.
    Before, the third apply reused the unanswered number and was refused with SEQUENCE."""
    service = start_backend(services, transport, "--max-message=256", "--max-cells=16")
    first = PulseBatch([0], [0], pulses=7)
    rng = np.random.default_rng(8)
    split = PulseBatch.from_flat(rng.permutation(ROWS * COLS)[:60], COLS,
                                 pulses=rng.integers(1, 9, 60))  # fmt: skip
    third = PulseBatch([11], [9], pulses=3)
    warm = PulseBatch([0], [1], pulses=2)
    with open_crossbar(EMULATOR_URL) as local:
        for batch in (warm, first, split, third):
            local.apply(batch)
        want = local.read_all()
    proxy = _Proxy(service, transport)
    try:
        kind = SerialCrossbar if transport == "serial" else VisaCrossbar
        with kind(proxy.where, timeout=0.5, retries=0) as xbar:
            xbar.apply(warm)  # the link works; the next APPLY is lost
            proxy.lose = lost
            with pytest.raises((CrossbarTimeoutError, ConnectionLostError), match="unconfirmed"):
                xbar.apply(first)
            assert xbar.unanswered is not None
            xbar.apply(split)
            assert xbar.stats["split_parts"] > 1
            xbar.apply(third)
            assert xbar.unanswered is None
            got = xbar.read_all()
    finally:
        proxy.close()
    assert got.tobytes() == want.tobytes()


def test_split_parts_fill_the_device_bounds_over_the_wire(services):
    """Issue 25, defect 5: a device reporting 1,024-byte messages and 100 cells per command
    gets a 1,000-cell batch (shared pulses, per-cell voltages) in 13 parts of 83 entries (the
    message bound); before, the driver's own arithmetic sent 21 parts of 49."""
    service = start_backend(services, "visa", "--max-message=1024", "--max-cells=100")
    rng = np.random.default_rng(4)
    flat = rng.permutation(ROWS * COLS)[:100]
    batch = PulseBatch.from_flat(np.tile(flat, 10), COLS, pulses=1,
                                 voltage=rng.uniform(0.05, 0.3, 1000))  # fmt: skip
    with open_crossbar(EMULATOR_URL) as local:
        local.apply(batch)
        want = local.read_all()
    with connect(service, "visa", timeout=5) as xbar:
        xbar.apply(batch)
        assert xbar.stats["split_parts"] == 13
        got = xbar.read_all()
    assert got.tobytes() == want.tobytes()
