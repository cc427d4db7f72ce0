"""Issue 25, defect 3, last clause: an interrupted split batch stays resumable and is reported
to the next host (protocol version 4: APPLY flag 0x40 and the *info* field ``interrupted``,
docs/protocol.md 5.2). The codec, the service core in process, and the driver over an in-memory
link; the end-to-end kill -9 tests are in test_hil_e2e.py."""

import struct
import time

import numpy as np
import pytest
from memristor_hil.drivers._sequenced import SequencedCrossbar
from memristor_hil.emulator import EmulatedCrossbar
from memristor_hil.emulator.service.core import CrossbarService
from test_session import TableLink, ok, opening, reply, request

from memristor_hil import PulseBatch, SafetyLimits
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.pulses import cell_indices

SHAPE = (4, 10)
BOUNDS = (256, 16)
A, B = 0xA11CE, 0xB0B
rng = np.random.default_rng(7)
BATCH = PulseBatch.from_flat(rng.permutation(40), 10, pulses=rng.integers(1, 9, 40))


def split(batch=BATCH, mark=True):
    cells = cell_indices(batch.rows, batch.cols, SHAPE)
    return wire.split_batch(batch, cells, False, False, BOUNDS, mark)


def count(body: bytes) -> int:
    return struct.unpack_from("<I", body, 2)[0]


# ---------------------------------------------------------------------- codec
def test_split_parts_carry_flag_0x40_on_all_but_the_last_only_when_asked():
    marked, plain = split(), split(mark=False)
    assert len(marked) >= 3
    assert [body[0] & 0x40 for body in marked] == [0x40] * (len(marked) - 1) + [0]
    assert all(body[0] & 0x40 == 0 for body in plain)
    assert [m[1:] for m in marked] == [p[1:] for p in plain]  # nothing else differs
    one = split(PulseBatch([0], [0], pulses=1))
    assert len(one) == 1 and one[0][0] & 0x40 == 0  # a batch sent whole is not "split"
    decoded = [wire.decode_batch(body, *SHAPE) for body in marked]
    assert [d.more for d in decoded] == [True] * (len(marked) - 1) + [False]


def test_flag_0x40_with_read_back_is_malformed():
    body = bytearray(split()[0])
    body[0] |= 0x01
    with pytest.raises(wire.WireError, match="0x40") as refused:
        wire.decode_batch(bytes(body), *SHAPE)
    assert refused.value.status == Status.MALFORMED


@pytest.mark.parametrize("version", [2, 3, 4])
def test_info_carries_interrupted_only_from_version_4(version):
    info = wire.DeviceInfo(4, 10, SafetyLimits(), "acme,x", version=version, interrupted=(A, 9, 16))
    body = wire.encode_info(info)
    plain = wire.encode_info(wire.DeviceInfo(4, 10, SafetyLimits(), "acme,x", version=version))
    v3 = wire.encode_info(wire.DeviceInfo(4, 10, SafetyLimits(), "acme,x", version=3))
    assert len(body) == len(plain) == len(v3) + (12 if version >= 4 else 0)
    got = wire.decode_info(body).interrupted
    assert got == ((A, 9, 16) if version >= 4 else None)
    assert wire.decode_info(plain).interrupted is None  # zeros: none
    assert wire.decode_info(body).identity == "acme,x"


# ---------------------------------------------------------------------- the service core
def message(seq, op, body=b"", session=A):
    return wire.encode_request(seq, op, body, session)


def answer(service, seq, op, body=b"", session=A) -> wire.Reply:
    return wire.decode_reply(service.handle(message(seq, op, body, session)))


def claimed(**options) -> CrossbarService:
    service = CrossbarService(EmulatedCrossbar(*SHAPE, seed=3), log=False, **options)
    service.link = "link A"
    assert answer(service, 1, Op.CLAIM, b"\x00").status == Status.OK
    return service


def interrupted(service, session=B) -> tuple | None:
    return wire.decode_info(answer(service, 99, Op.IDENTIFY, session=session).body).interrupted


def send_parts(service, parts, first_seq=10):
    for k, body in enumerate(parts):
        assert answer(service, first_seq + k, Op.APPLY, body).status == Status.OK


