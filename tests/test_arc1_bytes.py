"""ArC ONE's exact bytes, pinned in tables (in the manner of PyMeasure's ``expected_protocol``):
a scripted instrument on a real pseudo-terminal expects each row's bytes and answers with its
reply (None: it stays silent)."""

import os
import threading
import time
import tty

import numpy as np
import pytest
from memristor_hil.drivers.arc1 import ArC1Crossbar, encode_batch, encode_masked_read, open_arc1

from memristor_hil import (
    AddressError,
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
    PulseBatch,
    SafetyLimitError,
)


def f32(*values):
    return np.array(values, dtype="<f4").tobytes()


#: Connecting to a 2x3 array at Vread 0.5 V: reset, configure (answer "1"), read settings, version.
CONNECT = [
    (b"00\n", None),
    (b"0\n50\n2\n3\n2\n0\n1\n0.5\n", b"1\n"),
    (b"01\n2\n0.5\n", None),
    (b"999\n", bytes.fromhex("0200 0700")),  # firmware 2.7
]
OPTIONS = {"rows": 2, "cols": 3, "reset_delay": 0, "write_delay": 0, "timeout": 0.3}
#: Before a read is sent again: the firmware version, whose known reply marks where late bytes end.
RESYNC = (b"999\n", bytes.fromhex("0200 0700"))


class ScriptedArC1:
    """Reads what the driver writes on a pty; for each row, waits for exactly its bytes, then
    writes its reply. Whatever arrives is kept in ``received``; a mismatch stops the script."""

    def __init__(self, script):
        self.script = list(script)
        self.received = b""
        self.mismatch = None
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        pending = b""
        while self.script:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.received += data
            pending += data
            while self.script and len(pending) >= len(self.script[0][0]):
                expected, reply = self.script.pop(0)
                got, pending = pending[: len(expected)], pending[len(expected) :]
                if got != expected:
                    self.mismatch = (expected, got)
                    return
                if reply:
                    os.write(self.master, reply)

    def close(self):
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)

    def done(self):
        deadline = time.monotonic() + 5
        while self.script and self.mismatch is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.mismatch is None, f"expected {self.mismatch[0]!r}, got {self.mismatch[1]!r}"
        assert not self.script, f"rows never sent: {self.script}"


@pytest.fixture
def scripted():
    devices = []

    def make(script):
        device = ScriptedArC1(script)
        devices.append(device)
        return device

    yield make
    for device in devices:
        device.close()


def test_connect_apply_read_and_safe_state_on_close(scripted):
    device = scripted(
        [
            *CONNECT,
            # a batch: cell (0, 2) twice at 0.1 V, 1 us; cell (1, 0) once; read back both
            (b"02\n1\n3\n04\n0.1\n1e-06\n04\n0.1\n1e-06\n02\n2\n1\n04\n0.1\n1e-06\n", None),
            (b"2\n2\n2\n3\n2\n1\n3\n2\n1\n", f32(1.5e8, 2.5e7)),
            # a read of every cell, word-major
            (b"2\n1\n2\n3\n", f32(1, 2, 3, 4, 5, 6)),
            (b"00\n", None),  # close: the board is reset, its safe state
        ]
    )
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    assert xbar.identity == "Arc Instruments,ArC ONE,2x3,firmware 2.7"
    r = xbar.apply(PulseBatch([0, 1], [2, 0], pulses=[2, 1]), read_back=True)
    np.testing.assert_array_equal(r, np.float32([1.5e8, 2.5e7]))
    np.testing.assert_array_equal(xbar.read_all(), [[1, 2, 3], [4, 5, 6]])
    xbar.close()
    device.done()


def test_a_read_that_times_out_is_sent_again_but_pulses_never_are(scripted):
    device = scripted(
        [
            *CONNECT,
            (b"02\n1\n1\n04\n-0.2\n5e-07\n", None),
            (b"2\n2\n2\n3\n1\n1\n1\n", None),  # the reply is lost ...
            RESYNC,  # ... the driver resynchronises on the firmware version ...
            (b"2\n2\n2\n3\n1\n1\n1\n", f32(3e6)),  # ... and sends the read (only) again
        ]
    )
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    r = xbar.apply(PulseBatch([0], [0], voltage=-0.2, width=5e-7), read_back=True)
    assert r.tolist() == [np.float32(3e6)]
    assert xbar.stats["retries"] == 1
    device.done()
    xbar._serial.close()


def test_a_late_reply_to_an_abandoned_read_is_never_taken_for_the_next_one(scripted):
    # The first read's answer comes after the driver gave up on it: it arrives just before the
    # resync's version reply. A driver that re-sent the read at once would take 1e6 (the late
    # answer) for the retry's 3e6 and stay one reply behind from then on.
    late = f32(1e6)
    device = scripted(
        [
            *CONNECT,
            (b"2\n2\n2\n3\n1\n1\n1\n", None),  # no answer within the timeout ...
            (b"999\n", late + RESYNC[1]),  # ... it comes late, in order, before the version
            (b"2\n2\n2\n3\n1\n1\n1\n", f32(3e6)),
            (b"2\n2\n2\n3\n1\n1\n2\n", f32(4e6)),
        ]
    )
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    assert xbar.read([0], [0]).tolist() == [3e6]
    assert xbar.read([0], [1]).tolist() == [4e6]  # and the next read is in step
    assert xbar.stats["retries"] == 1
    device.done()
    xbar._serial.close()


