"""The emulator service's command handling in process: idempotence, persistence, bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.service.core import CrossbarService
from memristor_hil.emulator.service.tcp import parse_address, scpi_reply

from memristor_hil import PulseBatch, SafetyLimits
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol import scpi
from memristor_hil.protocol.framing import FrameDecoder, FrameFault, encode_frame
from memristor_hil.protocol.messages import Op, Status

SHAPE = (5, 7)


#: The session of the host these tests play.
SESSION = 0x5E55


def make_service(claim: bool = True, **kwargs) -> CrossbarService:
    xbar = EmulatedCrossbar(*SHAPE, seed=11)
    service = CrossbarService(xbar, log=False, **kwargs)
    if claim:
        assert wire.decode_reply(service.handle(claim_message(SESSION))).status == Status.OK
    return service


def claim_message(session: int, mode=wire.Claim.CLAIM, seq: int = 1000) -> bytes:
    return wire.encode_request(seq, Op.CLAIM, bytes([mode]), session)


def apply_message(seq: int, cells, pulses=3, read_back=True) -> bytes:
    batch = PulseBatch.from_flat(cells, SHAPE[1], pulses)
    body = wire.encode_batch(batch, batch.locate(SHAPE, SafetyLimits()), read_back)
    return wire.encode_request(seq, Op.APPLY, body, SESSION)


def snapshot(service: CrossbarService) -> bytes:
    return service.xbar.pulse_counts.tobytes() + repr(service.limits).encode()


def test_a_retried_apply_is_answered_from_the_window_not_applied_again():
    service = make_service()
    message = apply_message(1, [0, 3, 3, 9])
    first = service.handle(message)
    state = snapshot(service)
    assert wire.decode_reply(first).status == Status.OK
    assert service.handle(message) == first
    assert snapshot(service) == state
    other = service.handle(apply_message(1, [4]))
    assert wire.decode_reply(other).status == Status.SEQUENCE
    assert snapshot(service) == state
    assert service.info().last_seq == 1


def test_the_window_survives_a_restart(tmp_path):
    path = tmp_path / "state.npz"
    service = make_service(state_path=path, save_interval=0)
    message = apply_message(41, [1, 2, 30], pulses=[1, 2, 3])
    reply = service.handle(message)
    state = snapshot(service)
    restored = CrossbarService.restore(path, log=False)
    assert snapshot(restored) == state
    assert restored.info().last_seq == 41
    assert restored.handle(message) == reply  # the retry after a restart: not applied twice
    assert snapshot(restored) == state


def test_window_is_bounded_but_keeps_the_last_command():
    service = make_service(window=3, window_bytes=10)
    for seq in range(1, 8):
        service.handle(apply_message(seq, [seq]))
    assert list(service._done) == [7]  # replies of 30+ bytes: only the last fits, and is kept
    service = make_service(window=3)
    for seq in range(1, 8):
        service.handle(apply_message(seq, [seq]))
    assert list(service._done) == [5, 6, 7]


def test_configure_narrows_limits_and_refuses_wider_ones():
    service = make_service()
    narrow = SafetyLimits(v_max=0.5)
    reply = wire.decode_reply(
        service.handle(
            wire.encode_request(1, Op.CONFIGURE, wire.encode_limits(*SHAPE, narrow), SESSION)
        )
    )
    assert reply.status == Status.OK and wire.decode_info(reply.body).limits == narrow
    batch = PulseBatch([0], [0], voltage=0.8)
    body = wire.encode_batch(batch, batch.locate(SHAPE, SafetyLimits()), False)
    state = snapshot(service)
    reply = wire.decode_reply(service.handle(wire.encode_request(2, Op.APPLY, body, SESSION)))
    assert reply.status == Status.SAFETY and snapshot(service) == state
    wide = wire.encode_limits(*SHAPE, SafetyLimits(v_max=3.0))
    reply = wire.decode_reply(service.handle(wire.encode_request(3, Op.CONFIGURE, wide, SESSION)))
    assert reply.status == Status.SAFETY and service.limits == narrow


def test_reads_and_identify_match_the_crossbar():
    service = make_service()
    service.handle(apply_message(1, list(range(35)), pulses=5, read_back=False))
    reply = wire.decode_reply(service.handle(wire.encode_request(2, Op.READ_ALL)))
    values = wire.decode_resistances(reply.body, 35).reshape(SHAPE)
    assert values.tobytes() == service.xbar.read_all().tobytes()
    reply = wire.decode_reply(
        service.handle(wire.encode_request(3, Op.READ_REGION, wire.encode_region(1, 2, 3, 4)))
    )
    np.testing.assert_array_equal(
        wire.decode_resistances(reply.body, 12).reshape(3, 4), values[1:4, 2:6]
    )
    reply = wire.decode_reply(
        service.handle(wire.encode_request(4, Op.READ_REGION, wire.encode_region(4, 0, 2, 1)))
    )
    assert reply.status == Status.OUT_OF_RANGE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_messages_get_error_replies_and_change_nothing(data):
    service = make_service()
    state = snapshot(service)
    framed = FrameDecoder()
    framed.feed(data)
    for event in framed.events():
        reply = service.frame_fault(event.reason) if isinstance(event, FrameFault) else None
        if reply is None:
            reply = service.handle(event)
        assert wire.decode_reply(reply).status != Status.OK
    reply = wire.decode_reply(service.handle(data))
    if reply.status == Status.OK:  # only a well-formed read-only command can succeed
        assert wire.decode_request(data).op not in wire.SEQUENCED
    assert snapshot(service) == state


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, 10_000), xor=st.integers(1, 255), cut=st.booleans())
def test_mutated_frames_and_scpi_lines_change_nothing(position, xor, cut):
    service = make_service()
    state = snapshot(service)
    message = apply_message(5, [0, 1, 2, 17, 17], pulses=[1, 2, 3, 4, 5])
    for wrapped, parse in (
        (encode_frame(message), "frame"),
        (scpi.encode_command(Op.APPLY, message), "scpi"),
    ):
        data = bytearray(wrapped)
        i = position % len(data)
        if cut:
            del data[i:]
        else:
            header = wrapped.index(b" ") if parse == "scpi" else 0
            assume(not (i < header and xor == 0x20))  # a case change leaves a valid header
            data[i] ^= xor
        replies = []
        if parse == "frame":
            decoder = FrameDecoder()
            decoder.feed(bytes(data))
            for event in decoder.events():
                if isinstance(event, FrameFault):
                    replies.append(service.frame_fault(event.reason))
                else:
                    replies.append(service.handle(event))
        else:
            parser = scpi.ScpiParser()
            parser.feed(bytes(data))
            for event in parser.events():
                out = scpi_reply(service, event)
                if out:
                    replies.append(out)
        for reply in replies:
            if parse == "scpi":
                reply = scpi.block_message(bytes(reply[2 + int(reply[1:2]) :].rstrip(b"\n")))
            assert wire.decode_reply(reply).status != Status.OK
        if not cut:
            assert replies or service.errors  # answered, or queued for SYST:ERR?
        assert snapshot(service) == state


def test_scpi_text_commands():
    service = make_service()
    assert b"EmulatedCrossbar" in scpi_reply(service, scpi.TextCommand("*IDN?", ""))
    assert scpi_reply(service, scpi.TextCommand("NOPE?", "")) == b""
    assert scpi_reply(service, scpi.TextCommand("SYST:ERR?", "")).startswith(b"-113,")
    assert scpi_reply(service, scpi.TextCommand("SYST:ERR?", "")) == b'0,"No error"\n'
    service.outputs_safe = False
    scpi_reply(service, scpi.TextCommand("OUTP", "OFF"))
    assert scpi_reply(service, scpi.TextCommand("OUTP?", "")) == b"0\n"


def test_only_loopback_addresses_without_allow_remote():
    assert parse_address("127.0.0.1:5025") == ("127.0.0.1", 5025)
    assert parse_address("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="allow-remote"):
        parse_address("0.0.0.0:5025")
    assert parse_address("0.0.0.0:5025", allow_remote=True) == ("0.0.0.0", 5025)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("localhost")


def status_of(reply: bytes) -> int:
    return wire.decode_reply(reply).status


def test_one_controlling_host_takeover_and_release():
    """Issue 9 item 4: a second host's state-changing commands are refused (BUSY, with a text
    saying who holds the device and since when) until it takes over; then the first host's are
    refused, so the two never both believe their batch was applied."""
    service = make_service()
    other = 0xB0B
    batch = apply_message(1, [3])
    theirs = batch[:5] + other.to_bytes(4, "little") + batch[9:]
    state = snapshot(service)
    refused = wire.decode_reply(service.handle(theirs))
    assert refused.status == Status.BUSY and refused.session == other
    assert "controlled by another host" in wire.decode_error(refused.body)
    assert "since" in wire.decode_error(refused.body)
    assert status_of(service.handle(claim_message(other))) == Status.BUSY
    assert snapshot(service) == state
    assert service.next_error()[0] == -240
    # reads and SAFE stay open to anyone
    assert status_of(service.handle(wire.encode_request(5, Op.READ_ALL, b"", other))) == Status.OK
    # the other host takes over (the first died): now the first is refused
    taken = wire.decode_reply(service.handle(claim_message(other, wire.Claim.TAKE_OVER)))
    assert taken.status == Status.OK and wire.decode_info(taken.body).owner == other
    assert status_of(service.handle(apply_message(2, [4]))) == Status.BUSY
    assert status_of(service.handle(theirs)) == Status.OK
    # release: only by the owner; then anyone may claim
    assert status_of(service.handle(claim_message(SESSION, wire.Claim.RELEASE))) == Status.BUSY
    assert status_of(service.handle(claim_message(other, wire.Claim.RELEASE))) == Status.OK
    assert service.info().owner == 0
    assert status_of(service.handle(claim_message(SESSION))) == Status.OK
    assert status_of(service.handle(wire.encode_request(9, Op.CLAIM, b"\x00", 0))) == (
        Status.MALFORMED
    )


def test_a_retry_from_a_host_that_was_taken_over_is_still_answered_from_the_window():
    service = make_service()
    message = apply_message(1, [0, 1])
    first = service.handle(message)
    service.handle(claim_message(0xB0B, wire.Claim.TAKE_OVER))
    assert service.handle(message) == first  # it WAS applied: say so, don't say BUSY


def test_sequence_rules_failed_commands_sequence_zero_and_stale_numbers():
    service = make_service()
    many = PulseBatch.from_flat([0], SHAPE[1], 70_000)  # above max_pulses: SAFETY
    body = wire.encode_batch(many, many.locate(SHAPE, SafetyLimits(max_pulses=10**6)), True)
    bad = wire.encode_request(5, Op.APPLY, body, SESSION)
    assert status_of(service.handle(bad)) == Status.SAFETY
    assert service.info().last_seq == 0 and not service._done  # failures enter no window
    assert status_of(service.handle(apply_message(0, [0]))) == Status.MALFORMED
    assert status_of(service.handle(apply_message(10, [0]))) == Status.OK
    assert status_of(service.handle(apply_message(7, [1]))) == Status.SEQUENCE  # older
    assert status_of(service.handle(apply_message(11, [1]))) == Status.OK
    # a valid frame shorter than a header: MALFORMED, sequence and session 0
    short = wire.decode_reply(service.handle(b"\x01\x00"))
    assert (short.status, short.seq, short.op, short.session) == (Status.MALFORMED, 0, 0, 0)


def test_empty_requests_are_valid_and_change_nothing():
    service = make_service()
    state = snapshot(service)
    empty = PulseBatch.from_flat([], SHAPE[1])
    body = wire.encode_batch(empty, empty.locate(SHAPE, SafetyLimits()), True)
    reply = wire.decode_reply(service.handle(wire.encode_request(1, Op.APPLY, body, SESSION)))
    assert (reply.status, reply.body) == (Status.OK, b"")
    assert service.info().last_seq == 1  # an empty APPLY is a sequenced command like any
    for op, req in ((Op.READ, wire.encode_cells(np.array([], int))),
                    (Op.READ_REGION, wire.encode_region(2, 3, 0, 4))):  # fmt: skip
        reply = wire.decode_reply(service.handle(wire.encode_request(2, op, req)))
        assert (reply.status, reply.body) == (Status.OK, b"")
    assert snapshot(service) == state


def test_device_bounds_are_reported_and_enforced():
    service = make_service(max_message=512, max_cells=40)
    info = service.info()
    assert (info.max_message, info.max_cells, info.hardware_limits) == (512, 40, SafetyLimits())
    assert status_of(service.handle(apply_message(1, list(range(35))))) == Status.OK
    too_many = apply_message(2, list(range(35)) * 2)  # 70 cells > 40
    assert status_of(service.handle(too_many)) == Status.TOO_LARGE
    read = wire.encode_request(3, Op.READ_ALL)  # 35 cells: fits 512 bytes (10 + 280)
    assert status_of(service.handle(read)) == Status.OK
    big = wire.encode_request(4, Op.READ, wire.encode_cells(np.zeros(70, int)))
    assert status_of(service.handle(big)) == Status.TOO_LARGE
    assert status_of(service.handle(b"\x00" * 600)) == Status.TOO_LARGE
    with pytest.raises(ValueError, match="max_message"):
        make_service(max_message=100)


def test_configure_may_restore_the_hardware_limits_but_never_exceed_them():
    service = make_service()
    narrow = wire.encode_limits(*SHAPE, SafetyLimits(v_max=0.5))
    full = wire.encode_limits(*SHAPE, SafetyLimits())
    assert status_of(service.handle(wire.encode_request(1, Op.CONFIGURE, narrow, SESSION))) == 0
    reply = wire.decode_reply(service.handle(wire.encode_request(2, Op.CONFIGURE, full, SESSION)))
    info = wire.decode_info(reply.body)
    assert reply.status == Status.OK and info.limits == info.hardware_limits == SafetyLimits()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_native_read_back_carries_the_devices_own_values_in_their_own_width(dtype):
    """Protocol version 3, APPLY flag 0x20: binary32 devices answer 4 bytes per reading,
    binary64 devices 8; the values are those of a plain read-back (and of the devices)."""
    from memristor_hil.powerlaw import PowerLaw

    services = [
        CrossbarService(EmulatedCrossbar(*SHAPE, PowerLaw(dtype=dtype), seed=3), log=False)
        for _ in range(2)
    ]
    batch = PulseBatch.from_flat([0, 3, 3, 9], SHAPE[1], 2)
    replies = []
    for service, native in zip(services, (False, True), strict=True):
        service.handle(claim_message(SESSION))
        body = wire.encode_batch(batch, batch.locate(SHAPE, SafetyLimits()), True, native)
        reply = wire.decode_reply(service.handle(wire.encode_request(1, Op.APPLY, body, SESSION)))
        assert reply.status == Status.OK and service.info().version >= 3
        replies.append(reply.body)
    plain = wire.decode_resistances(replies[0], 4)
    native = wire.decode_readings(replies[1], 4)
    assert len(replies[1]) == 4 * (4 if dtype == "float32" else 8)
    assert native.dtype == np.dtype(dtype)
    assert plain.tobytes() == native.astype(np.float64).tobytes()
    assert native.tobytes() == services[1].xbar.read([0, 0, 0, 1], [0, 3, 3, 2]).tobytes()


def test_native_read_back_without_read_back_is_malformed_and_changes_nothing():
    service = make_service()
    state = snapshot(service)
    batch = PulseBatch([0], [1])
    body = bytearray(wire.encode_batch(batch, batch.locate(SHAPE, SafetyLimits()), False))
    body[0] |= 0x20
    reply = wire.decode_reply(
        service.handle(wire.encode_request(1, Op.APPLY, bytes(body), SESSION))
    )
    assert reply.status == Status.MALFORMED and "0x20" in wire.decode_error(reply.body)
    assert snapshot(service) == state
