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
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.service.arc1 import ArC1Dialect
from memristor_hil.emulator.service.core import CrossbarService

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


VERSION = bytes.fromhex("0900 0300")  # firmware 9.3, two little-endian uint16
#: Connecting to a 2x3 array at Vread 0.5 V: reset, configure (answer "1"), read settings, version.
CONNECT = [
    (b"00\n", None),
    (b"0\n50\n2\n3\n2\n0\n1\n0.5\n", b"1\n"),
    (b"01\n2\n0.5\n", None),
    (b"999\n", VERSION),
]
OPTIONS = {"rows": 2, "cols": 3, "reset_delay": 0, "write_delay": 0, "timeout": 0.3}
#: Before a read is sent again: the firmware version, whose known reply marks where late bytes end.
RESYNC = (b"999\n", VERSION)


def masked(pairs, replies):
    """A masked read as the vendor paces it (libarc1 5bfc6af modules/readops.py 84-100,
    arc1_pyqt a9a18a1 ControlWidgets/manual_ops_widget.py 66-77): the header ``2 2 W B n``,
    then each ``w b`` pair, answered by one float32 before the next pair is sent."""
    head = (b"2\n2\n2\n3\n%d\n" % len(pairs), None)
    return [head] + [(b"%d\n%d\n" % p, r) for p, r in zip(pairs, replies, strict=True)]


class ScriptedArC1:
    """Reads what the driver writes on a pty; for each row, waits for exactly its bytes, then
    writes its reply. Whatever arrives is kept in ``received``; a mismatch stops the script."""

    def __init__(self, script):
        self.script = list(script)
        self.received = b""
        self.mismatch = None
        self.ahead = []  # rows whose reply was due while later bytes had already arrived
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
                    if pending:
                        self.ahead.append((expected, pending))
                    for delay, chunk in reply if isinstance(reply, list) else [(0, reply)]:
                        time.sleep(delay)
                        os.write(self.master, chunk)

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
        assert not self.ahead, f"sent before the value it waits for came: {self.ahead}"


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
            *masked([(1, 3), (2, 1)], [f32(1.5e8), f32(2.5e7)]),
            # a read of every cell, word-major
            (b"2\n1\n2\n3\n", f32(1, 2, 3, 4, 5, 6)),
            (b"00\n", None),  # close: the board is reset, its safe state
        ]
    )
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    assert xbar.identity == "Arc Instruments,ArC ONE,2x3,firmware 9.3"
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
            *masked([(1, 1)], [None]),  # the reply is lost ...
            RESYNC,  # ... the driver resynchronises on the firmware version ...
            *masked([(1, 1)], [f32(3e6)]),  # ... and sends the read (only) again
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
            *masked([(1, 1)], [None]),  # no answer within the timeout ...
            (b"999\n", late + RESYNC[1]),  # ... it comes late, in order, before the version
            *masked([(1, 1)], [f32(3e6)]),
            *masked([(1, 2)], [f32(4e6)]),
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
            *masked([(1, 1)], [None]),
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
            *masked([(2, 2)], [garbled]),
            RESYNC,
            *masked([(2, 2)], [f32(-5.0)]),  # negative: garbled too
            RESYNC,
            *masked([(2, 2)], [garbled]),
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


# ---------------------------------------------------------------- the vendor code as oracle
# arc1_pyqt a9a18a1 (arc1pyqt/instrument.py, main.py, ControlWidgets/*), libarc1 5bfc6af
# (libarc1/arc.py, libarc1/modules/readops.py).
def test_firmware_older_than_9_3_is_connected_and_a_lost_reply_is_not_sent_again(scripted):
    """arc1_pyqt instrument.py 187-207: 999 is asked once (2 s); no answer gives (-1, -1),
    shown as "< 9.3" (ControlWidgets/about_widget.py 150-151), and the session goes on
    (libarc1 arc.py 411-423 likewise). Without 999 there is no marker to resynchronise on:
    the read is not sent again."""
    device = scripted([*CONNECT[:3], (b"999\n", None), *masked([(1, 1)], [None])])
    xbar = ArC1Crossbar(device.port, **OPTIONS)
    assert xbar.identity == "Arc Instruments,ArC ONE,2x3,firmware < 9.3"
    with pytest.raises(CrossbarTimeoutError, match="does not answer 999.*not sent again"):
        xbar.read([0], [0])
    device.done()
    time.sleep(0.1)
    assert device.received.endswith(b"1\n1\n")  # nothing was sent after the lost read
    xbar._serial.close()


