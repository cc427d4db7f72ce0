"""Resuming a driver after its link failed: reopen (on a new port), resend without applying twice.

A state-changing command (APPLY, CONFIGURE) that got no answer may or may not have been
executed. Until one is answered, every state-changing command is sent with the unanswered one's
sequence number: the same batch again is then answered from the device's sequence window if it
was applied (and applied once if it was not); a different one is refused with a SEQUENCE error
if the first was applied. Either way nothing is applied twice, across a reopen on another port
and across a restart of the device that kept its state file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memristor_hil.errors import (
    ConnectionLostError,
    CrossbarTimeoutError,
    DeviceError,
)
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.messages import Op
from memristor_hil.pulses import Cells, PulseBatch

from ._sequenced import SequencedCrossbar

__all__ = ["ResumableCrossbar"]

#: Failures of a command after which nobody knows whether the device executed it.
_UNANSWERED = (ConnectionLostError, CrossbarTimeoutError)
#: Failures that SequencedCrossbar._apply has already answered with the safe state.
_SAFED = (ConnectionLostError, CrossbarTimeoutError, DeviceError)


class ResumableCrossbar(SequencedCrossbar):
    """A :class:`SequencedCrossbar` that can be reopened, elsewhere, keeping its sequence state."""

    _unanswered: int | None = None

    def reopen(self, where: str | None = None) -> None:
        """Open the link again, at ``where`` (a new port or resource) if given.

        The device is identified again and must have this crossbar's shape. Sequence state is
        kept: if a state-changing command failed unanswered, send it again (the same call) and
        it is applied exactly once.

        Raises
        ------
        ConnectionLostError
            If the link cannot be opened.
        DeviceError
            If the device there is not a crossbar of this shape.
        """
        self._check_open()
        link = self._link
        if where is not None:
            link.retarget(where)
            self._name = where
        try:
            link.reopen()
        except OSError as exc:
            raise ConnectionLostError(f"cannot reopen {self._name}: {exc}") from None
        self._reopen = False
        info = wire.decode_info(self._call(Op.IDENTIFY))
        if (info.rows, info.cols) != self.shape:
            raise DeviceError(
                f"{self._name} is a {info.rows}x{info.cols} crossbar, not the "
                f"{self.shape[0]}x{self.shape[1]} one this driver was controlling"
            )

    @property
    def unanswered(self) -> int | None:
        """Sequence number of a state-changing command that failed without an answer (the
        next state-changing command reuses it), or None."""
        return self._unanswered

    # ------------------------------------------------------------------ overrides
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        if self._monitor:  # refused before anything is sent: no outputs of ours to make safe
            return super()._apply(batch, cells, read_back)
        try:
            return super()._apply(batch, cells, read_back)
        except BaseException as exc:
            if not isinstance(exc, _SAFED):  # interrupted, or a reply that did not decode
                self._safe_quietly()
            raise

    def _start(
        self, op: Op, body: bytes = b"", retries: int | None = None, send_now: bool = False
    ) -> Callable[[], bytes]:
        # While a state-changing command is unanswered, every state-changing command reuses
        # its number (SequencedCrossbar._begin takes the number explicitly).
        resend = self._unanswered if op in wire.SEQUENCED else None
        seq = self._next_seq() if resend is None else resend
        wait = self._begin(op, body, seq, retries, send_now)

        def finish() -> bytes:
            try:
                reply = wait()
            except _UNANSWERED:
                if op in wire.SEQUENCED and self._unanswered is None:
                    self._unanswered = seq
                raise
            except DeviceError as exc:
                if op in wire.SEQUENCED:
                    self._unanswered = None  # answered (refused): it is known what happened
                if resend is not None and "SEQUENCE" in str(exc):
                    raise DeviceError(
                        f"{exc}: the earlier command that got no answer (sequence {resend}) had "
                        "been executed by the device, and this different one was not; send it "
                        "again"
                    ) from None
                raise
            if op in wire.SEQUENCED:
                self._unanswered = None
            return reply

        return finish
