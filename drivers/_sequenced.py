"""What the serial and VISA drivers share: sequence numbers, retries, reconnects, replies.

A driver is a :class:`SequencedCrossbar` over a :class:`Link` (the transport). Each command
gets the next sequence number; a retry after a timeout, a damaged reply or a dropped link sends
the *same* message again, so the device answers a command it already executed from its
sequence window instead of executing it twice (see docs/protocol.md, "Idempotence").
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from memristor_hil.crossbar import Crossbar
from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    InvalidBatchError,
    ProtocolError,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits

__all__ = ["Link", "LinkTimeout", "SequencedCrossbar"]


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
        Narrower safety limits to configure on the device; by default the device's own.
    """

    def __init__(
        self,
        link: Link,
        name: str,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        limits: SafetyLimits | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not 0 <= int(retries) <= 100:
            raise ValueError(f"retries must be in 0..100, got {retries}")
        self._link = link
        self._name = name
        self._timeout = float(timeout)
        self._retries = int(retries)
        self._seq = 0
        self._reopen = False
        self.stats = {"commands": 0, "retries": 0, "reopens": 0}
        try:
            link.drain()  # stale bytes (a previous client's replies, line noise) are not ours
            info = wire.decode_info(self._call(Op.IDENTIFY))
            if info.version != wire.PROTOCOL_VERSION:
                raise ProtocolError(
                    f"{name} speaks protocol version {info.version}; this driver speaks "
                    f"version {wire.PROTOCOL_VERSION}"
                )
            # never reuse a number in this session: IDENTIFY itself used one already
            self._seq = max(self._seq, info.last_seq)
            if limits is not None:
                body = wire.encode_limits(info.rows, info.cols, limits)
                info = wire.decode_info(self._call(Op.CONFIGURE, body))
        except BaseException:
            link.close()
            raise
        super().__init__((info.rows, info.cols), limits=info.limits, identity=info.identity)

    @property
    def timeout(self) -> float:
        """Seconds to wait for each reply."""
        return self._timeout

    @property
    def retries(self) -> int:
        """How often a command is re-sent, with the same sequence number, before giving up."""
        return self._retries

    # ------------------------------------------------------------------ Crossbar hooks
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        if len(cells.flat) > wire.MAX_CELLS:
            raise InvalidBatchError(
                f"a batch may name at most {wire.MAX_CELLS} cells; split this one "
                f"({len(cells.flat)} cells)"
            )
        body = wire.encode_batch(batch, cells, read_back)
        try:
            reply = self._call(Op.APPLY, body)
        except CrossbarError:
            self._safe_quietly()
            raise
        if read_back:
            return wire.decode_resistances(reply, len(cells.flat))
        return None

    def _read(self, flat: np.ndarray) -> np.ndarray:
        parts = [
            wire.decode_resistances(self._call(Op.READ, wire.encode_cells(chunk)), len(chunk))
            for chunk in _chunks(flat)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def _read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        if nrows * ncols > wire.MAX_CELLS:
            return super()._read_region(row, col, nrows, ncols)
        body = self._call(Op.READ_REGION, wire.encode_region(row, col, nrows, ncols))
        return wire.decode_resistances(body, nrows * ncols).reshape(nrows, ncols)

    def _read_all(self) -> np.ndarray:
        if self.size > wire.MAX_CELLS:
            return super()._read_all()
        return wire.decode_resistances(self._call(Op.READ_ALL), self.size).reshape(self.shape)

    def _close(self) -> None:
        try:
            self._safe_quietly()
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

    def _call(self, op: Op, body: bytes = b"", retries: int | None = None) -> bytes:
        """Send a command and return its reply body, retrying with the same sequence number."""
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        message = wire.encode_request(seq, op, body)
        retries = self._retries if retries is None else retries
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
                    f"{self._name}: {wire.decode_error(reply.body)} ({_status_name(reply.status)})"
                )
            return reply.body
        tries = f"{op.name} (sequence {seq}) failed after {retries + 1} attempt(s): {failure}"
        if link_down:
            raise ConnectionLostError(f"{self._name}: {tries}")
        raise CrossbarTimeoutError(f"{self._name}: {tries}")

    def _await(self, seq: int, op: Op, ignore_damage: bool = False) -> wire.Reply | None:
        """The reply to ``seq`` and ``op``; None when the device or the link saw a damaged
        frame (unless ``ignore_damage``: then only the reply or the timeout ends the wait)."""
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout
            message = self._link.receive(remaining)
            if message is None:
                if ignore_damage:
                    continue
                return None
            try:
                reply = wire.decode_reply(message)
            except wire.WireError:
                if ignore_damage:
                    continue
                return None
            if reply.status == Status.FRAME and reply.seq == 0:
                if ignore_damage:
                    continue
                return None  # the device saw a damaged frame: send again
            if reply.seq == seq and reply.op == op:
                return reply
            # a late reply to an earlier attempt or command (or another client's): skip it


def _chunks(flat: np.ndarray) -> list[np.ndarray]:
    return [flat[i : i + wire.MAX_CELLS] for i in range(0, len(flat), wire.MAX_CELLS)]


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"