def test_a_silent_resync_costs_its_attempt_and_ends_in_a_timeout(scripted):
    # neither the read nor the firmware-version marker is answered: each resync waits one
    # timeout and counts as the attempt, so the read fails after retries + 1 attempts
    device = scripted(
        [
            *CONNECT,
            (b"2\n2\n2\n3\n1\n1\n1\n", None),
            (b"999\n", None),
        ]
    )
    xbar = ArC1Crossbar(device.port, **{**OPTIONS, "retries": 1})
    with pytest.raises(CrossbarTimeoutError, match="resynchronising.*2 attempt"):
        xbar.read([0], [0])
    device.done()
    xbar._serial.close()


def test_a_garbled_reply_is_read_again_then_raises(scripted):
    garbled = f32(np.nan)
    device = scripted(
        [
            *CONNECT,
            (b"2\n2\n2\n3\n1\n2\n2\n", garbled),
            RESYNC,
            (b"2\n2\n2\n3\n1\n2\n2\n", f32(-5.0)),  # negative: garbled too
            RESYNC,
            (b"2\n2\n2\n3\n1\n2\n2\n", garbled),
        ]
    )
    xbar = ArC1Crossbar(device.port, **{**OPTIONS, "retries": 2})
    with pytest.raises(ProtocolError, match="garbled reply.*3 attempt"):
        xbar.read([1], [1])
    device.done()
    xbar._serial.close()


def test_silence_raises_a_timeout_and_a_refused_configuration_a_device_error(scripted):
    device = scripted([(b"00\n", None), (CONNECT[1][0], None)])
    with pytest.raises(CrossbarTimeoutError):
        ArC1Crossbar(device.port, **OPTIONS)
    device.done()
    device = scripted([(b"00\n", None), (CONNECT[1][0], b"0\n")])
    with pytest.raises(DeviceError, match="did not confirm"):
        ArC1Crossbar(device.port, **OPTIONS)
    device.done()


def test_a_port_that_vanishes_raises_connection_lost(scripted):
    device = scripted(CONNECT)
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    device.done()
    xbar._serial.close()  # the port is gone under the driver
    with pytest.raises(ConnectionLostError):
        xbar.apply(PulseBatch([0], [0]))
    with pytest.raises(ConnectionLostError, match="cannot open"):
        ArC1Crossbar("/dev/nonexistent-arc1", **OPTIONS)


def test_bad_requests_are_refused_before_a_byte_is_sent(scripted):
    device = scripted(CONNECT)
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    device.done()
    sent = len(device.received)
    with pytest.raises(AddressError):
        xbar.apply(PulseBatch([2], [0]))
    with pytest.raises(SafetyLimitError):
        xbar.apply(PulseBatch([0], [0], voltage=2.0))  # above the default 1.5 V
    with pytest.raises(SafetyLimitError):
        xbar.apply(PulseBatch([0], [0], width=50e-9))  # below ArC ONE's 90 ns
    with pytest.raises(InvalidBatchError, match="split"):
        xbar.apply(PulseBatch([0] * 20, [0] * 20, pulses=[60_000] * 20))
    time.sleep(0.05)
    assert len(device.received) == sent
    xbar._serial.close()


def test_options_outside_the_instrument_are_refused():
    with pytest.raises(ValueError, match="1..32"):
        open_arc1("arc1:///dev/null?rows=33")
    with pytest.raises(SafetyLimitError, match="outside what the instrument"):
        open_arc1("arc1:///dev/null?v_max=13")
    with pytest.raises(ValueError, match="unknown arc1:// options"):
        open_arc1("arc1:///dev/null?colour=red")
    with pytest.raises(ValueError, match="names no serial port"):
        open_arc1("arc1://?rows=2")


def test_encoders_keep_batch_order_and_skip_entries_without_pulses():
    batch = PulseBatch([1, 0, 1], [0, 1, 0], pulses=[1, 0, 2], voltage=[0.3, 0.1, 0.2])
    data, ends = encode_batch(batch, np.array([2, 1, 2]), np.array([1, 2, 1]))
    first = b"02\n2\n1\n04\n0.3\n1e-06\n"
    assert data == first + b"02\n2\n1\n04\n0.2\n1e-06\n04\n0.2\n1e-06\n"
    assert ends.tolist() == [len(first), len(data)]
    assert encode_masked_read(32, 32, np.array([], dtype=int), np.array([], dtype=int)) == (
        b"2\n2\n32\n32\n0\n"
    )
