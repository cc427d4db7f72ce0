"""The serial driver's exact bytes, pinned in a table (in the manner of PyMeasure's
``expected_protocol``): a scripted device answers on a real pseudo-terminal."""

import os
import struct
import threading
import time
import tty

import numpy as np
import pytest
from memristor_hil.drivers import SerialCrossbar

from memristor_hil import DeviceError, ProtocolError, PulseBatch, SafetyLimits
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.framing import FrameDecoder, encode_frame
from memristor_hil.protocol.messages import Op, Status

#: A version-2 device (as the C reference firmware): read-backs in binary64, flag 0x20 unused.
INFO = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,xbar-2x3,1,fw1", last_seq=41, version=2)
R = np.array([1.5e8, 2.5e7])


class ScriptedDevice:
    """Reads frames on a pty and answers from a script of ``(expected message, replies)``
    (a reply message, a tuple of them, or None: the reply is lost). Records every message it
    received."""

    def __init__(self, script: list[tuple[bytes, bytes | tuple | None]], pending=b"") -> None:
        self.script = list(script)
        self.received: list[bytes] = []
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        if pending:  # bytes arriving while the driver opens the port (pyserial flushes older)
            threading.Thread(target=self._chatter, args=(pending,), daemon=True).start()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _chatter(self, data: bytes, times: int = 15, interval: float = 0.01) -> None:
        for _ in range(times):
            os.write(self.master, data)
            time.sleep(interval)

    def _serve(self) -> None:
        decoder = FrameDecoder()
        while self.script:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            decoder.feed(data)
            for message in decoder.events():
                # the driver's session is random: compare without it, and echo it in replies
                session = message[5:9]
                message = message[:5] + bytes(4) + message[9:]
                self.received.append(message)
                expected, reply = self.script.pop(0)
                if message != expected:
                    return  # the test sees the difference in `received`
                replies = (reply,) if isinstance(reply, bytes) else reply or ()
                for message in replies:
                    if isinstance(message, Raw):
                        raw = message.raw
                    else:
                        if message[6:10] == bytes(4):  # else: another client's reply
                            message = message[:6] + session + message[10:]
                        raw = encode_frame(message)
                    os.write(self.master, raw)

    def close(self) -> None:
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


class Raw(bytes):
    """Bytes a scripted device writes as they are (not framed): damaged frames, noise."""

    @property
    def raw(self) -> bytes:
        return bytes(self)


def request(seq, op, body=b""):
    return wire.encode_request(seq, op, body)


def reply(seq, op, body=b"", status=Status.OK, session=0):
    return wire.encode_reply(seq, op, status, body, session)


def opening(info, seq=1):
    """IDENTIFY and CLAIM, as the driver opens a device."""
    body = wire.encode_info(info)
    return [
        (request(seq, Op.IDENTIFY), reply(seq, Op.IDENTIFY, body)),
        (request(seq + 1, Op.CLAIM, b"\x00"), reply(seq + 1, Op.CLAIM, body)),
    ]


def closing(seq):
    """SAFE and the claim's RELEASE, as the driver closes."""
    return [
        (request(seq, Op.SAFE), reply(seq, Op.SAFE)),
        (request(seq + 1, Op.CLAIM, b"\x02"), reply(seq + 1, Op.CLAIM, b"")),
    ]


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
        *opening(INFO),
        (request(42, Op.APPLY, apply_body), None),  # the reply is lost ...
        (request(42, Op.APPLY, apply_body), reply(42, Op.APPLY, wire.encode_resistances(R))),
        (request(43, Op.READ_REGION, bytes.fromhex("01000000 00000000 01000000 02000000")),
         reply(43, Op.READ_REGION, wire.encode_resistances(R))),
        *closing(44),
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


