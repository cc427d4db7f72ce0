"""What the serial and VISA drivers share: a Crossbar over one :class:`~._session.Session`.

A driver is a :class:`SequencedCrossbar` over a :class:`Link` (the transport). The session
(drivers/_session.py) claims the device with a random session number (one controlling host at
a time), numbers each command once, re-sends the same bytes after a timeout, a damaged reply or
a dropped link, and keeps a state-changing command in its outbox until the device answers it:
the device answers a command it already executed from its sequence window instead of executing
it twice. A batch larger than the device's bounds is split (by the codec,
:func:`~memristor_hil.protocol.messages.split_batch`) into parts queued together, which go the
same way as one command (docs/protocol.md, sections 4-5).
"""

from __future__ import annotations

import warnings

import numpy as np

from memristor_hil.crossbar import Crossbar, PendingApply
from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarError,
    DeviceError,
    ProtocolError,
    UnsupportedError,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op, Status
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits

from ._session import Job, Link, LinkTimeout, Session

__all__ = ["Link", "LinkTimeout", "SequencedCrossbar"]

_VERSIONS = ", ".join(map(str, wire.SUPPORTED_VERSIONS[:-1])) + (
    f" and {wire.SUPPORTED_VERSIONS[-1]}"
)


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

    Notes
    -----
    An apply that fails without an answer (the link broke, no reply came) stays *unconfirmed*
    (:attr:`unanswered`): the device may or may not have executed it. It is never applied
    twice: repeating the same call, or :meth:`resume`, sends it again with its own sequence
    number (the device answers from its window if it executed it); any other apply first
    confirms it the same way, then goes. The parts of a split apply go the same way.
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
        try:
            self._session = Session(link, name, timeout=timeout, retries=retries)
        except ValueError:
            link.close()
            raise
        self._monitor = bool(monitor)
        self._native = False
        self._mark_parts = False
        claimed = False
        try:
            link.drain()  # stale bytes (a previous client's replies, line noise) are not ours
            info = self._identify()
            # version 3: read-backs come in the device's own precision (binary32 devices send
            # half the bytes); a version-2 device (the C firmware) sends binary64 as before
            self._native = info.version >= 3
            # version 4: split parts say "more follow", so that the device can report a batch
            # this host did not finish to the next host (docs/protocol.md 5.2)
            self._mark_parts = info.version >= 4
            if not monitor:
                mode = wire.Claim.TAKE_OVER if takeover else wire.Claim.CLAIM
                info = wire.decode_info(self._session.call(Op.CLAIM, bytes([mode])))
                claimed = True
            # never reuse a number in this session: IDENTIFY and CLAIM used some already
            self._session.follow(info.last_seq)
            self._bounds = (info.max_message, info.max_cells)
            #: ``(session, seq, entries)`` of a split batch that its host did not finish (the
            #: device reports it until an APPLY or CONFIGURE executes), else None
            self.interrupted_batch = info.interrupted
            if limits is not None:
                job = self._session.queue(
                    Op.CONFIGURE, [wire.encode_limits(info.rows, info.cols, limits)]
                )
                self._session.flush()
                info = wire.decode_info(job.replies[0])
        except BaseException:
            if claimed:  # e.g. CONFIGURE refused: leave the device as free as we found it
                self._release_quietly()
            link.close()
            raise
        self.device_info = info
        super().__init__((info.rows, info.cols), limits=info.limits, identity=info.identity)
        if self.interrupted_batch is not None:
            session, seq, entries = self.interrupted_batch
            warnings.warn(
                f"{name}: a split batch of an earlier host (session {session:08x}) was "
                f"interrupted: its first {entries} entries were applied (last part: sequence "
                f"{seq}), the rest were not; apply the rest to finish it (interrupted_batch, "
                "docs/protocol.md 5.2)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _identify(self) -> wire.DeviceInfo:
        name = self._session.name
        try:
            info = wire.decode_info(self._session.call(Op.IDENTIFY))
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
        return info

    @property
    def timeout(self) -> float:
        """Seconds to wait for each reply."""
        return self._session.timeout

    @property
    def retries(self) -> int:
        """How often a command is re-sent, with the same sequence number, before giving up."""
        return self._session.retries

    @property
    def session(self) -> int:
        """This host's session number (its claim on the device)."""
        return self._session.id

    @property
    def stats(self) -> dict[str, int]:
        """Counts: commands, retries, reopens, split parts sent, reclaims."""
        return self._session.stats

    @property
    def unanswered(self) -> int | None:
        """Sequence number of the oldest state-changing command still unconfirmed (sent, no
        answer yet: :meth:`resume` or the next apply sends it again first), or None."""
        job = self._session.unconfirmed
        return None if job is None else job.next_seq

    # ------------------------------------------------------------------ Crossbar hooks
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        return self._run(self._queue_apply(batch, cells, read_back))

    def _run(self, job: Job, sent: bool = False) -> np.ndarray | None:
        """Send the queued apply ``job`` (its first message already sent if ``sent``) and
        return its result; outputs safe after any failure."""
        try:
            self._finish(job, sent)
            return self._result(job)
        except BaseException:
            self._safe_quietly()  # also for an interrupt, or a reply that did not decode
            raise

    def _queue_apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> Job:
        """The job that applies the batch, queued (or the unconfirmed one, when this is the
        same call repeated); its context is what its result needs: cells, read-back, native
        precision."""
        if self._monitor:
            raise UnsupportedError(
                f"{self._session.name} was opened as a monitor (monitor=True): it reads, it "
                "cannot pulse"
            )
        native = read_back and self._native
        bodies = wire.split_batch(batch, cells, read_back, native, self._bounds, self._mark_parts)
        key = (tuple(bodies), read_back)
        pending = self._session.unconfirmed
        if pending is not None and pending.key == key:
            return pending  # the same call again: finish that one, never apply it twice
        if pending is not None:
            self._confirm_earlier()
        return self._session.queue(Op.APPLY, bodies, key, (cells.flat, read_back, native))

    def _confirm_earlier(self) -> None:
        """Send what is still unconfirmed (applied at most once) before anything newer."""
        try:
            self.resume()
        except DeviceError as exc:
            raise type(exc)(f"{exc}; this apply was not sent", exc.status) from exc
        except CrossbarError as exc:
            raise type(exc)(f"{exc}; this apply was not sent") from exc

    def _finish(self, job: Job, sent: bool = False) -> None:
        """Flush the outbox (``job`` is its only job), with errors that say what happened."""
        try:
            self._session.flush(sent)
        except DeviceError as exc:
            raise type(exc)(f"{exc}{_refused(job)}", exc.status) from exc
        except CrossbarError as exc:
            raise type(exc)(f"{exc}{_unconfirmed(job)}") from exc

    def _result(self, job: Job) -> np.ndarray | None:
        """An answered apply job's result: None, or its read-back."""
        flat, read_back, native = job.context
        if not read_back:
            return None
        if job.total == 1:
            return _read_back(job.replies[0], len(flat), True, native)
        return self._read(flat)

    def _submit(self, batch: PulseBatch, cells: Cells, read_back: bool) -> PendingApply:
        """Send the APPLY now and wait for its reply in ``result()`` (Crossbar.submit).

        The command is the one ``apply()`` sends, with the same retries (same sequence number)
        and the safe state after a failure; only the wait moves. A monitor, an unconfirmed
        earlier command, or a batch that must be split is handled by ``apply()`` at once.
        """
        if self._monitor or self._session.unconfirmed is not None:
            return super()._submit(batch, cells, read_back)
        job = self._queue_apply(batch, cells, read_back)
        if job.total != 1:
            return PendingApply.completed(self._run(job))
        sent = self._session.send_first(job)
        return PendingApply(lambda: self._run(job, sent))

    def resume(self) -> np.ndarray | None:
        """Send again what an error left unconfirmed; returns the read-back of the interrupted
        apply if it asked for one (else None; None also when nothing was unconfirmed).

        Each message keeps its sequence number, so one the device already executed is answered
        from its window, never applied twice. Call it once the device can be reached again
        (for a serial port on a new path, :meth:`reopen` first).
        """
        self._check_open()
        job = self._session.unconfirmed
        if job is None:
            return None
        try:
            self._finish(job)
        except BaseException:
            self._safe_quietly()
            raise
        return None if job.context is None else self._result(job)

    resume_apply = resume  # the name before resume() covered every command

    def reopen(self, where: str | None = None) -> None:
        """Open the link again, at ``where`` (a new port or resource) if given.

        The device is identified again and must have this crossbar's shape. Sequence state and
        the unconfirmed command (if any) are kept: repeat the call that failed, or
        :meth:`resume`, and it is applied exactly once.

        Raises
        ------
        ConnectionLostError
            If the link cannot be opened.
        DeviceError
            If the device there is not a crossbar of this shape.
        """
        self._check_open()
        session = self._session
        if where is not None:
            session.link.retarget(where)
            session.name = where
        try:
            session.reopen()
        except OSError as exc:
            raise ConnectionLostError(f"cannot reopen {session.name}: {exc}") from None
        info = self._identify()
        if (info.rows, info.cols) != self.shape:
            raise DeviceError(
                f"{session.name} is a {info.rows}x{info.cols} crossbar, not the "
                f"{self.shape[0]}x{self.shape[1]} one this driver was controlling"
            )

    def keep_alive(self) -> None:
        """Renew this host's claim (its lease) without changing anything on the device.

        A device releases a claim whose host sent no command for its lease time
        (docs/protocol.md, section 5.1); a host that idles longer calls this now and then.
        """
        self._check_open()
        if not self._monitor:
            self._session.call(Op.CLAIM, bytes([wire.Claim.CLAIM]))

    def _read(self, flat: np.ndarray) -> np.ndarray:
        step = wire.read_cells_per_command(self._bounds)
        parts = [
            wire.decode_resistances(
                self._session.call(Op.READ, wire.encode_cells(flat[i : i + step])),
                len(flat[i : i + step]),
            )
            for i in range(0, len(flat), step)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def _read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        if nrows * ncols > wire.read_cells_per_command(self._bounds):
            return super()._read_region(row, col, nrows, ncols)
        body = self._session.call(Op.READ_REGION, wire.encode_region(row, col, nrows, ncols))
        return wire.decode_resistances(body, nrows * ncols).reshape(nrows, ncols)

    def _read_all(self) -> np.ndarray:
        if self.size > wire.read_cells_per_command(self._bounds):
            return super()._read_all()
        body = self._session.call(Op.READ_ALL)
        return wire.decode_resistances(body, self.size).reshape(self.shape)

    def _close(self) -> None:
        if self._monitor:  # the owner's outputs and claim are not ours to touch
            self._session.close()
            return
        try:
            self._safe_quietly()
            if self._session.unconfirmed is None:  # else keep the claim for resume()
                self._release_quietly()
        finally:
            self._session.close()

    # ------------------------------------------------------------------ more commands
    def next_error(self) -> tuple[int, str]:
        """Pop the device's oldest queued error: ``(code, message)``, ``(0, "No error")``."""
        self._check_open()
        return wire.decode_error_entry(self._session.call(Op.ERROR))

    def reset(self) -> None:
        """Outputs to the safe state and the device's error queue cleared (state is kept)."""
        self._check_open()
        self._session.call(Op.RESET)

    def _safe_quietly(self) -> None:
        """Ask for the safe output state; a device that cannot be reached is left as it is."""
        try:
            self._session.call(Op.SAFE, retries=0)
        except CrossbarError:
            pass

    def _release_quietly(self) -> None:
        try:
            self._session.call(Op.CLAIM, bytes([wire.Claim.RELEASE]), retries=0)
        except CrossbarError:
            pass


def _refused(job: Job) -> str:
    """What a refusal (an error status) of part of ``job`` means, for the error text."""
    if job.total == 1:
        return ""
    done = len(job.replies)
    return (
        f"; split apply: parts 1..{done} of {job.total} were applied, part {done + 1} was "
        "refused and later parts were not sent"
    )


def _unconfirmed(job: Job) -> str:
    """What an unanswered message of ``job`` means, for the error text."""
    done = len(job.replies)
    if job.total == 1:
        return (
            f"; {job.op.name} (sequence {job.next_seq}) is unconfirmed (applied or not): repeat "
            "the call or call resume() when the device is back, or the next apply sends it "
            "first: it is never applied twice"
        )
    return (
        f"; split apply unfinished: parts 1..{done} of {job.total} are applied, part "
        f"{done + 1} is unconfirmed (applied or not), later parts were not sent; call resume() "
        "(or repeat the call) when the device is back: no part is applied twice"
    )


def _read_back(reply: bytes, count: int, read_back: bool, native: bool) -> np.ndarray | None:
    """What an APPLY's reply body holds: None, or its ``count`` readings."""
    if not read_back:
        return None
    if native:
        return wire.decode_readings(reply, count)
    return wire.decode_resistances(reply, count)
