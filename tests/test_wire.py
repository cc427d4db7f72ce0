"""The wire codec in process: messages, batches, serial frames and SCPI blocks."""

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memristor_hil import PulseBatch, SafetyLimits
from memristor_hil.protocol import framing, scpi
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.framing import FrameDecoder, FrameFault, encode_frame
from memristor_hil.protocol.messages import Op, Status, WireError

SHAPE = (6, 9)
WIDE = SafetyLimits(max_pulses=2**31 - 1)


def roundtrip(batch: PulseBatch, read_back: bool = True) -> wire.DecodedBatch:
    cells = batch.locate(SHAPE, WIDE)
    body = wire.encode_batch(batch, cells, read_back)
    return wire.decode_batch(body, *SHAPE)


def assert_same_batch(a: PulseBatch, b: PulseBatch) -> None:
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.cols, b.cols)
    np.testing.assert_array_equal(a.pulses, b.pulses)
    np.testing.assert_array_equal(np.broadcast_to(a.voltage, len(a)), b.voltage)
    np.testing.assert_array_equal(np.broadcast_to(a.width, len(a)), b.width)
    assert type(a.voltage) is type(b.voltage) and type(a.width) is type(b.width)


def test_protocol_doc_example_bytes():
    batch = PulseBatch([0, 0], [0, 5], pulses=10)
    body = wire.encode_batch(batch, batch.locate((4, 8), SafetyLimits()), True)
    message = wire.encode_request(2, Op.APPLY, body, session=0x1234ABCD)
    assert message.hex(" ") == (
        "02 00 00 00 04 cd ab 34 12 01 01 02 00 00 00 00 00 00 00 05 00 00 00 0a "
        "9a 99 99 99 99 99 b9 3f 8d ed b5 a0 f7 c6 b0 3e"
    )
    frame = encode_frame(wire.encode_request(1, Op.IDENTIFY, session=0x1234ABCD))
    assert frame[:6] == b"\xa5\x5a\x09\x00\x00\x00"
    assert frame[6:10] == struct.pack("<I", zlib.crc32(frame[:6]))


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.integers(0, SHAPE[0] * SHAPE[1] - 1), max_size=60),
    pulses=st.one_of(st.integers(0, 2**31 - 1), st.just(None)),
    per_cell_voltage=st.booleans(),
    read_back=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batches_round_trip_exactly(cells, pulses, per_cell_voltage, read_back, seed):
    rng = np.random.default_rng(seed)
    n = len(cells)
    per_cell = rng.integers(0, rng.choice([200, 70_000]), n) if pulses is None else pulses
    # (an empty batch with per-cell voltages trips PulseBatch.locate itself: not the codec's)
    voltage = rng.uniform(0.05, 1.0, n) if per_cell_voltage and n else 0.1
    batch = PulseBatch.from_flat(cells, SHAPE[1], per_cell, voltage=voltage, width=2e-6)
    decoded = roundtrip(batch, read_back)
    assert decoded.read_back == read_back
    np.testing.assert_array_equal(decoded.flat, np.asarray(cells, dtype=np.int64))
    assert_same_batch(batch, decoded.batch)


def test_dense_ascending_batches_use_the_smaller_bitmap():
    batch = PulseBatch.from_flat(np.arange(0, 54, 2), SHAPE[1])
    cells = batch.locate(SHAPE, SafetyLimits())
    body = wire.encode_batch(batch, cells, False)
    assert body[0] & 0x02  # bitmap
    assert len(body) < 6 + 4 * len(batch)
    assert_same_batch(batch, wire.decode_batch(body, *SHAPE).batch)
    sparse = PulseBatch.from_flat([0, 53], SHAPE[1])
    body = wire.encode_batch(sparse, sparse.locate(SHAPE, SafetyLimits()), False)
    assert not body[0] & 0x02  # two cells far apart: the list is smaller


def test_resistances_round_trip_bit_for_bit():
    values = np.random.default_rng(1).lognormal(15, 3, 1000)
    values[:3] = [np.nextafter(1e8, 2e8), 5e-324, 1.7976931348623157e308]
    out = wire.decode_resistances(wire.encode_resistances(values), len(values))
    assert out.tobytes() == values.tobytes()