def test_each_device_read_has_its_own_timeout(scripted):
    """libarc1 modules/readops.py 46-49 and arc1_pyqt manual_ops_widget.py 59-60 read a
    read-all one float at a time, each with the port's timeout (7 s, arc.py 395): an
    instrument that needs longer per device than the driver's timeout for the whole reply
    but less than it per device is read, not timed out on every retry."""
    slow = [(0.15, f32(v)) for v in range(1, 7)]  # 0.9 s in all, 0.15 s per device
    device = scripted([*CONNECT, (b"2\n1\n2\n3\n", slow), *masked([(1, 1)], [slow[:1]])])
    xbar = ArC1Crossbar(device.port, **{**OPTIONS, "timeout": 0.5, "retries": 0})
    np.testing.assert_array_equal(xbar.read_all(), [[1, 2, 3], [4, 5, 6]])
    assert xbar.read([0], [0]).tolist() == [1.0]
    assert xbar.stats["retries"] == 0
    device.done()
    xbar._serial.close()


def test_write_schemes_are_the_vendors_values(scripted):
    """arc1_pyqt ControlWidgets/config_hardware_widget.py 53-56: "Write: V/3" is 0 and
    "Write: V/2" is 1 (the default, instrument.py 16); libarc1 arc.py 51-59: FLOAT is 256.
    There is no scheme 2."""
    floating = [CONNECT[0], (b"0\n50\n2\n3\n2\n0\n256\n0.5\n", b"1\n"), *CONNECT[2:]]
    device = scripted(floating)
    xbar = ArC1Crossbar(device.port, **OPTIONS, sneak_path=256)
    device.done()
    xbar._serial.close()
    with pytest.raises(ValueError, match=r"write scheme.*0 \(V/3\), 1 \(V/2\), 256"):
        open_arc1("arc1:///dev/null?sneak_path=2")


def vendor_bytes(*fields):
    """Lines as the vendor writes them: ints with %d, floats with %f (instrument.py 148-170)."""
    return b"".join((b"%f\n" % f if isinstance(f, float) else b"%d\n" % f) for f in fields)


def test_the_emulated_arc1_answers_the_vendors_own_bytes():
    """The emulated dialect, fed what arc1_pyqt and libarc1 send, answers as the instrument."""
    xbar = EmulatedCrossbar(4, 4, seed=2)
    devices = xbar.read_all().astype("<f4")
    dialect = ArC1Dialect(CrossbarService(xbar, log=False))
    # initialise (instrument.py 145-170): reset, configure 4 x 4, TIA4P, V/2, then 01
    assert dialect.feed(b"00\n" + vendor_bytes(0, 50, 4, 4, 2, 0, 1, 0.5)) == b"1\n"
    assert dialect.feed(b"01\n" + vendor_bytes(2, 0.5)) == b""
    assert np.frombuffer(dialect.feed(b"999\n"), "<u2").tolist() == [9, 3]  # 9.3 on
    # main.py 429-436: 011, read cycles, write scheme; the next read is still device (2, 3)
    assert dialect.feed(b"011\n" + vendor_bytes(20, 0)) == b""
    assert dialect.read_cycles == 20 and dialect.write_scheme == 0
    assert dialect.feed(b"1\n2\n3\n") == devices[1, 2].tobytes()
    # readops.py 7-14, 46-49: read-all answers W x B values of the command, word-major
    assert dialect.feed(b"2\n" + vendor_bytes(1, 2, 3)) == devices[:2, :3].tobytes()
    # readops.py 16-24, 95-99: masked read, W and B "useless" (32, 32), one pair at a time
    assert dialect.feed(b"2\n" + vendor_bytes(2, 32, 32, 2)) == b""
    assert dialect.feed(vendor_bytes(4, 1)) == devices[3, 0].tobytes()
    assert dialect.feed(vendor_bytes(1, 4)) == devices[0, 3].tobytes()
    # libarc1's floating write scheme (arc.py 58) configures; firmware before 9.3 is silent
    assert dialect.feed(vendor_bytes(0, 50, 4, 4, 2, 0, 256, 0.5)) == b"1\n"
    old = ArC1Dialect(CrossbarService(EmulatedCrossbar(4, 4, seed=2), log=False), firmware=None)
    assert old.feed(b"999\n") == b""


