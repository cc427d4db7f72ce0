"""One session with a device at the end of a link: numbers, retries, reclaims, and one outbox.

:class:`Session` owns everything the serial and VISA drivers share about talking to a device
(docs/protocol.md, sections 4-5): the :class:`Link`, the random session number (the claim),
the sequence counter, the retries and the reclaim after the device forgot the claim.

A state-changing (sequenced) command gets its number once, when it is *queued* in the outbox,
and leaves the outbox only when the device answers it (with success or with an error status).
Every send re-sends the same bytes, so a command the device already executed is answered from
its sequence window instead of being executed twice. A command that failed unanswered (the
link broke, no reply came) stays at the head of the outbox: whatever is queued next is sent
after it, so it is confirmed (applied at most once) before anything newer; :meth:`flush` sends
it on its own. The parts of a split apply are queued together and go the same way.

Decisions read reply status codes, never error texts.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status

__all__ = ["Job", "Link", "LinkTimeout", "Session"]


class LinkTimeout(Exception):
    """No complete reply arrived before the deadline (internal to the drivers)."""


class Link(Protocol):
    """A transport that carries wire messages (see drivers/serial.py and drivers/visa.py)."""

    #: Whether a timeout may leave the stream out of step, so that the link must be reopened.
    reopen_after_timeout: bool

    def send(self, op: Op, message: bytes) -> None:
        """Send one request message (raises OSError, e.g. ConnectionLostError, when the link
        is down)."""

    def receive(self, timeout: float) -> bytes | None:
        """The next reply message; None for a damaged one; raises LinkTimeout (or
        CrossbarTimeoutError) when none came in time, OSError (e.g. ConnectionLostError) when
        the link is down."""

    def drain(self) -> None:
        """Discard whatever input is pending (called once, before the first command)."""

    def reopen(self) -> None:
        """Close and open the transport again (raises OSError if it cannot)."""

    def close(self) -> None:
        """Release the transport."""


@dataclass(eq=False)
class Job:
    """Sequenced messages queued together (one command, or the parts of a split apply).

    ``key`` identifies the call that queued it (so that repeating that call resumes it),
    ``context`` is what the caller needs to make its result; ``replies`` collects the reply
    bodies of the parts answered so far.
    """

    op: Op
    messages: list[bytes]
    key: object = None
    context: object = None
    replies: list[bytes] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.messages)

    @property
    def done(self) -> bool:
        return len(self.replies) == len(self.messages)

    @property
    def next_seq(self) -> int:
        """Sequence number of the first part not yet answered."""
        return int.from_bytes(self.messages[len(self.replies)][:4], "little")


class Session:
    """A claimable session on a device behind ``link``.

    Parameters
    ----------
    link : Link
        The open transport (the session owns it from now on and closes it).
    name : str
        How to name the device in messages.
    timeout : float
        Seconds to wait for each reply.
    retries : int
        How often a message is sent again (the same bytes) before giving up.
    """

    def __init__(self, link: Link, name: str, *, timeout: float = 1.0, retries: int = 3) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not 0 <= int(retries) <= 100:
            raise ValueError(f"retries must be in 0..100, got {retries}")
        self.link = link
        self.name = name
        self.timeout = float(timeout)
        self.retries = int(retries)
        #: This host's session number: its claim on the device.
        self.id = secrets.randbits(32) or 1
        self.seq = 0
        self.outbox: deque[Job] = deque()
        self.stats = {"commands": 0, "retries": 0, "reopens": 0, "split_parts": 0, "reclaims": 0}
        self._reopen = False

    # ------------------------------------------------------------------ numbering
    def follow(self, last_seq: int) -> None:
        """Never reuse a number the device has seen (its ``last_seq`` at IDENTIFY/CLAIM)."""
        self.seq = max(self.seq, last_seq)

    def _number(self, op: Op, body: bytes) -> bytes:
        self.seq = self.seq % 0xFFFFFFFF + 1  # 1 .. 2**32-1, never 0
        return wire.encode_request(self.seq, op, body, self.id)

    # ------------------------------------------------------------------ sequenced commands
    def queue(
        self, op: Op, bodies: Sequence[bytes], key: object = None, context: object = None
    ) -> Job:
        """Number the messages of one job now and put them in the outbox (nothing is sent)."""
        if op not in wire.SEQUENCED:
            raise ValueError(f"{op.name} is not a sequenced command")
        job = Job(op, [self._number(op, body) for body in bodies], key, context)
        self.outbox.append(job)
        return job

    @property
    def unconfirmed(self) -> Job | None:
        """The oldest job not yet answered in full (None: the outbox is empty)."""
        return self.outbox[0] if self.outbox else None

    def send_first(self, job: Job) -> bool:
        """Send the first message of ``job`` ahead of :meth:`flush` (a submitted apply), when
        it is the only job; False if not sent (:meth:`flush` then sends it as usual)."""
        if self._reopen or len(self.outbox) != 1 or self.outbox[0] is not job or job.replies:
            return False
        try:
            self.link.send(job.op, job.messages[0])
        except OSError:
            self._reopen = True
            return False
        return True

    def flush(self, sent: bool = False) -> None:
        """Send the outbox in order until it is empty; each message leaves when answered.

        ``sent``: the first message's first attempt was already sent (:meth:`send_first`).

        Raises
        ------
        DeviceError
            When the device refuses a message (with its status): that job leaves the outbox
            with the parts answered so far, and its later parts are dropped unsent.
        ConnectionLostError, CrossbarTimeoutError
            When a message gets no answer: it stays in the outbox, with everything after it.
        """
        while self.outbox:
            job = self.outbox[0]
            while not job.done:
                message = job.messages[len(job.replies)]
                try:
                    job.replies.append(self._exchange(job.op, message, self.retries, sent))
                except DeviceError:
                    self.outbox.popleft()
                    raise
                sent = False
                if job.total > 1:
                    self.stats["split_parts"] += 1
            self.outbox.popleft()

    # ------------------------------------------------------------------ other commands
    def call(self, op: Op, body: bytes = b"", retries: int | None = None) -> bytes:
        """Send an unsequenced command (a query, SAFE, CLAIM) now and return its reply body.

        It is numbered now and never queued: one that fails unanswered is not sent again later.
        """
        message = self._number(op, body)
        return self._exchange(op, message, self.retries if retries is None else retries)

    def reopen(self) -> None:
        """Open the link again now (raises OSError if it cannot)."""
        self.link.reopen()
        self._reopen = False

    def close(self) -> None:
        self.link.close()

    # ------------------------------------------------------------------ exchange
    def _exchange(self, op: Op, message: bytes, retries: int, sent: bool = False) -> bytes:
        try:
            return self._send_until_answered(op, message, retries, sent)
        except DeviceError as exc:
            if exc.status != Status.BUSY or op not in wire.SEQUENCED:
                raise
            # the device forgot our claim (it restarted, our link dropped, the lease expired)
            # or nobody holds it: claim again, and re-send only if that succeeds (if another
            # host holds it, its error stands)
            try:
                self._send_until_answered(Op.CLAIM, self._number(Op.CLAIM, b"\x00"), retries)
            except DeviceError:
                raise exc from None
            self.stats["reclaims"] += 1
            return self._send_until_answered(op, message, retries)

    def _send_until_answered(
        self, op: Op, message: bytes, retries: int, sent: bool = False
    ) -> bytes:
        """The reply body to ``message`` (its first attempt already sent if ``sent``)."""
        seq = int.from_bytes(message[:4], "little")
        self.stats["commands"] += 1
        failure = "no reply"
        link_down = False
        damaged = False
        for attempt in range(retries + 1):
            if attempt:
                self.stats["retries"] += 1
            try:
                if self._reopen:
                    self.stats["reopens"] += 1
                    self.link.reopen()
                    self._reopen = False
                if attempt or not sent:
                    self.link.send(op, message)
                # after a re-send for a damaged reply, more damage notices are most likely
                # the rest of the same damaged bytes: wait for the reply (or the timeout)
                reply = self._await(seq, op, ignore_damage=damaged)
            except (LinkTimeout, CrossbarTimeoutError):
                failure, link_down = f"no reply within {self.timeout} s", False
                damaged = False
                self._reopen = self.link.reopen_after_timeout
                continue
            except OSError as exc:
                failure, link_down = f"link failed: {exc}", True
                self._reopen = True
                time.sleep(min(0.02 * 2**attempt, 0.5))
                continue
            damaged = reply is None
            if damaged:
                failure, link_down = "damaged reply", False
                continue
            if reply.status != Status.OK:
                raise DeviceError(
                    f"{self.name}: {wire.decode_error(reply.body)} ({status_name(reply.status)})",
                    reply.status,
                )
            return reply.body
        tries = f"{op.name} (sequence {seq}) failed after {retries + 1} attempt(s): {failure}"
        if link_down:
            raise ConnectionLostError(f"{self.name}: {tries}")
        raise CrossbarTimeoutError(f"{self.name}: {tries}")

    def _await(self, seq: int, op: Op, ignore_damage: bool = False) -> wire.Reply | None:
        """The reply to ``seq`` and ``op`` in this session; None when the device or the link saw
        a damaged frame (unless ``ignore_damage``: then only the reply or the timeout ends the
        wait)."""
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout
            message = self.link.receive(remaining)
            reply = None
            if message is not None:
                try:
                    reply = wire.decode_reply(message)
                except wire.WireError:
                    pass
            if reply is None or (reply.status == Status.FRAME and reply.seq == 0):
                if ignore_damage:
                    continue
                return None  # damaged, or the device saw a damaged frame: send again
            if reply.seq == seq and reply.op == op and reply.session == self.id:
                return reply
            if op == Op.IDENTIFY and _refused_identify(message, seq):
                return wire.Reply(seq, op, Status.MALFORMED, message[6:], self.id)
            # a late reply to an earlier attempt or command (or another client's): skip it


def _refused_identify(message: bytes, seq: int) -> bool:
    """A version-1 device's MALFORMED answer to our IDENTIFY (its header has no session)."""
    head = wire.reply_status(message)
    return head == (seq, Op.IDENTIFY, Status.MALFORMED)


def status_name(status: int) -> str:
    """The name of a reply status (or its number, for one this driver does not know)."""
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"