def test_info_and_limits_round_trip():
    limits = SafetyLimits(-1.2, 1.1, 2e-8, 5e-4, 1000, 2e-4)
    info = wire.DeviceInfo(
        12, 34, limits, "acme,xbar,7,1.0", last_seq=99, hardware_limits=SafetyLimits(),
        max_message=4096, max_cells=512, window=4, owner=0xCAFE,
    )  # fmt: skip
    assert wire.decode_info(wire.encode_info(info)) == info
    too_small = wire.encode_info(dataclasses.replace(info, max_message=100))
    with pytest.raises(wire.WireError, match="bounds"):
        wire.decode_info(too_small)
    rows, cols, back, end = wire.decode_limits(wire.encode_limits(3, 4, limits))
    assert (rows, cols, back, end) == (3, 4, limits, 52)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", Status.MALFORMED),
        (struct.pack("<BBI", 0x80, 1, 0) + b"\x01" + b"\0" * 16, Status.MALFORMED),
        (struct.pack("<BBI", 0, 3, 0) + b"\x01" + b"\0" * 16, Status.MALFORMED),
        (struct.pack("<BBI", 0, 1, wire.MAX_CELLS + 1), Status.TOO_LARGE),
        (struct.pack("<BBII", 0, 1, 1, 54) + b"\x01" + b"\0" * 16, Status.OUT_OF_RANGE),
        (
            struct.pack("<BBIII", 2, 1, 10, 50, 10)
            + b"\xff\x03\x01"
            + struct.pack("<dd", 0.1, 1e-6),
            Status.OUT_OF_RANGE,
        ),
        # the layout is checked before the addresses: truncated AND out of range is MALFORMED
        (struct.pack("<BBIII", 2, 1, 10, 50, 10) + b"\xff\x03", Status.MALFORMED),
        # bitmap padding bits beyond the span must be 0
        (
            struct.pack("<BBIII", 2, 1, 2, 0, 2) + b"\x07\x01" + struct.pack("<dd", 0.1, 1e-6),
            Status.MALFORMED,
        ),
        (struct.pack("<BBII", 0, 1, 2, 0), Status.MALFORMED),  # truncated cell list
    ],
)
def test_bad_batches_raise_wire_errors_with_a_status(body, status):
    with pytest.raises(WireError) as info:
        wire.decode_batch(body, *SHAPE)
    assert info.value.status == status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bodies_never_crash_the_decoders(body):
    for decode in (
        lambda b: wire.decode_batch(b, *SHAPE),
        wire.decode_cells,
        wire.decode_region,
        wire.decode_info,
        wire.decode_limits,
        wire.decode_request,
        wire.decode_reply,
        wire.decode_error_entry,
    ):
        try:
            decode(body)
        except WireError:
            pass
    assert isinstance(wire.decode_error(body), str)


# ---------------------------------------------------------------------- serial frames
def messages_from(data: bytes) -> tuple[list[bytes], list[FrameFault]]:
    decoder = FrameDecoder()
    decoder.feed(data)
    events = list(decoder.events())
    messages = [e for e in events if isinstance(e, bytes)]
    return messages, [e for e in events if not isinstance(e, bytes)]


def test_frames_survive_any_split_of_the_stream():
    messages = [wire.encode_request(i, Op.READ_ALL, bytes(range(i))) for i in range(1, 20)]
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(stream), 7):
        decoder.feed(stream[i : i + 7])
        got += list(decoder.events())
    assert got == messages
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=80), min_size=3, max_size=8),
    victim=st.integers(0, 7),
    position=st.integers(0, 200),
    mode=st.sampled_from(["flip", "drop", "insert"]),
    byte=st.integers(1, 255),
)
# the victim's CRC ends in 0xA5, the next frame's sync byte: its drop damages the next frame
@example(payloads=[b"\x00", b"\x00", b"\xa6T\x8e3"], victim=2, position=56, mode="drop", byte=1)
def test_a_damaged_byte_costs_at_most_its_frame(payloads, victim, position, mode, byte):
    victim %= len(payloads)
    payloads = [bytes([i]) + p for i, p in enumerate(payloads)]  # tell them apart
    sentinel = b"\xffsentinel"  # completes a frame left waiting for a dropped byte
    payloads.append(sentinel)
    frames = [bytearray(encode_frame(p)) for p in payloads]
    target = frames[victim]
    position %= len(target)
    if mode == "flip":
        target[position] ^= byte
    elif mode == "drop":
        dropped = target.pop(position)
        # Dropping a frame's last byte when the next frame starts with that same byte (a CRC
        # ending in 0xA5, then the next sync) leaves the stream that dropping the next frame's
        # first byte would: on the wire, the damaged frame is the next one.
        if position == len(target) and frames[victim + 1][0] == dropped:
            victim += 1
    else:
        target.insert(position, byte)
    got, faults = messages_from(b"".join(bytes(f) for f in frames))
    expected = [p for i, p in enumerate(payloads) if i != victim]
    # every undamaged frame is delivered, in order; nothing damaged is ever delivered (the
    # victim only when the damage fell outside its bytes, e.g. a byte inserted before it)
    assert [m for m in got if m != payloads[victim]] == expected
    assert all(m in payloads for m in got)
    if len(got) < len(payloads):
        assert faults