def pyqt_lines(*fields):
    """Lines as arc1_pyqt's modules write them: ``str(value) + "\\n"`` (``str(1e-4)`` is
    ``1e-04``, ``str(1.0)`` is ``1.0``, ints bare)."""
    return b"".join(b"%s\n" % str(f).encode() for f in fields)


END = f32(0, 0, 0)  # the triplet modules' end marker (libarc1 5bfc6af __init__.py 7-24)
NAN3 = f32(np.nan, np.nan, np.nan)
NAN1 = f32(np.nan)
FAILED_PHASE = f32(0, 0, -1) + b"1\n"
#: Every module job the vendor's software sends, as it sends it: (job line and parameters,
#: [(what the host sends next, what the instrument answers before the host goes on)]).
#: arc1_pyqt a9a18a1, libarc1 5bfc6af; the device pair is ``queue_select`` (arc1_pyqt
#: arc1pyqt/instrument.py 87-94, libarc1 packets.py DEVICE), sent once the last one ended.
MODULE_EXCHANGES = {
    # libarc1 modules/endurance.py 19-31 (10 parameters, the device count), then per device
    # generic_triplet_runner (__init__.py 14-24): the pair, triplets until (0, 0, 0).
    "191 Endurance (libarc1)": (
        b"191\n" + vendor_bytes(1.0, 100e-6, 0.0, -1.0, 100e-6, 0.0, 1e-3, 1, 1, 10, 2),
        [(vendor_bytes(1, 2), END), (vendor_bytes(4, 4), END)],
    ),
    # arc1_pyqt ProgPanels/Endurance.py 298-299 (job), 262-283 (sendParams), 40 (count),
    # 48 (queue_select), then triplets until (0, 0, 0) (52-74).
    "191 Endurance (arc1_pyqt)": (
        b"191\n" + pyqt_lines(1.0, 0.0001, 0.0, -1.0, 0.0001, 0.0, 10.0, 1, 1, 100, 1),
        [(pyqt_lines(3, 2), END)],
    ),
    # libarc1 modules/curvetracer.py 47-62 (12 parameters, cycles the 9th, the count), 92-101:
    # per device the pair, then per cycle triplets until one whose resistance is <= 0.
    "201 CurveTracer (libarc1)": (
        b"201\n" + vendor_bytes(1.0, 1.0, 0.1, 0.1, 10e-3, 10e-3, 0.0, -0.0, 3, 0, 0, 0, 1),
        [(vendor_bytes(2, 2), END * 3)],
    ),
    # arc1_pyqt ProgPanels/CurveTracer.py 404-405 (job), 365-388 (sendParams), 82 (count),
    # 89 (queue_select), 92-122 (per cycle, triplets until (0, 0, 0)).
    "201 CurveTracer (arc1_pyqt)": (
        b"201\n" + pyqt_lines(1.0, 1.0, 0.1, 0.05, 0.008, 0.01, 0.0, -0.0, 2, 0, 0, 0, 1),
        [(pyqt_lines(1, 1), END * 2)],
    ),
    # arc1_pyqt ProgPanels/ParameterFit.py 631-648: 201, 12 parameters, 1 device, the pair.
    "201 CurveTracer (ParameterFit)": (
        b"201\n" + pyqt_lines(1.2, 1.2, 0.05, 0.05, 0.1, 0.01, 0.0, 0.0, 1, 1, 0, 0, 1),
        [(pyqt_lines(2, 4), END)],
    ),
    # libarc1 modules/formfinder.py 29-45 (job 141, 12 parameters, the count), runner.
    "141 FormFinder (libarc1)": (
        b"141\n" + vendor_bytes(0.25, 0.25, 3.0, 100e-6, 100.0, 1e-3, 10e-3, 1e6, 0.0, 0, 0, 1, 1),
        [(vendor_bytes(4, 1), END)],
    ),
    # arc1_pyqt ProgPanels/FormFinder.py 293-336: job 14 (legacy) sends no pulsing mode
    # (11 parameters); 41 (count), 48 (queue_select), triplets until (0, 0, 0).
    "14 FormFinder (arc1_pyqt, legacy)": (
        b"14\n" + pyqt_lines(0.25, 0.25, 3.0, 0.0001, 100.0, 0.001, 0.01, 1000000.0, 0.0, 7, 1, 1),
        [(pyqt_lines(2, 1), END)],
    ),
    # libarc1 modules/switchseeker.py 44-59 (jobs 15/152, 12 parameters, the count), runner;
    # arc1_pyqt ProgPanels/SwitchSeeker.py 261-286 and 300-301 send the same. libarc1 wraps
    # the job's String twice (41-45), so a blank line follows it: skipped as whitespace.
    "152 SwitchSeeker (libarc1)": (
        b"152\n\n" + vendor_bytes(100e-6, 0.5, 0.2, 3.0, 1e-3, 1e6, 5, 10, 5, 10, 0, 0, 1),
        [(vendor_bytes(3, 3), END)],
    ),
    "15 SwitchSeeker (arc1_pyqt)": (
        b"15\n" + pyqt_lines(0.0001, 0.5, 0.2, 3.0, 0.001, 1000000.0, 5, 10, 5, 10, 0, -1, 1),
        [(pyqt_lines(1, 4), END)],
    ),
    # libarc1 modules/convergetostate.py 21-35 (12 parameters, the count), runner;
    # arc1_pyqt ProgPanels/ConvergeToState.py 102-120 ("%.3e" and "%d").
    "21 ConvergeToState (arc1_pyqt)": (
        b"21\n5.000e-01\n1.000e-01\n2.000e+00\n1.000e-01\n1.000e+02\n1.000e-01\n1.000e-03\n"
        b"5.000e+03\n5.000e+00\n5.000e+00\n1\n1\n1\n",
        [(b"2\n3\n", END)],
    ),
    # libarc1 modules/chronoamperometry.py 13-18 (3 parameters, the count), runner;
    # arc1_pyqt ProgPanels/ChronoAmperometry.py 83-91 ("%.3e", "%d").
    "220 ChronoAmperometry (arc1_pyqt)": (
        b"220\n1.000e+00\n1.000e-01\n2\n1\n",
        [(b"4\n2\n", END)],
    ),
    # libarc1 modules/multibias.py 21-29: job 50, Vwrite, PWwrite, Vread, n, bitline, action,
    # n wordlines (arc1_pyqt ProgPanels/MultiBias.py 188-198 likewise); a read (1) answers
    # one triplet (libarc1 56-59), a write (2) two per configured word (60-70).
    "50 MultiBias read (libarc1)": (b"50\n" + vendor_bytes(1.0, 100e-6, 0.5, 2, 3, 1, 1, 2), NAN3),
    "50 MultiBias write (arc1_pyqt)": (
        b"50\n" + pyqt_lines(1.0, 0.0001, 0.5, 3, 2, 2, 1, 2, 4),
        NAN3 * 8,
    ),
    # arc1_pyqt ProgPanels/STDP.py 674-677 (job, no parameters), 50 (count), 57 (pair),
    # 60 (a triplet), 65 (time steps), per step 72-76 (n, then n time/voltage pairs) and
    # 79-84 (two triplets), 97 (a last triplet).
    "40 STDP (arc1_pyqt)": (
        b"40\n1\n",
        [
            (pyqt_lines(2, 2), NAN3),
            (pyqt_lines(2), b""),
            (pyqt_lines(2, 0.0, 1.0, 0.001, -1.0), NAN3 * 2),
            (pyqt_lines(1, 0.0, 0.5), NAN3 * 2 + NAN3),
        ],
    ),
    # arc1_pyqt ProgPanels/VolatilityRead.py 358-361 and 331-335 (job, 4 parameters, the
    # third the batch size), 42 (count), 49 (pair), 51 (a float), 63-66 per sample a time
    # line and a float, then a stop flag (0: another batch; 1: 149, a last float).
    "33 VolatilityRead (arc1_pyqt)": (
        b"33\n" + pyqt_lines(1.0, 0.0001, 2.0, 0.0, 1),
        [
            (pyqt_lines(3, 1), NAN1 + (b"0\n" + NAN1) * 2),
            (b"0\n", (b"0\n" + NAN1) * 2),
            (b"1\n", NAN1),
        ],
    ),
    # arc1_pyqt ProgPanels/MultiStateSeeker.py 44-61 (161, 9 parameters, the count, the pair),
    # 73-92 (triplets until a negative third value, then a status line; not 0 is failed).
    "161 MultiStateSeeker phase 1 (arc1_pyqt)": (
        b"161\n" + pyqt_lines(0.0001, 0.5, 0.05, 3.0, 0.001, 5, 10, 10, 1, 1),
        [(pyqt_lines(1, 3), FAILED_PHASE)],
    ),
    # 108-123 (162, voltage, pulse width, the count, the pair), 145-192: a float, then the
    # host's 0 (go on: another float) or 1 (stop).
    "162 MultiStateSeeker phase 2 (arc1_pyqt)": (
        b"162\n" + pyqt_lines(0.5, 0.0001, 1),
        [(pyqt_lines(1, 3), NAN1), (b"0\n", NAN1), (b"1\n", b"")],
    ),
    # 202-252 (163 / 164 / 165, 11 parameters each, the count, the pair), 264-288 as phase 1.
    "163 MultiStateSeeker phase 3 (arc1_pyqt)": (
        b"163\n" + pyqt_lines(5, 10, 2.0, 1, 1, 0.0001, -0.5, -0.05, -3.0, 0.001, 1.0, 1),
        [(pyqt_lines(1, 3), FAILED_PHASE)],
    ),
    "164 MultiStateSeeker phase 3 (arc1_pyqt)": (
        b"164\n" + pyqt_lines(5, 10, 2.0, 1, 1, 1e-05, -1.0, 100.0, 0.001, 0.001, 1.0, 1),
        [(pyqt_lines(1, 3), FAILED_PHASE)],
    ),
    "165 MultiStateSeeker phase 3 (arc1_pyqt)": (
        b"165\n" + pyqt_lines(5, 1, 1, 10, 2.0, 1, 1, 0.0001, -0.5, 0.001, 1.0, 1),
        [(pyqt_lines(1, 3), FAILED_PHASE)],
    ),
}