@pytest.mark.parametrize("end", ["link lost", "lease", "take over", "release"])
def test_a_claim_ending_mid_batch_is_reported_until_the_next_apply(end):
    parts = split()
    service = claimed(lease=0.05 if end == "lease" else 30.0)
    send_parts(service, parts[:2])
    assert answer(service, 11, Op.APPLY, parts[1]).status == Status.OK  # a retry, from the window
    assert interrupted(service) is None  # still the holder's batch in progress
    if end == "link lost":
        service.link_lost("link A")
    elif end == "lease":
        time.sleep(0.1)
    elif end == "release":
        assert answer(service, 12, Op.CLAIM, b"\x02").status == Status.OK
    service.link = "link B"
    mode = b"\x01" if end == "take over" else b"\x00"
    info = wire.decode_info(answer(service, 2, Op.CLAIM, mode, session=B).body)
    assert info.interrupted == (A, 11, count(parts[0]) + count(parts[1]))
    assert interrupted(service) == info.interrupted  # reported again, to anyone
    rest = PulseBatch([0], [1], pulses=1)
    body = wire.encode_batch(rest, cell_indices(rest.rows, rest.cols, SHAPE), False)
    assert answer(service, 20, Op.APPLY, body, session=B).status == Status.OK
    assert interrupted(service) is None


def test_its_own_host_back_after_a_lost_link_continues_the_count():
    """The dead link's batch is resumed by its own host (same session, the next numbers, as
    the driver's resume() sends them): the entries count on; if that host dies too, the
    next host is told every entry applied."""
    parts = split()
    service = claimed()
    send_parts(service, parts[:1])
    service.link_lost("link A")
    service.link = "link A again"
    assert answer(service, 3, Op.CLAIM, b"\x00").status == Status.OK
    send_parts(service, parts[1:2], first_seq=11)
    service.link_lost("link A again")
    assert interrupted(service) == (A, 11, count(parts[0]) + count(parts[1]))


def test_a_new_batch_after_a_refused_part_starts_its_own_count():
    parts = split()
    service = claimed()
    send_parts(service, parts[:1])
    bad = bytearray(parts[1])
    bad[-1] = 0x7F
    assert answer(service, 11, Op.APPLY, bytes(bad)).status != Status.OK
    send_parts(service, parts[:1], first_seq=14)  # the driver skipped the dropped numbers
    service.link_lost("link A")
    assert interrupted(service) == (A, 14, count(parts[0]))


def test_a_finished_batch_or_a_refused_part_reports_nothing():
    parts = split()
    service = claimed()
    send_parts(service, parts)
    service.link_lost("link A")
    assert interrupted(service) is None
    service = claimed()
    bad = bytearray(parts[1])
    bad[-1] = 0x7F  # a width far outside the limits: refused, not executed
    send_parts(service, parts[:1])
    assert answer(service, 11, Op.APPLY, bytes(bad)).status == Status.SAFETY
    service.link_lost("link A")
    assert interrupted(service) == (A, 10, count(parts[0]))  # only what was executed


# ---------------------------------------------------------------------- the driver
SMALL = {"max_message": BOUNDS[0], "max_cells": BOUNDS[1]}


def info(version, **fields):
    return wire.DeviceInfo(*SHAPE, SafetyLimits(), "acme,x", last_seq=41, version=version,
                           **SMALL, **fields)  # fmt: skip


@pytest.mark.parametrize("version", [2, 3, 4])
def test_the_driver_sets_flag_0x40_only_on_a_version_4_device(version):
    parts = split(mark=version >= 4)
    script = [*opening(info(version)), *(ok(42 + k, body=b) for k, b in enumerate(parts))]
    link = TableLink(script)  # checks every byte: a v2/v3 device never sees 0x40
    xbar = SequencedCrossbar(link, "table", timeout=0.05)
    assert xbar.interrupted_batch is None
    xbar.apply(BATCH)
    assert not link.script


def test_the_driver_warns_of_an_interrupted_batch_and_keeps_it():
    told = info(4, interrupted=(A, 17, 32))
    script = opening(told)
    script[0] = (request(1, Op.IDENTIFY), reply(1, Op.IDENTIFY, wire.encode_info(told)))
    with pytest.warns(RuntimeWarning, match=r"session 000a11ce.* first 32 entries"):
        xbar = SequencedCrossbar(TableLink(script), "table", timeout=0.05)
    assert xbar.interrupted_batch == (A, 17, 32)