def test_frame_lengths_are_bounded_before_waiting_for_the_bytes():
    head = framing.SYNC + struct.pack("<I", wire.MAX_MESSAGE + 1)
    bogus = head + struct.pack("<I", zlib.crc32(head))
    good = encode_frame(b"hello")
    got, faults = messages_from(bogus + good)
    assert got == [b"hello"]
    assert any("exceeds" in f.reason for f in faults)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_frame_decoder(data):
    decoder = FrameDecoder()
    decoder.feed(data)
    for event in decoder.events():
        assert isinstance(event, (bytes, FrameFault))
    assert decoder.buffered <= max(len(data), framing.HEADER_SIZE)


# ---------------------------------------------------------------------- SCPI
def scpi_events(data: bytes) -> list:
    parser = scpi.ScpiParser()
    parser.feed(data)
    return list(parser.events())


def test_scpi_text_and_block_commands():
    message = wire.encode_request(7, Op.APPLY, b"\n\n#9 binary with newlines")
    line = scpi.encode_command(Op.APPLY, message)
    events = scpi_events(b"*IDN?\n:syst:err?\r\nOUTP OFF\n" + line)
    assert [type(e).__name__ for e in events] == [
        "TextCommand",
        "TextCommand",
        "TextCommand",
        "BlockCommand",
    ]
    assert events[1].header == "SYST:ERR?" and events[2].args == "OFF"
    assert events[3].op == Op.APPLY and scpi.block_message(events[3].data) == message


def test_scpi_blocks_read_back_through_read_block():
    data = bytes(range(256)) * 3
    stream = scpi.encode_block(data) + b"\n"
    pos = 0

    def read_exact(n):
        nonlocal pos
        pos += n
        return stream[pos - n : pos]

    assert scpi.read_block(read_exact) == data
    with pytest.raises(ValueError, match="bound"):
        pos = 0
        scpi.read_block(read_exact, max_size=10)


def test_scpi_oversized_input_is_refused_without_buffering():
    events = scpi_events(b"XBAR:APPL? #9999999999\n*IDN?\n")
    assert isinstance(events[0], scpi.ScpiFault) and events[0].code == -223
    assert events[-1] == scpi.TextCommand("*IDN?", "")
    events = scpi_events(b"A" * 500 + b"\n*IDN?\n")
    assert isinstance(events[0], scpi.ScpiFault) and events[-1].header == "*IDN?"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_scpi_parser(data):
    for event in scpi_events(data + b"\n*OPC?\n"):
        assert isinstance(event, (scpi.TextCommand, scpi.BlockCommand, scpi.ScpiFault))


def test_a_partial_frame_expires_after_the_idle_timeout_and_the_hunt_goes_on():
    decoder = FrameDecoder(idle_timeout=0.2)
    bogus = encode_frame(b"x" * 1000)[:30]  # a valid header announcing 1000 bytes, cut short
    real = wire.encode_request(5, Op.READ_ALL)
    decoder.feed(bogus + encode_frame(real), now=10.0)
    assert list(decoder.events()) == []  # waiting for the 1000 bytes
    assert decoder.idle_deadline() == pytest.approx(10.2)
    assert list(decoder.expire(now=10.1)) == []  # not idle long enough
    events = list(decoder.expire(now=10.25))
    assert [type(e) for e in events] == [FrameFault, bytes]
    assert events[0].discarded == len(bogus) and events[1] == real
    assert decoder.buffered == 0 and decoder.idle_deadline() is None


def test_safety_limits_within_and_narrowed_are_the_one_rule():
    """One SafetyLimits.within()/narrowed() for the service's CONFIGURE, the SMU driver and
    the ArC drivers (issue 25)."""
    from memristor_hil.errors import SafetyLimitError

    hw = SafetyLimits()
    assert SafetyLimits(v_min=-1.0, v_max=1.0, max_pulses=10, compliance=1e-4).within(hw)
    for wider in ({"v_min": -2.0}, {"width_max": 1e-2}, {"max_pulses": 70_000},
                  {"compliance": 1e-2}):  # fmt: skip
        assert not SafetyLimits(**wider).within(hw)
    assert SafetyLimits(max_pulses=70_000).within(hw, ("v_min", "v_max"))
    with pytest.raises(SafetyLimitError, match="outside what the instrument can do"):
        SafetyLimits(v_max=2.0).check_within(hw, "the board")
    both = SafetyLimits(v_min=-1.0, width_min=1e-6).narrowed(SafetyLimits(v_max=0.5))
    assert both == SafetyLimits(v_min=-1.0, v_max=0.5, width_min=1e-6)