def _configured_4x4() -> tuple[ArC1Dialect, np.ndarray, list[str]]:
    """An emulated 4x4 ArC ONE reset and configured as the vendor does (job ``0``): the
    dialect, the devices' float32 resistances, and the service's log lines as they come."""
    xbar = EmulatedCrossbar(4, 4, seed=3)
    devices = xbar.read_all().astype("<f4")
    said: list[str] = []
    service = CrossbarService(xbar, log=False)
    service.say = said.append
    dialect = ArC1Dialect(service)
    assert dialect.feed(b"00\n" + vendor_bytes(0, 50, 4, 4, 2, 0, 1, 0.5)) == b"1\n"
    return dialect, devices, said


@pytest.mark.parametrize("name", list(MODULE_EXCHANGES))
def test_every_vendor_module_job_takes_its_arguments_and_the_next_read_is_the_right_device(
    name,
):
    """A module job the emulation does not run takes exactly the vendor's arguments, answers
    where the host waits (with no data), changes no device, and says so in the service log;
    none of its arguments runs as a job, so the next read is the asked device's value."""
    dialect, devices, said = _configured_4x4()
    head, exchanges = MODULE_EXCHANGES[name]
    if isinstance(exchanges, bytes):  # all arguments up front, one answer (MultiBias)
        assert dialect.feed(head) == exchanges
    else:
        assert dialect.feed(head) == b""
        for sent, answer in exchanges:
            assert dialect.feed(sent) == answer
    assert dialect.feed(b"1\n2\n3\n") == devices[1, 2].tobytes()
    assert dialect.feed(b"2\n" + vendor_bytes(1, 4, 4)) == devices.tobytes()  # unchanged
    job = head.split(b"\n")[0].decode()
    assert [s for s in said if "not emulated" in s and f"job {job} " in s]
    assert not [s for s in said if "dropped" in s]


