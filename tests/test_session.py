"""The drivers' session layer over an in-memory link whose bytes are pinned in tables (in the
manner of PyMeasure's ``expected_protocol``): numbering, the outbox, resume, split parts."""

from collections import deque

import numpy as np
import pytest
from memristor_hil.drivers._sequenced import LinkTimeout, SequencedCrossbar

from memristor_hil import (
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
    PulseBatch,
    SafetyLimits,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.pulses import cell_indices

#: Bounds small enough that a 40-cell batch is split (docs/protocol.md, section 4).
SMALL = {"max_message": 256, "max_cells": 16}
INFO = wire.DeviceInfo(4, 10, SafetyLimits(), "acme,xbar-4x10", last_seq=41, version=2, **SMALL)
LOST = object()  #: the reply never comes (the driver times out)
DOWN = object()  #: the link fails as the request is sent (the device never sees it)


class TableLink:
    """A link that checks each request against a table of ``(request, reply)`` and answers
    from it; a request's session field is compared as zeros and echoed in the replies."""

    reopen_after_timeout = False

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.replies: deque[bytes] = deque()
        self.reopens = 0

    def send(self, op, message):
        session = message[5:9]
        plain = message[:5] + bytes(4) + message[9:]
        assert self.script, f"unexpected request {wire.decode_request(plain)}"
        expected, answer = self.script.pop(0)
        assert plain == expected, (wire.decode_request(plain), wire.decode_request(expected))
        if answer is DOWN:
            raise OSError("link down")
        if answer is not LOST:
            self.replies.append(answer[:6] + session + answer[10:])

    def receive(self, timeout):
        if self.replies:
            return self.replies.popleft()
        raise LinkTimeout

    def drain(self):
        pass

    def reopen(self):
        self.reopens += 1

    def close(self):
        pass


def request(seq, op, body=b""):
    return wire.encode_request(seq, op, body)


def reply(seq, op, body=b"", status=Status.OK):
    return wire.encode_reply(seq, op, status, body)


def ok(seq, op=Op.APPLY, body=b""):
    return (request(seq, op, body), reply(seq, op))


def opening(info=INFO):
    body = wire.encode_info(info)
    return [
        (request(1, Op.IDENTIFY), reply(1, Op.IDENTIFY, body)),
        (request(2, Op.CLAIM, b"\x00"), reply(2, Op.CLAIM, body)),
    ]


def apply_body(batch, shape=(4, 10)):
    return wire.encode_batch(batch, cell_indices(batch.rows, batch.cols, shape), False)


def parts(batch, bounds=(256, 16), shape=(4, 10)):
    cells = cell_indices(batch.rows, batch.cols, shape)
    return wire.split_batch(batch, cells, False, False, bounds)


A = PulseBatch([0], [0], pulses=7)
C = PulseBatch([3], [9], pulses=2)
rng = np.random.default_rng(1)
B = PulseBatch.from_flat(rng.permutation(40), 10, pulses=rng.integers(1, 9, 40))


def open_table(script, **options):
    link = TableLink(script)
    return link, SequencedCrossbar(link, "table", timeout=0.05, **options)


@pytest.mark.parametrize("loss", [LOST, DOWN], ids=["reply lost", "request lost"])
def test_an_unanswered_apply_then_a_split_batch_then_another_apply(loss):
    """Defect 1 of issue 25: the unanswered APPLY keeps its number (42) in the outbox and is
    sent again, the same bytes, before the split batch's parts (numbered once, when queued,
    in order) and the third apply, which gets a new number (before: it reused 42 and was
    refused with SEQUENCE)."""
    b_parts = parts(B)
    assert len(b_parts) > 1
    n = len(b_parts)
    script = [
        *opening(),
        (request(42, Op.APPLY, apply_body(A)), loss),
        ok(43, Op.SAFE),  # the failed apply asks for the safe state (unsequenced)
        ok(42, body=apply_body(A)),  # sent again first: answered (from the window, or run)
        *[ok(44 + i, body=body) for i, body in enumerate(b_parts)],
        ok(44 + n, body=apply_body(C)),
        ok(45 + n, Op.SAFE),
        (request(46 + n, Op.CLAIM, b"\x02"), reply(46 + n, Op.CLAIM)),
    ]
    link, xbar = open_table(script, retries=0)
    with xbar:
        with pytest.raises((CrossbarTimeoutError, ConnectionLostError), match="unconfirmed"):
            xbar.apply(A)
        assert xbar.unanswered == 42
        xbar.apply(B)
        assert xbar.unanswered is None
        xbar.apply(C)
    assert not link.script, link.script
    assert xbar.stats["split_parts"] == n


def test_same_call_again_resumes_it_and_resume_returns_its_read_back():
    body = wire.encode_batch(A, cell_indices([0], [0], (4, 10)), True)
    readings = wire.encode_resistances(np.array([1.5e8]))
    script = [
        *opening(),
        (request(42, Op.APPLY, body), LOST),
        ok(43, Op.SAFE),
        (request(42, Op.APPLY, body), reply(42, Op.APPLY, readings)),
        ok(44, body=apply_body(C)),
    ]
    link, xbar = open_table(script, retries=0)
    with pytest.raises(CrossbarTimeoutError):
        xbar.apply(A, read_back=True)
    assert xbar.apply(A, read_back=True).tolist() == [1.5e8]  # not applied twice: one 42
    xbar.apply(C)
    assert not link.script and xbar.unanswered is None


def test_a_resend_refused_with_sequence_is_reported_by_its_status():
    """The device no longer remembers the unanswered command (another host, a reset): the
    status code, not the text, says so; the outbox is empty afterwards."""
    script = [
        *opening(),
        (request(42, Op.APPLY, apply_body(A)), LOST),
        ok(43, Op.SAFE),
        (request(42, Op.APPLY, apply_body(A)),
         reply(42, Op.APPLY, wire.encode_error("anything at all"), Status.SEQUENCE)),
        ok(44, Op.SAFE),
        ok(45, body=apply_body(C)),
    ]  # fmt: skip
    link, xbar = open_table(script, retries=0)
    with pytest.raises(CrossbarTimeoutError):
        xbar.apply(A)
    with pytest.raises(DeviceError) as caught:
        xbar.apply(C)
    assert caught.value.status == Status.SEQUENCE
    assert "this apply was not sent" in str(caught.value)
    assert xbar.unanswered is None
    xbar.apply(C)
    assert not link.script


def test_a_busy_reply_reclaims_then_resends_the_same_bytes():
    script = [
        *opening(),
        (request(42, Op.APPLY, apply_body(A)),
         reply(42, Op.APPLY, wire.encode_error("not claimed"), Status.BUSY)),
        (request(43, Op.CLAIM, b"\x00"), reply(43, Op.CLAIM, wire.encode_info(INFO))),
        ok(42, body=apply_body(A)),
    ]  # fmt: skip
    link, xbar = open_table(script)
    xbar.apply(A)
    assert xbar.stats["reclaims"] == 1 and not link.script


def test_a_split_part_refused_drops_the_rest_and_says_which_parts_were_applied():
    b_parts = parts(B)
    n = len(b_parts)
    script = [
        *opening(),
        ok(42, body=b_parts[0]),
        (request(43, Op.APPLY, b_parts[1]),
         reply(43, Op.APPLY, wire.encode_error("hot"), Status.DEVICE)),
        ok(42 + n, Op.SAFE),
        ok(43 + n, body=apply_body(C)),  # the dropped parts' numbers are skipped, not reused
    ]  # fmt: skip
    link, xbar = open_table(script)
    with pytest.raises(DeviceError, match=rf"parts 1\.\.1 of {n} were applied"):
        xbar.apply(B)
    xbar.apply(C)
    assert not link.script


# ---------------------------------------------------------------------- defect 5: sizes
@pytest.mark.parametrize(
    ("voltage", "bounds"),
    [(0.1, (1024, 100)), ("per-cell", (1024, 10_000)), (0.1, (256, 10_000))],
)
def test_split_parts_fill_the_bounds_exactly(voltage, bounds):
    """Each part but the last holds as many entries as fit: one more would break the message
    bound or the cell bound. (Before: 49 per-cell-voltage entries in a 1,024-byte part where
    83 fit, 82 shared entries where 100 fit.)"""
    n = 1000
    flat = np.random.default_rng(2).permutation(100 * 100)[:n]
    volts = np.full(n, 0.1) if voltage == "per-cell" else voltage
    batch = PulseBatch.from_flat(flat, 100, pulses=3, voltage=volts)
    cells = cell_indices(batch.rows, batch.cols, (100, 100))
    bodies = wire.split_batch(batch, cells, False, False, bounds)
    max_message, max_cells = bounds
    sizes = [wire.decode_batch(b, 100, 100).flat.size for b in bodies]
    assert sum(sizes) == n
    for start, (body, size) in enumerate(zip(bodies[:-1], sizes, strict=False)):
        assert wire.REQUEST_HEADER + len(body) <= max_message
        first = sum(sizes[:start])
        one_more = PulseBatch.from_flat(
            flat[first : first + size + 1], 100, pulses=3,
            voltage=volts if isinstance(volts, float) else volts[: size + 1],
        )  # fmt: skip
        bigger = wire.encode_batch(one_more, cell_indices(one_more.rows, one_more.cols,
                                                          (100, 100)), False)  # fmt: skip
        assert size == max_cells or wire.REQUEST_HEADER + len(bigger) > max_message
    if bounds == (1024, 100):
        assert sizes[0] == 100 and len(bodies) == 10  # the cell bound: before, 82 (13 parts)
    if voltage == "per-cell":
        # 6 + 1 + 8 + 83 * (4 + 8) = 1011 <= 1015 bytes, 84 do not fit: before, 49 (21 parts)
        assert sizes[0] == 83 and len(bodies) == 13


def test_read_cells_per_command_fits_request_and_reply():
    assert wire.read_cells_per_command((256, 1000)) == (256 - wire.REPLY_HEADER) // 8
    assert wire.read_cells_per_command((1 << 20, 100)) == 100
