"""RecordingCrossbar: any Crossbar, with every batch and read committed to a :class:`.Record`.

A batch is *acknowledged* when :meth:`RecordingCrossbar.apply <.Crossbar.apply>` returns (or, for
:meth:`~.Crossbar.submit`, when its ``result()`` returns): by then it has
been applied by the wrapped crossbar and committed to the record, so it is in the file even if
the process is killed the next instant. A call that raises is committed too, with its error (the
device may have applied part of the batch), and the error is raised again.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from ..crossbar import Crossbar, PendingApply
from ..powerlaw import PowerLaw
from ..pulses import Cells, PulseBatch
from .record import Record
from .record_policy import RECORDS_ENV, format_size

_log = logging.getLogger("memristor_hil.records")

__all__ = ["RecordingCrossbar"]


class RecordingCrossbar(Crossbar):
    """Wraps a crossbar and records every batch applied and every read.

    Parameters
    ----------
    inner : Crossbar
        The crossbar that does the work (emulator, driver, anything).
    record : Record or path-like
        An open, writable :class:`.Record`, or the path of a new record file to create
        (an existing file is never overwritten).
    parameters : dict, optional
        The run's parameters, stored with a newly created record.
    url : str, optional
        The URL ``inner`` was opened with, stored with a newly created record.
    synchronous : {"NORMAL", "FULL"}
        Durability of a newly created record (see :meth:`.Record.create`).
    close_inner : bool
        Close ``inner`` when this crossbar is closed (default True). The record is always
        closed with it.
    announce : bool
        Say where the record goes when it opens and its size when it closes (a warning of the
        ``memristor_hil.records`` logger, shown on stderr unless logging is set up otherwise):
        what ``open_crossbar`` does for a record nobody asked for, the default of a hardware
        URL, so a script never fills a disk without a word.

    Examples
    --------
    >>> from memristor_hil import PulseBatch, open_crossbar
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run.sqlite")
    >>> with RecordingCrossbar(open_crossbar("emulator://?rows=2&cols=2"), path) as xbar:
    ...     _ = xbar.apply(PulseBatch([0], [1], pulses=5), read_back=True)
    >>> with Record.open(path) as record:
    ...     len(record)
    1
    """

    def __init__(
        self,
        inner: Crossbar,
        record: Record | str | os.PathLike[str],
        *,
        parameters: dict[str, Any] | None = None,
        url: str | None = None,
        synchronous: str = "NORMAL",
        close_inner: bool = True,
        announce: bool = False,
    ) -> None:
        if not isinstance(inner, Crossbar):
            raise TypeError(f"RecordingCrossbar wraps a Crossbar, got {type(inner).__name__}")
        super().__init__(inner.shape, limits=inner.limits, identity=inner.identity)
        self._inner = inner
        self._close_inner = close_inner
        if isinstance(record, Record):
            if record.shape != inner.shape:
                raise ValueError(
                    f"record {record.path} is for a {record.shape} crossbar, not {inner.shape}"
                )
            if parameters:
                record.update_parameters(**parameters)
            self._record = record
        else:
            self._record = Record.create(
                record,
                identity=inner.identity,
                shape=inner.shape,
                limits=inner.limits,
                parameters=parameters,
                url=url,
                synchronous=synchronous,
            )
        self._announce = announce
        if announce:
            _log.warning(
                "recording every batch and reading of %s to %s (hardware URLs record by "
                "default; an mPES run writes a few MB per simulated second at 100x100: pass "
                "record=False to turn it off or record=PATH to choose the file; $%s sets the "
                "folder)",
                url or inner.identity,
                self._record.path,
                RECORDS_ENV,
            )

    @property
    def inner(self) -> Crossbar:
        """The wrapped crossbar."""
        return self._inner

    @property
    def record(self) -> Record:
        """The record being written."""
        return self._record

    @property
    def model(self) -> PowerLaw | None:
        """The wrapped crossbar's device model (see :attr:`.Crossbar.model`)."""
        return self._inner.model

    def reserve(self, entries: int) -> None:
        """Forwarded to the wrapped crossbar (see :meth:`.Crossbar.reserve`)."""
        self._inner.reserve(entries)

    # can_restore, snapshot() and restore() keep the base class's "not available": rewinding
    # the devices behind the record's back would leave a record that no longer describes
    # them, so mPES treats a recording crossbar like hardware. Call them on ``inner`` if the
    # record may stop matching the devices.

    def __repr__(self) -> str:
        return f"<RecordingCrossbar {self._inner!r} -> {str(self._record.path)!r}>"

    # ------------------------------------------------------------------ Crossbar hooks
    def _locate(self, rows: Any, cols: Any) -> Cells:
        # The wrapped crossbar's own check (same shape, same errors): the emulator's compiled
        # pass instead of the base class's NumPy one, a fifth of a recorded mPES step's cost.
        return self._inner._locate(rows, cols)

    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        started = time.time()
        clock = time.perf_counter()
        try:
            result = self._inner.apply(batch, read_back=read_back)
        except Exception as exc:
            self._log_apply(batch, cells, None, started, clock, _error_text(exc))
            raise
        self._log_apply(batch, cells, result, started, clock, None)
        return result

    def _submit(self, batch: PulseBatch, cells: Cells, read_back: bool) -> PendingApply:
        """The wrapped crossbar's submit (a driver sends at once); the event is committed when
        its read-back is collected, before ``result()`` returns: acknowledged still means in
        the file. Its ``duration`` then runs from the submit to the collection."""
        started = time.time()
        clock = time.perf_counter()
        try:
            inner = self._inner.submit(batch, read_back=read_back)
        except Exception as exc:
            self._log_apply(batch, cells, None, started, clock, _error_text(exc))
            raise

        def finish() -> np.ndarray | None:
            try:
                result = inner.result()
            except Exception as exc:
                self._log_apply(batch, cells, None, started, clock, _error_text(exc))
                raise
            self._log_apply(batch, cells, result, started, clock, None)
            return result

        return PendingApply(finish)

    def _log_apply(
        self,
        batch: PulseBatch,
        cells: Cells,
        result: np.ndarray | None,
        started: float,
        clock: float,
        error: str | None,
    ) -> None:
        self._record.log_apply(
            cells.flat,
            batch.compact_pulses,
            batch.voltage,
            batch.width,
            result,
            started=started,
            duration=time.perf_counter() - clock,
            error=error,
            ascending=cells.ascending,
        )

    def _logged_read(self, flat: np.ndarray, call: Any, *args: Any) -> np.ndarray:
        started = time.time()
        clock = time.perf_counter()
        try:
            result = call(*args)
        except Exception as exc:
            self._record.log_read(
                flat,
                None,
                started=started,
                duration=time.perf_counter() - clock,
                error=_error_text(exc),
            )
            raise
        self._record.log_read(
            flat, result.reshape(-1), started=started, duration=time.perf_counter() - clock
        )
        return result

    def _read(self, flat: np.ndarray) -> np.ndarray:
        rows, cols = np.divmod(flat, self.shape[1])
        return self._logged_read(flat, self._inner.read, rows, cols)

    def _read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        rows = np.arange(row, row + nrows)[:, None]
        cols = np.arange(col, col + ncols)[None, :]
        flat = (rows * self.shape[1] + cols).reshape(-1)
        return self._logged_read(flat, self._inner.read_region, row, col, nrows, ncols)

    def _read_all(self) -> np.ndarray:
        flat = np.arange(self.size)
        return self._logged_read(flat, self._inner.read_all)

    def _close(self) -> None:
        try:
            if self._close_inner:
                self._inner.close()
        finally:
            try:  # the record closes even if counting its events fails
                events = len(self._record) if self._announce else 0
            finally:
                self._record.close()
            if self._announce:
                path = self._record.path
                try:
                    size = format_size(path.stat().st_size)
                except OSError:  # gone already: the announcement never makes close() fail
                    size = "?"
                _log.warning("record %s closed: %d events, %s", path, events, size)


def _error_text(exc: BaseException) -> str:
    """How a failed call's error is kept in the record: its type and message."""
    return f"{type(exc).__name__}: {exc}"