def test_a_version_3_device_reads_back_in_its_own_precision():
    """Against a version-3 device the driver sets APPLY flag 0x20: a binary32 device answers
    4 bytes per reading (returned as float32, the same values), a binary64 one 8 bytes; any
    other length is a damaged reply, never a misread."""
    v3 = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,xbar-2x3,1,fw2", last_seq=41, version=3)
    batch = PulseBatch([0, 1], [2, 0])
    body = bytes.fromhex(
        "21 01 02 00 00 00"  # flags: read-back in native precision; 1-byte counts; 2 cells
        "02 00 00 00 03 00 00 00"  # cells 2 and 3, as a list
        "01"  # one shared pulse count
        "9a 99 99 99 99 99 b9 3f"  # 0.1 V
        "8d ed b5 a0 f7 c6 b0 3e"  # 1e-6 s
    )
    r32 = R.astype("<f4")
    script = [
        *opening(v3),
        (request(42, Op.APPLY, body), reply(42, Op.APPLY, r32.tobytes())),
        (request(43, Op.APPLY, body), reply(43, Op.APPLY, R.tobytes())),
        (request(44, Op.APPLY, body), reply(44, Op.APPLY, R.tobytes()[:12])),
        (request(45, Op.SAFE), reply(45, Op.SAFE)),  # after a reply that did not decode
        *closing(46),
    ]
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.3, retries=0) as xbar:
            got = xbar.apply(batch, read_back=True)
            assert got.dtype == np.float32 and got.tobytes() == r32.tobytes()
            got = xbar.apply(batch, read_back=True)
            assert got.dtype == np.float64 and got.tobytes() == R.tobytes()
            with pytest.raises(ProtocolError, match="expected 2 readings"):
                xbar.apply(batch, read_back=True)
    finally:
        device.close()
    assert device.received == [message for message, _ in script]


def test_submit_sends_at_once_and_waits_in_result_with_the_usual_retries():
    """Crossbar.submit returns without waiting for the reply (here: lost, so the wait in
    result() re-sends the same sequence number); the next call collects an uncollected submit
    first, and a failed one raises there, after the outputs were made safe."""
    v3 = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,xbar-2x3,1,fw2", last_seq=41, version=3)
    batch = PulseBatch([0, 1], [2, 0])
    body = bytes.fromhex("21 01 02 00 00 00 02 00 00 00 03 00 00 00 01")
    body += bytes.fromhex("9a 99 99 99 99 99 b9 3f 8d ed b5 a0 f7 c6 b0 3e")
    r32 = R.astype("<f4")
    region = bytes.fromhex("01000000 00000000 01000000 02000000")
    refused = wire.encode_error("row driver 1 over temperature")
    script = [
        *opening(v3),
        (request(42, Op.APPLY, body), None),  # lost: result() waits out the timeout ...
        (request(42, Op.APPLY, body), reply(42, Op.APPLY, r32.tobytes())),  # ... and re-sends
        (request(43, Op.APPLY, body), reply(43, Op.APPLY, r32.tobytes())),
        (request(44, Op.READ_REGION, region), reply(44, Op.READ_REGION, R.tobytes())),
        (request(45, Op.APPLY, body), reply(45, Op.APPLY, refused, Status.DEVICE)),
        (request(46, Op.SAFE), reply(46, Op.SAFE)),
        *closing(47),
    ]
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.5, retries=1) as xbar:
            start = time.monotonic()
            pending = xbar.submit(batch, read_back=True)
            assert time.monotonic() - start < 0.25 and not pending.done
            assert pending.result().tobytes() == r32.tobytes()
            assert xbar.stats["retries"] == 1
            pending = xbar.submit(batch, read_back=True)
            assert xbar.read_region(1, 0, 1, 2).tobytes() == R.tobytes()  # collects it first
            assert pending.done and pending.result().tobytes() == r32.tobytes()
            failed = xbar.submit(batch, read_back=True)
            with pytest.raises(DeviceError, match="over temperature"):
                xbar.read_all()  # the next call raises the uncollected failure ...
            with pytest.raises(DeviceError, match="over temperature"):
                failed.result()  # ... and so does its handle
    finally:
        device.close()
    assert device.received == [message for message, _ in script]


def test_another_sessions_reply_is_skipped_and_device_errors_carry_the_device_text():
    """A killed client's reply with the very sequence number and opcode awaited, but its own
    session, is not this client's answer."""
    theirs = reply(8, Op.READ_ALL, wire.encode_resistances(np.zeros(6)), session=0xDEAD)
    error = reply(8, Op.READ_ALL, wire.encode_error("row driver 1 over temperature"), Status.DEVICE)
    info = wire.DeviceInfo(2, 3, SafetyLimits(), "acme", last_seq=7)
    script = [*opening(info), (request(8, Op.READ_ALL), (theirs, error)), *closing(9)]
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.5, retries=1) as xbar:
            with pytest.raises(DeviceError, match="row driver 1 over temperature") as caught:
                xbar.read_all()
            assert caught.value.status == Status.DEVICE
    finally:
        device.close()
    assert device.received == [message for message, _ in script]


