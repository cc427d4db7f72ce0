"""What the serial and VISA drivers share: sequence numbers, retries, reconnects, replies.

A driver is a :class:`SequencedCrossbar` over a :class:`Link` (the transport). It claims the
device with a random session number (one controlling host at a time); each command gets the
next sequence number, never reused in the session; a retry after a timeout, a damaged reply or
a dropped link sends the *same* message again, so the device answers a command it already
executed from its sequence window instead of executing it twice. A reply counts only if it
echoes the command's sequence number, opcode and session. A batch larger than the device's
bounds is split into several sequenced APPLY commands (see docs/protocol.md, sections 4-5).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memristor_hil.crossbar import Crossbar, PendingApply
from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    ProtocolError,
    UnsupportedError,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits

__all__ = ["Link", "LinkTimeout", "SequencedCrossbar"]

_VERSIONS = " and ".join(map(str, wire.SUPPORTED_VERSIONS))


class LinkTimeout(Exception):
    """No complete reply arrived before the deadline (internal to the drivers)."""


class Link(Protocol):
    """A transport that carries wire messages (see drivers/serial.py and drivers/visa.py)."""

    #: Whether a timeout may leave the stream out of step, so that the link must be reopened.
    reopen_after_timeout: bool

    def send(self, op: Op, message: bytes) -> None:
        """Send one request message (raises OSError when the link is down)."""

    def receive(self, timeout: float) -> bytes | None:
        """The next reply message; None for a damaged one; raises LinkTimeout or OSError."""

    def drain(self) -> None:
        """Discard whatever input is pending (called once, before the first command)."""

    def reopen(self) -> None:
        """Close and open the transport again (raises OSError if it cannot)."""

    def close(self) -> None:
        """Release the transport."""


class SequencedCrossbar(Crossbar):
    """A Crossbar whose backend is a device at the end of a :class:`Link`.

    Parameters
    ----------
    link : Link
        The open transport.
    name : str
        How to name the device in messages (its port or resource string).
    timeout : float
        Seconds to wait for each reply.
    retries : int
        How many times a command is sent again (same sequence number) before giving up.
    limits : SafetyLimits, optional
        Safety limits to configure on the device (within its hardware limits); by default the
        limits in force.
    takeover : bool
        Take control even if another host holds the device (do this only when that host has
        died: its later commands are refused with a BUSY error).
    monitor : bool
        Open without claiming the device, to watch one another host drives (docs/protocol.md
        5.1: reads need no claim). Reads work; ``apply()`` raises :class:`UnsupportedError`
        before sending anything, and closing sends neither SAFE nor a release.
    """

    def __init__(
        self,
        link: Link,
        name: str,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        limits: SafetyLimits | None = None,
        takeover: bool = False,
        monitor: bool = False,
    ) -> None:
        if monitor and (takeover or limits is not None):
            raise ValueError("a monitor neither takes over nor configures limits")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not 0 <= int(retries) <= 100:
            raise ValueError(f"retries must be in 0..100, got {retries}")
        self._link = link
        self._name = name
        self._monitor = bool(monitor)
        self._timeout = float(timeout)
        self._retries = int(retries)
        self._seq = 0
        self._session = secrets.randbits(32) or 1
        self._reopen = False
        self._unfinished: _SplitApply | None = None
        self._native = False
        self.stats = {"commands": 0, "retries": 0, "reopens": 0, "split_parts": 0, "reclaims": 0}
        claimed = False
        try:
            link.drain()  # stale bytes (a previous client's replies, line noise) are not ours
            try:
                info = wire.decode_info(self._call(Op.IDENTIFY))
            except DeviceError as exc:
                if exc.status == Status.MALFORMED:
                    raise ProtocolError(
                        f"{name} refused this driver's IDENTIFY ({exc}): it probably speaks "
                        f"protocol version 1; this driver speaks versions {_VERSIONS} "
                        "(update the device's firmware)"
                    ) from None
                raise
            if info.version not in wire.SUPPORTED_VERSIONS:
                raise ProtocolError(
                    f"{name} speaks protocol version {info.version}; this driver speaks "
                    f"versions {_VERSIONS}"
                )
            # version 3: read-backs come in the device's own precision (binary32 devices send
            # half the bytes); a version-2 device (the C firmware) sends binary64 as before
            self._native = info.version >= 3
            if not monitor:
                mode = wire.Claim.TAKE_OVER if takeover else wire.Claim.CLAIM
                info = wire.decode_info(self._call(Op.CLAIM, bytes([mode])))
                claimed = True
            # never reuse a number in this session: IDENTIFY and CLAIM used some already
            self._seq = max(self._seq, info.last_seq)
            self._bounds(info)
            if limits is not None:
                body = wire.encode_limits(info.rows, info.cols, limits)
                info = wire.decode_info(self._call(Op.CONFIGURE, body))
        except BaseException:
            if claimed:  # e.g. CONFIGURE refused: leave the device as free as we found it
                self._release_quietly()
            link.close()
            raise
        self.device_info = info
        super().__init__((info.rows, info.cols), limits=info.limits, identity=info.identity)

    def _bounds(self, info: wire.DeviceInfo) -> None:
        """Cells per READ and per APPLY part that fit the device's bounds."""
        self._max_message = info.max_message
        self._max_cells = info.max_cells
        room = info.max_message - wire.REPLY_HEADER
        self._read_cells = max(1, min(info.max_cells, room // 8, (room - 4) // 4))

    @property
    def timeout(self) -> float:
        """Seconds to wait for each reply."""
        return self._timeout

    @property
    def retries(self) -> int:
        """How often a command is re-sent, with the same sequence number, before giving up."""
        return self._retries

    @property
    def session(self) -> int:
        """This host's session number (its claim on the device)."""
        return self._session

    # ------------------------------------------------------------------ Crossbar hooks
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        if self._monitor:
            raise UnsupportedError(
                f"{self._name} was opened as a monitor (monitor=True): it reads, it cannot pulse"
            )
        if self._unfinished is not None:
            raise CrossbarError(
                f"{self._name}: an earlier split apply is unfinished (parts "
                f"{self._unfinished.next + 1}..{len(self._unfinished.messages)} not confirmed); "
                "call resume_apply() first"
            )
        command = self._one_command(batch, cells, read_back)
        if command is not None:
            body, count, native = command
            try:
                reply = self._call(Op.APPLY, body)
            except CrossbarError:
                self._safe_quietly()
                raise
            return _read_back(reply, count, read_back, native)
        self._unfinished = self._split(batch, cells.flat, read_back)
        return self.resume_apply()

    def _one_command(
        self, batch: PulseBatch, cells: Cells, read_back: bool
    ) -> tuple[bytes, int, bool] | None:
        """The APPLY body of the batch, its cell count and whether its read-back comes in
        the device's precision; None when it does not fit one command of the device."""
        count = len(cells.flat)
        native = read_back and self._native
        body = wire.encode_batch(batch, cells, read_back, native)
        fits = (
            count <= self._max_cells
            and wire.REQUEST_HEADER + len(body) <= self._max_message
            and (not read_back or wire.REPLY_HEADER + 8 * count <= self._max_message)
        )
        return (body, count, native) if fits else None

    def _submit(self, batch: PulseBatch, cells: Cells, read_back: bool) -> PendingApply:
        """Send the APPLY now and wait for its reply in ``result()`` (Crossbar.submit).

        The command is the one ``apply()`` sends, with the same retries (same sequence number)
        and the safe state after a failure; only the wait moves. A monitor, an unfinished
        split apply, or a batch that must be split is handled by ``apply()`` at once.
        """
        if self._monitor or self._unfinished is not None:
            return super()._submit(batch, cells, read_back)
        command = self._one_command(batch, cells, read_back)
        if command is None:
            return super()._submit(batch, cells, read_back)
        body, count, native = command
        wait = self._start(Op.APPLY, body, send_now=True)

        def finish() -> np.ndarray | None:
            try:
                return _read_back(wait(), count, read_back, native)
            except BaseException:
                self._safe_quietly()
                raise

        return PendingApply(finish)

    def _split(self, batch: PulseBatch, flat: np.ndarray, read_back: bool) -> _SplitApply:
        """Encode the parts of a batch too large for one command, each with its own sequence
        number, in batch order (so applying them in turn is applying the batch)."""
        pulses = batch.compact_pulses
        per_entry = 4 + pulses.dtype.itemsize
        per_entry += 8 * (not isinstance(batch.voltage, float))
        per_entry += 8 * (not isinstance(batch.width, float))
        room = self._max_message - wire.REQUEST_HEADER - 6 - 4 - 16
        step = max(1, min(self._max_cells, room // per_entry))
        messages = []
        cols = self.shape[1]
        for start in range(0, len(flat), step):
            part = slice(start, start + step)
            sub = PulseBatch.from_flat(
                flat[part],
                cols,
                pulses=pulses if pulses.shape[0] == 1 else pulses[part],
                voltage=_part(batch.voltage, part),
                width=_part(batch.width, part),
            )
            body = wire.encode_batch(sub, sub.locate(self.shape, self.limits), False)
            messages.append(wire.encode_request(self._next_seq(), Op.APPLY, body, self._session))
        return _SplitApply(messages, flat if read_back else None)

    def resume_apply(self) -> np.ndarray | None:
        """Finish a split apply that an error interrupted; returns its read-back (or None).

        Each part keeps its sequence number, so a part the device already executed is answered
        from its window, never applied twice. Call it once the device can be reached again
        (for a serial port on a new path, reopen the port first).
        """
        job = self._unfinished
        if job is None:
            return None
        total = len(job.messages)
        while job.next < total:
            message = job.messages[job.next]
            try:
                self._exchange(Op.APPLY, message, self._retries)
            except DeviceError as exc:
                self._unfinished = None
                self._safe_quietly()
                raise type(exc)(
                    f"{exc}; split apply: parts 1..{job.next} of {total} were applied, part "
                    f"{job.next + 1} was refused and later parts were not sent",
                    exc.status,
                ) from exc
            except CrossbarError as exc:
                self._safe_quietly()
                raise type(exc)(
                    f"{exc}; split apply: parts 1..{job.next} of {total} are applied, part "
                    f"{job.next + 1} is unconfirmed (applied or not), later parts were not sent; "
                    "call resume_apply() when the device is back: no part is applied twice"
                ) from exc
            job.next += 1
            self.stats["split_parts"] += 1
        self._unfinished = None
        return None if job.read_back is None else self._read(job.read_back)

    def _read(self, flat: np.ndarray) -> np.ndarray:
        step = self._read_cells
        parts = [
            wire.decode_resistances(
                self._call(Op.READ, wire.encode_cells(flat[i : i + step])), len(flat[i : i + step])
            )
            for i in range(0, len(flat), step)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def _read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        if nrows * ncols > self._read_cells:
            return super()._read_region(row, col, nrows, ncols)
        body = self._call(Op.READ_REGION, wire.encode_region(row, col, nrows, ncols))
        return wire.decode_resistances(body, nrows * ncols).reshape(nrows, ncols)

    def _read_all(self) -> np.ndarray:
        if self.size > self._read_cells:
            return super()._read_all()
        return wire.decode_resistances(self._call(Op.READ_ALL), self.size).reshape(self.shape)

    def _close(self) -> None:
        if self._monitor:  # the owner's outputs and claim are not ours to touch
            self._link.close()
            return
        try:
            self._safe_quietly()
            if self._unfinished is None:  # else keep the claim: another host must take over
                self._release_quietly()
        finally:
            self._link.close()

    # ------------------------------------------------------------------ more commands
    def next_error(self) -> tuple[int, str]:
        """Pop the device's oldest queued error: ``(code, message)``, ``(0, "No error")``."""
        self._check_open()
        return wire.decode_error_entry(self._call(Op.ERROR))

    def reset(self) -> None:
        """Outputs to the safe state and the device's error queue cleared (state is kept)."""
        self._check_open()
        self._call(Op.RESET)

    # ------------------------------------------------------------------ exchange
    def _safe_quietly(self) -> None:
        """Ask for the safe output state; a device that cannot be reached is left as it is."""
        try:
            self._call(Op.SAFE, retries=0)
        except CrossbarError:
            pass

    def _release_quietly(self) -> None:
        try:
            self._call(Op.CLAIM, bytes([wire.Claim.RELEASE]), retries=0)
        except CrossbarError:
            pass

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1  # 1 .. 2**32-1, never 0
        return self._seq

    def _call(self, op: Op, body: bytes = b"", retries: int | None = None) -> bytes:
        """Send a command and return its reply body (see :meth:`_start`)."""
        return self._start(op, body, retries)()

    def _start(
        self, op: Op, body: bytes = b"", retries: int | None = None, send_now: bool = False
    ) -> Callable[[], bytes]:
        """Number a command (the next sequence number) and, with ``send_now``, send it; the
        function returned sends it if not yet sent and waits for its reply body.

        Every command goes through here: a subclass that must choose the sequence number
        itself (``_resume.ResumableCrossbar`` re-sends an unanswered one) overrides this and
        calls :meth:`_begin` with the number it chose.
        """
        return self._begin(op, body, self._next_seq(), retries, send_now)

    def _begin(
        self,
        op: Op,
        body: bytes,
        seq: int,
        retries: int | None = None,
        send_now: bool = False,
    ) -> Callable[[], bytes]:
        """Encode ``op`` with sequence number ``seq`` (and send it now with ``send_now``); the
        function returned waits for its reply body, re-sending the same message (same number)
        on a timeout or damaged reply up to ``retries`` times (default: :attr:`retries`)."""
        message = wire.encode_request(seq, op, body, self._session)
        retries = self._retries if retries is None else retries
        sent = send_now and self._send_first(op, message)
        return lambda: self._exchange(op, message, retries, sent)

    def _send_first(self, op: Op, message: bytes) -> bool:
        """Send a command's first attempt ahead of its wait; False if it was not sent (the
        link needs reopening or failed: the wait's first attempt then does it, as usual)."""
        if self._reopen:
            return False
        try:
            self._link.send(op, message)
        except OSError:
            self._reopen = True
            return False
        return True

    def _exchange(self, op: Op, message: bytes, retries: int, sent: bool = False) -> bytes:
        try:
            return self._send_until_answered(op, message, retries, sent)
        except DeviceError as exc:
            if exc.status != Status.BUSY or op not in wire.SEQUENCED:
                raise
            # the device forgot our claim (it restarted) or nobody holds it: claim again, and
            # re-send only if that succeeds (if another host holds it, its error stands)
            claim = wire.encode_request(self._next_seq(), Op.CLAIM, b"\x00", self._session)
            try:
                self._send_until_answered(Op.CLAIM, claim, retries)
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
                    self._link.reopen()
                    self._reopen = False
                if attempt or not sent:
                    self._link.send(op, message)
                # after a re-send for a damaged reply, more damage notices are most likely
                # the rest of the same damaged bytes: wait for the reply (or the timeout)
                reply = self._await(seq, op, ignore_damage=damaged)
            except LinkTimeout:
                failure, link_down = f"no reply within {self._timeout} s", False
                damaged = False
                self._reopen = self._link.reopen_after_timeout
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
                    f"{self._name}: {wire.decode_error(reply.body)} ({_status_name(reply.status)})",
                    reply.status,
                )
            return reply.body
        tries = f"{op.name} (sequence {seq}) failed after {retries + 1} attempt(s): {failure}"
        if link_down:
            raise ConnectionLostError(f"{self._name}: {tries}")
        raise CrossbarTimeoutError(f"{self._name}: {tries}")

    def _await(self, seq: int, op: Op, ignore_damage: bool = False) -> wire.Reply | None:
        """The reply to ``seq`` and ``op`` in this session; None when the device or the link saw
        a damaged frame (unless ``ignore_damage``: then only the reply or the timeout ends the
        wait)."""
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout
            message = self._link.receive(remaining)
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
            if reply.seq == seq and reply.op == op and reply.session == self._session:
                return reply
            if op == Op.IDENTIFY and _refused_identify(message, seq):
                return wire.Reply(seq, op, Status.MALFORMED, message[6:], self._session)
            # a late reply to an earlier attempt or command (or another client's): skip it


@dataclass
class _SplitApply:
    """The parts of a split apply (encoded, sequence numbers fixed) and how far it got."""

    messages: list[bytes]
    read_back: np.ndarray | None
    next: int = 0


def _read_back(reply: bytes, count: int, read_back: bool, native: bool) -> np.ndarray | None:
    """What an APPLY's reply body holds: None, or its ``count`` readings."""
    if not read_back:
        return None
    if native:
        return wire.decode_readings(reply, count)
    return wire.decode_resistances(reply, count)


def _part(value: float | np.ndarray, part: slice) -> float | np.ndarray:
    return value if isinstance(value, float) else value[part]


def _refused_identify(message: bytes, seq: int) -> bool:
    """A version-1 device's MALFORMED answer to our IDENTIFY (its header has no session)."""
    head = wire.reply_status(message)
    return head == (seq, Op.IDENTIFY, Status.MALFORMED)


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"
