"""The emulator service's command handling, independent of the transport.

:class:`CrossbarService` turns wire request messages into reply messages against an
:class:`~memristor_hil.emulator.EmulatedCrossbar`. It never raises for bad input: anything
malformed is answered with an error reply and changes nothing. State-changing commands
(CONFIGURE, APPLY) are remembered by sequence number, so a retried command gets its first reply
again instead of being applied twice; that memory is saved in the state file together with the
devices, in one atomic write, so it survives a restart.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memristor_hil.errors import AddressError, InvalidBatchError, SafetyLimitError
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status, WireError
from memristor_hil.pulses import SafetyLimits

from ..crossbar import EmulatedCrossbar, remove_interrupted_saves
from ..state import crossbar_from_state
from .status import StatusRegisters

__all__ = ["SCPI_CODES", "CrossbarService"]

#: The SCPI error code queued for each reply status.
SCPI_CODES = {
    Status.FRAME: -310,
    Status.MALFORMED: -104,
    Status.UNKNOWN_COMMAND: -113,
    Status.OUT_OF_RANGE: -222,
    Status.SAFETY: -221,
    Status.SEQUENCE: -200,
    Status.DEVICE: -200,
    Status.TOO_LARGE: -223,
    Status.BUSY: -240,
}
#: Errors kept for ERROR / SYST:ERR? queries; the oldest is dropped beyond this.
ERROR_QUEUE = 32


@dataclass(frozen=True)
class _Done:
    digest: bytes
    reply: bytes


class CrossbarService:
    """Executes wire commands on an emulated crossbar.

    Parameters
    ----------
    xbar : EmulatedCrossbar
        The devices.
    state_path : path, optional
        Where to save the devices and the sequence window (see :meth:`save`).
    save_interval : float
        Seconds between saves of a changed state; 0 saves after every state change, before the
        reply goes out.
    window : int
        How many state-changing commands are remembered by sequence number (at least the last
        one is always kept, whatever its size).
    window_bytes : int
        Bound on the bytes of remembered replies.
    max_message : int
        Largest message this device accepts or sends (reported at IDENTIFY); a host splits
        larger commands.
    max_cells : int
        Most cells one command may name (reported at IDENTIFY).
    lease : float
        Seconds a claim lasts without a command from its holder (any command renews it; 0:
        forever). A claim also ends when its link is lost (:meth:`link_lost`).
    """

    def __init__(
        self,
        xbar: EmulatedCrossbar,
        *,
        state_path: str | os.PathLike[str] | None = None,
        save_interval: float = 1.0,
        window: int = 16,
        window_bytes: int = 64 << 20,
        max_message: int = wire.MAX_MESSAGE,
        max_cells: int = wire.MAX_CELLS,
        log: bool = True,
        lease: float = 30.0,
    ) -> None:
        if not wire.MIN_MESSAGE <= int(max_message) <= wire.MAX_MESSAGE:
            raise ValueError(
                f"max_message={max_message} must be in {wire.MIN_MESSAGE}..{wire.MAX_MESSAGE}"
            )
        if not 1 <= int(max_cells) <= wire.MAX_CELLS:
            raise ValueError(f"max_cells={max_cells} must be in 1..{wire.MAX_CELLS}")
        if not float(lease) >= 0:
            raise ValueError(f"lease={lease} must be >= 0 seconds")
        self.max_message = int(max_message)
        self.max_cells = int(max_cells)
        self.lease = float(lease)
        #: The controlling host's session (0: none), when it claimed, when it was last heard.
        self.owner = 0
        self._owner_since = self._owner_seen = time.monotonic()
        #: The link the command being handled arrived on (the transport sets it; any object
        #: that identifies a connection), and the link the holder's last command came on.
        self.link: object = None
        self._owner_link: object = None
        #: The split batch in progress: ``(session, seq, entries)`` of its last executed part
        #: (one with flag 0x40) and its entries executed so far; and the one whose claim
        #: ended before its last part (reported until the next APPLY or CONFIGURE executes).
        self._batch: tuple[int, int, int] | None = None
        self.interrupted: tuple[int, int, int] | None = None
        self.xbar = xbar
        self.limits: SafetyLimits = xbar.limits
        self.state_path = Path(state_path) if state_path is not None else None
        self.save_interval = float(save_interval)
        self.window = max(1, int(window))
        self.window_bytes = int(window_bytes)
        self.last_seq = 0
        self.outputs_safe = True
        self.errors: deque[tuple[int, str]] = deque()
        self._done: OrderedDict[int, _Done] = OrderedDict()
        self._done_bytes = 0
        self._dirty = False
        self._last_save = time.monotonic()
        self._log = log
        self.status = StatusRegisters()
        if self.state_path is not None:
            for tmp in remove_interrupted_saves(self.state_path):
                self.say(f"removed {tmp.name}, left by a save that was interrupted")

    # ------------------------------------------------------------------ construction
    @classmethod
    def restore(cls, path: str | os.PathLike[str], **kwargs: object) -> CrossbarService:
        """A service whose devices and sequence window come from a file :meth:`save` wrote."""
        xbar = crossbar_from_state(path)  # the ideal crossbar or an array, as saved
        service = cls(xbar, state_path=path, **kwargs)  # type: ignore[arg-type]
        with np.load(path, allow_pickle=False) as data:
            if "service_seq" in data.files:
                seqs = data["service_seq"].astype(np.int64)
                digests = data["service_digests"]
                offsets = data["service_offsets"].astype(np.int64)
                blob = data["service_replies"].tobytes()
                for i, seq in enumerate(seqs):
                    reply = blob[offsets[i] : offsets[i + 1]]
                    service._remember(int(seq), digests[i].tobytes(), reply)
                service.last_seq = int(data["service_last_seq"])
                service.limits = SafetyLimits.from_tuple(data["service_limits"])
        return service

    # ------------------------------------------------------------------ persistence
    def save(self) -> None:
        """Write devices, sequence window and limits to ``state_path`` in one atomic replace."""
        if self.state_path is None:
            return
        replies = [done.reply for done in self._done.values()]
        window = {
            "service_seq": np.array(list(self._done), dtype=np.uint32),
            "service_digests": np.array(
                [np.frombuffer(d.digest, np.uint8) for d in self._done.values()], np.uint8
            ).reshape(len(replies), 16),
            "service_offsets": np.cumsum([0] + [len(r) for r in replies], dtype=np.int64),
            "service_replies": np.frombuffer(b"".join(replies), np.uint8),
            "service_last_seq": np.array(self.last_seq, dtype=np.uint32),
            "service_limits": np.array(self.limits.as_tuple(), dtype=np.float64),
        }
        self.xbar.save_state(self.state_path, extra=window)
        self._dirty = False
        self._last_save = time.monotonic()

    def warm_up(self) -> None:
        """Compile the emulator's kernels on a scratch crossbar, so the first command is fast."""
        from memristor_hil.pulses import PulseBatch

        scratch = EmulatedCrossbar(2, 2, self.xbar.model, seed=0)
        scratch.apply(PulseBatch([0, 1], [0, 1], pulses=[1, 2]), read_back=True)
        scratch.apply(PulseBatch([1, 0], [1, 0], pulses=1), read_back=True)
        scratch.apply(PulseBatch([0], [1], pulses=1))
        # cells as every dialect decodes them (int64 arrays): the compiled address check
        scratch.read(np.array([0, 1], dtype=np.int64), np.array([1, 0], dtype=np.int64))
        scratch.read_region(0, 0, 2, 2)
        scratch.read_all()

    def tick(self) -> None:
        """Save a changed state once ``save_interval`` has passed since the last save."""
        if self._dirty and time.monotonic() - self._last_save >= self.save_interval:
            self.save()

    def note_change(self) -> None:
        """Mark the devices changed by a command outside :meth:`handle` (another dialect)."""
        self._dirty = True
        if self.save_interval <= 0:
            self.save()

    def seconds_to_next_save(self) -> float | None:
        """How long the transport loop may sleep before :meth:`tick` has work (None: no work)."""
        if not self._dirty or self.state_path is None:
            return None
        return max(0.0, self.save_interval - (time.monotonic() - self._last_save))

    # ------------------------------------------------------------------ commands
    def handle(self, message: bytes) -> bytes:
        """The reply message for one request message. Never raises.

        Checks run in the order of docs/protocol.md, "Order of checks": size, header, opcode,
        then for sequenced commands sequence 0, the window (a retry is answered from it), the
        session, a re-used or stale sequence number; then the body, addresses, limits.
        """
        if len(message) > self.max_message:
            return self._error(
                0, 0, Status.TOO_LARGE, f"message of {len(message)} bytes exceeds this device's "
                f"bound of {self.max_message}",
            )  # fmt: skip
        try:
            request = wire.decode_request(message)
        except WireError as exc:
            return self._error(0, 0, exc.status, str(exc))
        seq, op, session = request.seq, request.op, request.session
        self._expire_claim()
        if session and session == self.owner:  # any command of the holder renews its lease
            self._owner_seen = time.monotonic()
            self._owner_link = self.link
        if op not in _KNOWN_OPS:
            return self._error(
                seq, op, Status.UNKNOWN_COMMAND, f"unknown opcode 0x{op:02x}", session
            )
        digest = b""
        if op in wire.SEQUENCED:
            if seq == 0:
                return self._error(
                    seq, op, Status.MALFORMED, "sequence 0 is not allowed on a sequenced command",
                    session,
                )  # fmt: skip
            digest = hashlib.blake2b(message, digest_size=16).digest()
            done = self._done.get(seq)
            if done is not None and done.digest == digest:
                return done.reply  # a retry: executed once, answered again
            if session == 0 or session != self.owner:
                return self._error(seq, op, Status.BUSY, self._busy_text(), session)
            if done is not None:
                return self._error(
                    seq, op, Status.SEQUENCE,
                    f"sequence number {seq} was already used for a different command", session,
                )  # fmt: skip
            if self.last_seq and not 0 < (seq - self.last_seq) % (1 << 32) < 1 << 31:
                return self._error(
                    seq, op, Status.SEQUENCE,
                    f"sequence number {seq} is older than the last executed ({self.last_seq})",
                    session,
                )  # fmt: skip
            self._owner_seen = time.monotonic()
        try:
            body = self._execute(request)
        except WireError as exc:
            return self._error(seq, op, exc.status, str(exc), session)
        except SafetyLimitError as exc:
            return self._error(seq, op, Status.SAFETY, str(exc), session)
        except AddressError as exc:
            return self._error(seq, op, Status.OUT_OF_RANGE, str(exc), session)
        except InvalidBatchError as exc:
            return self._error(seq, op, Status.DEVICE, str(exc), session)
        except Exception as exc:  # noqa: BLE001 - a bug must not take the service down
            return self._error(seq, op, Status.DEVICE, f"internal error: {exc!r}", session)
        reply = wire.encode_reply(seq, op, Status.OK, body, session)
        if len(reply) > self.max_message:  # a bug (the checks bound every reply): never send
            return self._error(seq, op, Status.DEVICE, "reply exceeds the message bound", session)
        if op in wire.SEQUENCED:
            self._remember(seq, digest, reply)
            self.last_seq = seq
            self._dirty = True
            if self.save_interval <= 0:
                self.save()  # before the reply: an acknowledged command is never lost
        return reply

    def _expire_claim(self) -> None:
        """End a claim whose holder sent no command for ``lease`` seconds."""
        if self.owner and self.lease and time.monotonic() - self._owner_seen > self.lease:
            self.say(f"claim of session {self.owner:08x} expired: no command for {self.lease:g} s")
            self._end_claim()
            self.safe()

    def link_lost(self, link: object) -> None:
        """A link closed (a TCP connection, a terminal hung up): if the holder's commands came
        on it, its claim ends and the outputs go safe. (The holder may come back: it claims
        again, and resends what it did not see answered; docs/protocol.md 5.1.)"""
        if self.owner and link is not None and link is self._owner_link:
            self.say(f"released session {self.owner:08x}: its link closed")
            self._end_claim()
            self._owner_link = None
            self.safe()

    def _end_claim(self) -> None:
        """The claim ends (expired, link closed, released, taken over): a split batch its host
        did not finish becomes the interrupted one (docs/protocol.md 5.2)."""
        if self._batch is not None:
            session, seq, entries = self._batch
            self.say(
                f"split batch of session {session:08x} interrupted after sequence {seq} "
                f"({entries} entries applied)"
            )
            self.interrupted = self._batch
            self._batch = None
        self.owner = 0

    def _busy_text(self) -> str:
        if self.owner == 0:
            return "crossbar is not claimed by any host: send CLAIM first"
        now = time.monotonic()
        return (
            f"crossbar is controlled by another host (session {self.owner:08x}) since "
            f"{now - self._owner_since:.1f} s ago, last command {now - self._owner_seen:.1f} s "
            "ago; if that host has died, take over (takeover=True)"
        )

    def _claim(self, body: bytes, session: int) -> None:
        if len(body) != 1 or body[0] not in tuple(wire.Claim):
            raise WireError("CLAIM takes one mode byte: 0 claim, 1 take over, 2 release")
        if session == 0:
            raise WireError("CLAIM needs a non-zero session in the header")
        mode = wire.Claim(body[0])
        now = time.monotonic()
        if mode == wire.Claim.RELEASE:
            if self.owner != session:
                raise WireError(self._busy_text(), Status.BUSY)
            self._end_claim()
            self.say(f"released by session {session:08x}")
            return
        if self.owner not in (0, session) and mode != wire.Claim.TAKE_OVER:
            raise WireError(self._busy_text(), Status.BUSY)
        if self.owner != session:
            before = f" (taken over from session {self.owner:08x})" if self.owner else ""
            self.say(f"claimed by session {session:08x}{before}")
            self._end_claim()
            self.owner = session
            self._owner_since = now
        self._owner_seen = now
        self._owner_link = self.link

    def frame_fault(self, reason: str) -> bytes:
        """The reply to a frame or block that failed its check (sequence number unknown: 0)."""
        return self._error(0, 0, Status.FRAME, reason)

    def queue_error(self, code: int, message: str) -> None:
        """Add an error to the queue read by ERROR and ``SYST:ERR?`` (and set its event bit)."""
        self.status.record_error(code)
        if len(self.errors) >= ERROR_QUEUE:
            self.errors.pop()
            self.errors.append((-350, "Queue overflow"))
            return
        self.errors.append((code, message))

    def next_error(self) -> tuple[int, str]:
        """Pop the oldest queued error; ``(0, "No error")`` when there is none."""
        return self.errors.popleft() if self.errors else (0, "No error")

    def reset(self) -> None:
        """The binary RESET command: outputs to the safe state and the error queue cleared;
        devices keep their state. (SCPI's ``*RST`` only makes the outputs safe: IEEE 488.2
        leaves the error queue to ``*CLS``, :meth:`clear_status`.)"""
        self.safe()
        self.errors.clear()

    def clear_status(self) -> None:
        """``*CLS``: the error queue and the event status register cleared."""
        self.errors.clear()
        self.status.clear()

    def safe(self) -> None:
        """Outputs to the safe state (an emulator has none to switch; it records the request)."""
        self.outputs_safe = True
        self.say("outputs safe")

    def info(self) -> wire.DeviceInfo:
        """What IDENTIFY reports: shape, limits in force and hardware limits, bounds, owner."""
        rows, cols = self.xbar.shape
        return wire.DeviceInfo(
            rows, cols, self.limits, self.xbar.identity, self.last_seq,
            hardware_limits=self.xbar.limits, max_message=self.max_message,
            max_cells=self.max_cells, window=self.window, owner=self.owner,
            interrupted=self.interrupted,
        )  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _execute(self, request: wire.Request) -> bytes:
        op = request.op
        if op == Op.APPLY:
            body = self._apply(request.seq, request.body, request.session)
        else:
            body = self._execute_command(op, request.body, request.session)
        if op in wire.SEQUENCED:  # executed: the interrupted batch has been seen to
            self.interrupted = None
        return body

    def _apply(self, seq: int, body: bytes, session: int) -> bytes:
        xbar = self.xbar
        rows, cols = xbar.shape
        decoded = wire.decode_batch(body, rows, cols, self.max_cells)
        if decoded.read_back:
            self._check_reply_size(len(decoded.flat))
        if len(decoded.flat):
            if self.limits != xbar.limits:  # the configured limits (the device checks its own)
                decoded.batch.locate(xbar.shape, self.limits)
            self.outputs_safe = False
            result = xbar.apply(decoded.batch, read_back=decoded.read_back)
        else:
            result = None  # an empty batch: nothing to pulse, outputs unchanged
        self._follow_batch(seq, session, decoded)
        return b"" if result is None else wire.encode_readings(result, decoded.native)

    def _follow_batch(self, seq: int, session: int, decoded: wire.DecodedBatch) -> None:
        """Keep the split batch in progress (flag 0x40 on all its parts but the last): a part
        continues the recorded batch (in progress, or interrupted and now resumed by its own
        host) when it has the same session and the next sequence number."""
        before = self._batch or self.interrupted
        self._batch = None
        if not decoded.more:
            return
        entries = len(decoded.flat)
        if before is not None and before[0] == session and (seq - before[1]) % (1 << 32) == 1:
            entries += before[2]
        self._batch = (session, seq, entries)

    def _execute_command(self, op: int, body: bytes, session: int) -> bytes:
        xbar = self.xbar
        rows, cols = xbar.shape
        if op == Op.READ:
            flat = wire.decode_cells(body, self.max_cells)
            self._check_reply_size(len(flat))
            if len(flat) and int(flat.max()) >= rows * cols:
                raise WireError(
                    f"cell index {int(flat.max())} is outside the {rows}x{cols} crossbar",
                    Status.OUT_OF_RANGE,
                )
            return wire.encode_resistances(xbar.read(*np.divmod(flat, cols)))
        if op == Op.READ_REGION:
            row, col, nrows, ncols = wire.decode_region(body)
            if nrows * ncols > self.max_cells:
                raise WireError("region larger than the per-command bound", Status.TOO_LARGE)
            self._check_reply_size(nrows * ncols)
            if nrows * ncols == 0:
                if row > rows or col > cols:
                    raise WireError("empty region outside the crossbar", Status.OUT_OF_RANGE)
                return b""
            return wire.encode_resistances(xbar.read_region(row, col, nrows, ncols))
        if op == Op.READ_ALL:
            _expect_empty(body, "READ_ALL")
            if rows * cols > self.max_cells:
                raise WireError("the array is larger than the per-command bound", Status.TOO_LARGE)
            self._check_reply_size(rows * cols)
            return wire.encode_resistances(xbar.read_all())
        if op == Op.IDENTIFY:
            _expect_empty(body, "IDENTIFY")
            return wire.encode_info(self.info())
        if op == Op.CONFIGURE:
            want_rows, want_cols, limits, end = wire.decode_limits(body)
            if end != len(body):
                raise WireError("CONFIGURE body has bytes after its last field")
            if (want_rows, want_cols) != (rows, cols):
                raise WireError(
                    f"this device is {rows}x{cols}; it cannot be configured as "
                    f"{want_rows}x{want_cols}",
                    Status.OUT_OF_RANGE,
                )
            if not limits.within(xbar.limits):
                raise WireError(
                    f"requested limits {limits} are wider than the device's {xbar.limits}",
                    Status.SAFETY,
                )
            self.limits = limits
            self.say(f"configured {limits}")
            return wire.encode_info(self.info())
        if op == Op.ERROR:
            _expect_empty(body, "ERROR")
            return wire.encode_error_entry(*self.next_error())
        if op == Op.SAFE:
            _expect_empty(body, "SAFE")
            self.safe()
            return b""
        if op == Op.RESET:
            _expect_empty(body, "RESET")
            self.reset()
            return b""
        if op == Op.CLAIM:
            self._claim(body, session)
            return wire.encode_info(self.info())
        raise WireError(f"unknown opcode 0x{op:02x}", Status.UNKNOWN_COMMAND)

    def _check_reply_size(self, count: int) -> None:
        if wire.REPLY_HEADER + 8 * count > self.max_message:
            raise WireError(
                f"a reply of {count} resistances exceeds this device's message bound of "
                f"{self.max_message} bytes",
                Status.TOO_LARGE,
            )

    def _error(self, seq: int, op: int, status: Status, message: str, session: int = 0) -> bytes:
        self.queue_error(SCPI_CODES.get(status, -200), message)
        room = self.max_message - wire.REPLY_HEADER - 2
        text = message.encode("utf-8")[:room].decode("utf-8", "ignore")
        return wire.encode_reply(seq, op, status, wire.encode_error(text), session)

    def _remember(self, seq: int, digest: bytes, reply: bytes) -> None:
        old = self._done.pop(seq, None)
        if old is not None:
            self._done_bytes -= len(old.reply)
        self._done[seq] = _Done(digest, reply)
        self._done_bytes += len(reply)
        while len(self._done) > 1 and (
            len(self._done) > self.window or self._done_bytes > self.window_bytes
        ):
            _, dropped = self._done.popitem(last=False)
            self._done_bytes -= len(dropped.reply)

    def say(self, text: str) -> None:
        """An event line on stderr (unless the service was made with ``log=False``)."""
        if self._log:
            print(f"memristor-hil emulate: {text}", file=sys.stderr, flush=True)


_KNOWN_OPS = frozenset(int(op) for op in Op)


def _expect_empty(body: bytes, name: str) -> None:
    if body:
        raise WireError(f"{name} takes no body, got {len(body)} bytes")