def test_a_device_speaking_another_protocol_version_is_refused():
    info = wire.DeviceInfo(2, 3, SafetyLimits(), "acme,future", version=5)
    device = ScriptedDevice(
        [(request(1, Op.IDENTIFY), reply(1, Op.IDENTIFY, wire.encode_info(info)))]
    )
    try:
        with pytest.raises(
            ProtocolError, match=r"version 5; this driver speaks versions 2, 3 and 4"
        ):
            SerialCrossbar(device.port, timeout=0.5)
    finally:
        device.close()


def test_a_version_1_device_is_refused_clearly():
    """A version-1 device answers the 9-byte IDENTIFY with MALFORMED, in its 6-byte header."""
    text = b"IDENTIFY takes no body, got 4 bytes"
    v1_reply = struct.pack("<IBBH", 1, Op.IDENTIFY, Status.MALFORMED, len(text)) + text
    device = ScriptedDevice([(request(1, Op.IDENTIFY), Raw(encode_frame(v1_reply)))])
    try:
        with pytest.raises(ProtocolError, match="protocol version 1"):
            SerialCrossbar(device.port, timeout=0.5, retries=0)
    finally:
        device.close()


def test_no_sequence_number_is_reused_and_a_reply_must_echo_the_opcode():
    """A device whose last sequence is 0: IDENTIFY and CLAIM are sequences 1 and 2, so the first
    command must be 3; late IDENTIFY replies, a reply with the right sequence but another opcode
    and one from another session must not be taken for the APPLY's."""
    fresh = wire.DeviceInfo(2, 3, SafetyLimits(), "acme", last_seq=0, version=2)
    identify = reply(1, Op.IDENTIFY, wire.encode_info(fresh))
    body = bytes.fromhex("01 01 01 00 00 00  05 00 00 00  02") + np.array([0.1, 1e-6]).tobytes()
    wrong_op = reply(3, Op.READ_ALL, wire.encode_resistances(np.zeros(6)))
    theirs = reply(3, Op.APPLY, R[1:].tobytes(), session=7)
    script = [
        (request(1, Op.IDENTIFY), None),  # answered late: after the driver's timeout
        (request(1, Op.IDENTIFY), (identify, identify)),
        (request(2, Op.CLAIM, b"\x00"), reply(2, Op.CLAIM, wire.encode_info(fresh))),
        (request(3, Op.APPLY, body),
         (identify, wrong_op, theirs, reply(3, Op.APPLY, R[:1].tobytes()))),
        *closing(4),
    ]  # fmt: skip
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.3, retries=2) as xbar:
            got = xbar.apply(PulseBatch([1], [2], pulses=2), read_back=True)
            assert got.tobytes() == R[:1].tobytes()
            assert xbar.stats["retries"] == 1  # the lost IDENTIFY only
    finally:
        device.close()
    assert device.received == [message for message, _ in script]


def test_a_damaged_reply_costs_one_resend_not_two():
    """A reply whose CRC fails makes the decoder report more than one fault (the frame, then its
    remaining bytes): the driver re-sends once, and waits for that reply."""
    damaged = bytearray(encode_frame(reply(42, Op.READ_ALL, wire.encode_resistances(R))))
    damaged[-3] ^= 0xFF
    good = reply(42, Op.READ_ALL, wire.encode_resistances(np.arange(6.0)))
    script = [
        *opening(INFO),
        (request(42, Op.READ_ALL), Raw(bytes(damaged) + b"\x5a\x00junk")),
        (request(42, Op.READ_ALL), good),
        *closing(43),
    ]
    device = ScriptedDevice(script)
    try:
        with SerialCrossbar(device.port, timeout=0.5, retries=3) as xbar:
            assert xbar.read_all().tobytes() == np.arange(6.0).tobytes()
            assert xbar.stats["retries"] == 1
    finally:
        device.close()
    assert device.received == [message for message, _ in script]