def test_a_reset_ends_a_module_the_host_gave_up_on():
    """arc1_pyqt's ChronoAmperometry reads one triplet before it looks for the end marker
    (ProgPanels/ChronoAmperometry.py 119-131), so it waits; a host that gives up and connects
    again sends the reset first (instrument.py 133-145, libarc1 arc.py 371-373). No vendor
    argument is written ``00``, so the reset ends the module in progress and is applied."""
    xbar = EmulatedCrossbar(4, 4, seed=3)
    devices = xbar.read_all().astype("<f4")
    dialect = ArC1Dialect(CrossbarService(xbar, log=False))
    configure = vendor_bytes(0, 50, 4, 4, 2, 0, 1, 0.5)
    assert dialect.feed(b"00\n" + configure) == b"1\n"
    assert dialect.feed(b"220\n1.000e+00\n1.000e-01\n2\n2\n4\n2\n") == END  # one of 2 devices
    assert dialect.feed(b"00\n" + configure) == b"1\n"  # not taken for the second device
    assert dialect.feed(b"1\n4\n2\n") == devices[3, 1].tobytes()


def test_a_module_job_with_an_absurd_cycle_count_is_dropped_not_the_service():
    """CurveTracer's cycles (one end marker each) come from the wire: a count past the bounds
    of every other count is dropped with a log line; it used to raise OverflowError (or
    allocate the markers) out of feed and take the service down."""
    dialect, devices, said = _configured_4x4()
    params = b"1\n" * 8 + b"1" + b"0" * 30 + b"\n" + b"1\n" * 3
    assert dialect.feed(b"201\n" + params) == b""
    assert [s for s in said if "dropped" in s and "count" in s]
    assert dialect.feed(b"1\n2\n3\n") == devices[1, 2].tobytes()


def test_stop_flags_flooded_faster_than_read_are_dropped_not_buffered():
    """Each VolatilityRead stop flag 0 answers a whole batch (2-byte line, up to 6 x 2**16
    bytes out): a host that floods flags without reading them has the module dropped once a
    read's replies pass MAX_REPLY, instead of the service buffering every answer (a 64 KiB
    read of flags was 12 GB). The vendor reads each batch before its flag (VolatilityRead.py
    63-66), so it never comes near."""
    from memristor_hil.emulator.service.arc1 import MAX_BATCH, MAX_REPLY

    dialect, devices, said = _configured_4x4()
    start = b"33\n" + pyqt_lines(1.0, 0.0001, float(MAX_BATCH), 0.0, 1) + pyqt_lines(3, 1)
    flood = dialect.feed(start + b"0\n" * 1000)
    assert len(flood) <= MAX_REPLY
    assert [s for s in said if "dropped" in s and "stop flags" in s]
    dialect.feed(b"00\n")  # the host resets, as after any command it gave up on
    assert dialect.feed(b"1\n2\n3\n") == devices[1, 2].tobytes()
