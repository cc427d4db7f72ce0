"""The serial driver's exact bytes, pinned in a table (in the manner of PyMeasure's
``expected_protocol``): a scripted device answers on a real pseudo-terminal."""

import os
import threading
import tty

import numpy as np
import pytest
from memristor_hil.drivers import SerialCrossbar

from memristor_hil import DeviceError, ProtocolError, PulseBatch, SafetyLimits
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.framing import FrameDecoder, encode_frame
from memristor_hil.protocol.messages import Op, Status

INFO = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,xbar-2x3,1,fw1", last_seq=41)
R = np.array([1.5e8, 2.5e7])


class ScriptedDevice:
    """Reads frames on a pty and answers from a script of ``(expected message, replies)``
    (a reply message, a tuple of them, or None: the reply is lost). Records every message it
    received."""

    def __init__(self, script: list[tuple[bytes, bytes | tuple | None]]) -> None:
        self.script = list(script)
        self.received: list[bytes] = []
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        decoder = FrameDecoder()
        while self.script:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            decoder.feed(data)
            for message in decoder.events():
                self.received.append(message)
                expected, reply = self.script.pop(0)
                if message != expected:
                    return  # the test sees the difference in `received`
                replies = (reply,) if isinstance(reply, bytes) else reply or ()
                for message in replies:
                    os.write(self.master, encode_frame(message))

    def close(self) -> None:
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


def request(seq, op, body=b""):
    return wire.encode_request(seq, op, body)


def reply(seq, op, body=b"", status=Status.OK):
    return wire.encode_reply(seq, op, status, body)


def test_driver_bytes_and_a_retry_with_the_same_sequence_number():
    batch = PulseBatch([0, 1], [2, 0], pulses=[3, 1])
    apply_body = bytes.fromhex(
        "05 01 02 00 00 00"  # flags: read-back, per-cell pulses; 1-byte counts; 2 cells
        "02 00 00 00 03 00 00 00"  # cells 2 and 3 (row-major), as a list
        "03 01"  # pulses
        "9a 99 99 99 99 99 b9 3f"  # 0.1 V
        "8d ed b5 a0 f7 c6 b0 3e"  # 1e-6 s
    )
    script = [
        (request(1, Op.IDENTIFY), reply(1, Op.IDENTIFY, wire.encode_info(INFO))),
        (request(42, Op.APPLY, apply_body), None),  # the reply is lost ...
        (request(42, Op.APPLY, apply_body), reply(42, Op.APPLY, wire.encode_resistances(R))),
        (request(43, Op.READ_REGION, bytes.fromhex("01000000 00000000 01000000 02000000")),
         reply(43, Op.READ_REGION, wire.encode_resistances(R))),
        (request(44, Op.SAFE), reply(44, Op.SAFE)),
    ]  # fmt: skip
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.3, retries=2) as xbar:
            assert xbar.shape == (2, 3) and xbar.identity == INFO.identity
            got = xbar.apply(batch, read_back=True)
            assert got.tobytes() == R.tobytes()
            assert xbar.read_region(1, 0, 1, 2).tobytes() == R.tobytes()
            assert xbar.stats["retries"] == 1
    finally:
        device.close()
    assert device.received == [message for message, _ in script]  # ... so it is sent again


def test_a_stale_reply_is_skipped_and_device_errors_carry_the_device_text():
    stale = reply(7, Op.APPLY, wire.encode_resistances(R[:1]))
    error = reply(8, Op.READ_ALL, wire.encode_error("row driver 1 over temperature"), Status.DEVICE)
    info = wire.DeviceInfo(2, 3, SafetyLimits(), "acme", last_seq=7)
    script = [
        (request(1, Op.IDENTIFY), (stale, reply(1, Op.IDENTIFY, wire.encode_info(info)))),
        (request(8, Op.READ_ALL), error),
        (request(9, Op.SAFE), reply(9, Op.SAFE)),
    ]
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.5, retries=1) as xbar:
            with pytest.raises(DeviceError, match="row driver 1 over temperature"):
                xbar.read_all()
    finally:
        device.close()
    assert device.received == [message for message, _ in script]


def test_a_device_speaking_another_protocol_version_is_refused():
    info = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,future", version=2)
    device = ScriptedDevice(
        [(request(1, Op.IDENTIFY), reply(1, Op.IDENTIFY, wire.encode_info(info)))]
    )
    try:
        with pytest.raises(ProtocolError, match="version 2"):
            SerialCrossbar(device.port, timeout=0.5)
    finally:
        device.close()
