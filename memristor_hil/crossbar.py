"""The device abstraction layer: the interface every crossbar backend implements.

:class:`Crossbar` does the checks that must be the same everywhere (open, addresses inside the
array, safety limits) and hands checked requests to the backend's ``_apply``, ``_read`` and
``_read_all``. A backend never sees a request that failed a check, so a bad request leaves
every device untouched.

Besides the operations every backend has, the interface declares the optional capabilities
that tools above it use, each with a default that says "not available":

- :attr:`Crossbar.model`: the device model behind the cells, when the backend knows it (an
  emulator does); ``None`` otherwise. ``memristor-hil info`` shows it and mPES maps
  resistances to conductances with it.
- :attr:`Crossbar.can_restore`, :meth:`Crossbar.snapshot`, :meth:`Crossbar.restore`: return
  every device to an earlier state; Nengo's ``sim.reset()`` needs it. Real devices cannot be
  un-pulsed, so the defaults say False and raise :class:`UnsupportedError`.
- :attr:`Crossbar.device_parameters`: the per-device model parameters, only for a backend
  whose devices are simulated in this process (an emulator), so a caller may simulate them
  itself (NengoDL's native mPES builder does, inside the TensorFlow graph); ``None`` otherwise.
- :meth:`Crossbar.submit`: start an apply and collect its read-back later
  (:class:`PendingApply`), so a caller can compute while a remote device works; by default
  (in-process backends) the batch is applied before ``submit`` returns.
- :meth:`Crossbar.reserve`: a caller that knows its largest batch lets the backend size its
  work buffers before a run (the emulator does), so the run's memory stays flat; by default
  nothing to do.

A wrapper (a recording, say) forwards exactly these, so nothing is reached by probing for
attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import AddressError, CrossbarClosedError, InvalidBatchError, UnsupportedError
from .pulses import Cells, PulseBatch, SafetyLimits, cell_indices

if TYPE_CHECKING:
    from .powerlaw import DeviceParameters, PowerLaw

__all__ = ["Crossbar", "PendingApply"]


class PendingApply:
    """An apply started with :meth:`.Crossbar.submit`: its read-back once the device answered.

    Parameters
    ----------
    finish : callable
        Waits for the device's answer and returns what ``apply()`` returns (or raises what it
        raises). Called at most once.
    """

    __slots__ = ("_finish", "_outcome")

    def __init__(self, finish: Callable[[], np.ndarray | None]) -> None:
        self._finish: Callable[[], np.ndarray | None] | None = finish
        self._outcome: tuple[bool, Any] = (True, None)

    @classmethod
    def completed(cls, result: np.ndarray | None) -> PendingApply:
        """A pending apply that has already finished with ``result``."""
        pending = cls(lambda: result)
        pending.result()
        return pending

    @property
    def done(self) -> bool:
        """True once the answer has been collected (by :meth:`result` or by the crossbar)."""
        return self._finish is None

    def result(self) -> np.ndarray | None:
        """Wait for the device's answer and return what ``apply()`` would have returned.

        Raises
        ------
        CrossbarError
            What ``apply()`` would have raised (every call raises it again).
        """
        if self._finish is not None:
            finish, self._finish = self._finish, None
            try:
                self._outcome = (True, finish())
            except BaseException as exc:
                self._outcome = (False, exc)
        ok, value = self._outcome
        if not ok:
            raise value
        return value


class Crossbar(ABC):
    """A rows x cols array of memristors that takes batches of pulses and read requests.

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)``.
    limits : SafetyLimits, optional
        What the crossbar accepts (defaults: :class:`SafetyLimits`).
    identity : str
        Who the device says it is (for records and logs).

    Notes
    -----
    Use as a context manager, or call :meth:`close` when done; a closed crossbar raises
    :class:`~memristor_hil.errors.CrossbarClosedError`. Resistances are in ohm, as float arrays.
    """

    #: The apply a :meth:`submit` started and nobody has collected yet.
    _submitted: PendingApply | None = None

    def __init__(
        self, shape: tuple[int, int], *, limits: SafetyLimits | None = None, identity: str = ""
    ) -> None:
        rows, cols = (int(x) for x in shape)
        if rows <= 0 or cols <= 0:
            raise ValueError(f"crossbar shape must be positive, got {shape}")
        self._shape = (rows, cols)
        self._limits = limits or SafetyLimits()
        self._identity = identity
        self._closed = False

    # ------------------------------------------------------------------ description
    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self._shape

    @property
    def size(self) -> int:
        """Number of cells."""
        return self._shape[0] * self._shape[1]

    @property
    def limits(self) -> SafetyLimits:
        """The safety limits every batch is checked against."""
        return self._limits

    @property
    def identity(self) -> str:
        """The device's identity string."""
        return self._identity

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    # ------------------------------------------------------------------ optional capabilities
    @property
    def model(self) -> PowerLaw | None:
        """The device model behind the cells, if the backend knows it (an emulator); else None."""
        return None

    @property
    def device_parameters(self) -> DeviceParameters | None:
        """Per-device parameters of in-process simulated devices (an emulator); else None.

        Not None only when nothing but this process's simulation stands behind the cells, so
        simulating them elsewhere (in a TensorFlow graph) loses nothing; a wrapper that must
        see every pulse (a recording) keeps None.
        """
        return None

    @property
    def can_restore(self) -> bool:
        """True when :meth:`snapshot` and :meth:`restore` work (an emulator; not hardware)."""
        return False

    def snapshot(self) -> Any:
        """An opaque copy of every device's state, for :meth:`restore`.

        Raises
        ------
        UnsupportedError
            If the backend cannot return its devices to an earlier state (hardware).
        """
        raise UnsupportedError(f"{self!r} cannot take a snapshot of its devices")

    def restore(self, snapshot: Any) -> None:
        """Return every device to the state a :meth:`snapshot` of this crossbar recorded.

        Raises
        ------
        UnsupportedError
            If the backend cannot return its devices to an earlier state (hardware).
        """
        raise UnsupportedError(f"{self!r} cannot restore its devices to an earlier state")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {self._shape[0]}x{self._shape[1]} {self._identity!r} {state}>"
        )

    # ------------------------------------------------------------------ operations
    def apply(
        self, batch: PulseBatch, *, read_back: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Apply a batch of pulses.

        Parameters
        ----------
        batch : PulseBatch
            The pulses. Checked against the shape and safety limits first; a batch that fails
            a check raises and changes nothing.
        read_back : bool
            Also return the resistance of each batch entry's cell after the whole batch.
        out : numpy.ndarray, optional
            With ``read_back``, write the resistances into this writeable float array of shape
            ``(len(batch),)`` and return it, instead of a new array: a caller that applies a
            batch every step reuses one buffer (the emulator writes into it directly when it
            is C-contiguous and of the devices' float type; otherwise it copies into it).

        Returns
        -------
        numpy.ndarray or None
            With ``read_back``, resistances in batch order (shape ``(len(batch),)``): ``out``
            when given, else a new array the caller owns.
        """
        self._check_batch(batch, "apply")
        if out is not None:
            _check_out(out, len(batch), read_back)
        return self._apply_batch(batch, read_back, out)

    def reserve(self, entries: int) -> None:  # noqa: B027 - a hint most backends ignore
        """Make room now for batches of up to ``entries`` entries.

        A hint from a caller that knows its largest batch (mPES, when its simulator starts),
        so that a backend with per-batch work buffers (the emulator) allocates them before the
        run instead of at the first large batch: a run's memory then stays flat. Backends
        without such buffers ignore it.
        """

    def submit(self, batch: PulseBatch, *, read_back: bool = False) -> PendingApply:
        """Start applying a batch; :meth:`.PendingApply.result` gives what :meth:`apply` returns.

        The batch is checked here, as by :meth:`apply` (a bad batch raises and changes
        nothing). A backend behind a link (the serial and VISA drivers) sends the command and
        returns at once, so the caller can compute while the device works and the reply
        travels; any other backend applies the batch before returning (a completed
        :class:`.PendingApply`). At most one apply is outstanding: the next call on this
        crossbar (``apply``, ``submit``, a read, ``close``) first collects it, so commands
        still reach the device one at a time and in order. If it failed, its error is raised
        by :meth:`.PendingApply.result` and, if nobody collected it first, by that next call.

        Parameters
        ----------
        batch : PulseBatch
            The pulses.
        read_back : bool
            Also read back each batch entry's cell resistance after the whole batch.

        Returns
        -------
        PendingApply
            ``result()`` waits for the answer: the read-back (or None without ``read_back``).
        """
        self._check_batch(batch, "submit")
        cells = self._locate(batch.rows, batch.cols)
        pending = self._submit(batch, cells, read_back)
        self._submitted = None if pending.done else pending
        return pending

    def read(self, rows: ArrayLike, cols: ArrayLike) -> np.ndarray:
        """Resistances of the cells ``(rows[i], cols[i])``, shape ``(len(rows),)``."""
        self._check_open()
        self._collect_submitted()
        return self._read(self._locate(rows, cols).flat)

    def read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        """Resistances of the ``nrows x ncols`` block whose top-left cell is ``(row, col)``."""
        self._check_open()
        self._collect_submitted()
        if nrows <= 0 or ncols <= 0:
            raise InvalidBatchError(f"region size must be positive, got {nrows}x{ncols}")
        if not (
            0 <= row
            and row + nrows <= self._shape[0]
            and 0 <= col
            and col + ncols <= self._shape[1]
        ):
            raise AddressError(
                f"region rows {row}..{row + nrows - 1}, cols {col}..{col + ncols - 1} is outside "
                f"the {self._shape[0]}x{self._shape[1]} crossbar"
            )
        return self._read_region(row, col, nrows, ncols)

    def read_all(self) -> np.ndarray:
        """Resistances of every cell, shape ``(rows, cols)``."""
        self._check_open()
        self._collect_submitted()
        return self._read_all()

    def close(self) -> None:
        """Leave the outputs safe and release the device. Safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                self._collect_submitted()
            except Exception:  # noqa: BLE001 - its handle still raises it; close goes on
                pass
            finally:
                self._close()

    def __enter__(self) -> Crossbar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_batch(self, batch: object, caller: str) -> None:
        """What apply() and submit() check before anything reaches a device: the crossbar is
        open, an outstanding submit is collected, and ``batch`` is a PulseBatch within the
        safety limits (its cells are checked by the backend)."""
        self._check_open()
        self._collect_submitted()
        if not isinstance(batch, PulseBatch):
            raise InvalidBatchError(f"{caller}() takes a PulseBatch, got {type(batch).__name__}")
        batch.check(self._limits)

    def _check_open(self) -> None:
        if self._closed:
            raise CrossbarClosedError(f"{self!r} is closed")

    def _collect_submitted(self) -> None:
        """Collect the outstanding :meth:`submit`, if any, raising its error if it failed and
        its handle's ``result()`` has not already raised it to the caller."""
        pending = self._submitted
        if pending is not None:
            self._submitted = None
            if not pending.done:
                pending.result()

    # ------------------------------------------------------------------ backend hooks
    def _locate(self, rows: ArrayLike, cols: ArrayLike) -> Cells:
        """Row-major indices of the cells named, checked to lie inside the crossbar.

        A backend may override this with a faster equivalent (the emulator's compiled
        loop); it must raise :class:`AddressError` for a cell outside the crossbar.
        """
        return cell_indices(rows, cols, self._shape)

    def _apply_batch(
        self, batch: PulseBatch, read_back: bool, out: np.ndarray | None
    ) -> np.ndarray | None:
        """Apply a batch whose voltages, widths and counts passed the limits.

        By default: :meth:`_locate` its cells, :meth:`_apply`, and copy a read-back into
        ``out`` when given. A backend may override it with a path that checks the cells
        itself; it must raise :class:`AddressError` for a cell outside the crossbar before
        any device changes.
        """
        result = self._apply(batch, self._locate(batch.rows, batch.cols), read_back)
        if out is None or result is None:
            return result
        out[...] = result
        return out

    @abstractmethod
    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        """Apply a checked batch; ``cells`` holds its row-major cell indices."""

    def _submit(self, batch: PulseBatch, cells: Cells, read_back: bool) -> PendingApply:
        """Start a checked batch (see :meth:`submit`); by default apply it now."""
        return PendingApply.completed(self._apply(batch, cells, read_back))

    @abstractmethod
    def _read(self, flat: np.ndarray) -> np.ndarray:
        """Resistances of checked row-major cell indices."""

    def _read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        """Resistances of a checked region; by default through :meth:`_read`."""
        rows = np.arange(row, row + nrows)[:, None]
        cols = np.arange(col, col + ncols)[None, :]
        flat = (rows * self._shape[1] + cols).reshape(-1)
        return self._read(flat).reshape(nrows, ncols)

    def _read_all(self) -> np.ndarray:
        """Resistances of every cell; by default through :meth:`_read_region`."""
        return self._read_region(0, 0, *self._shape)

    def _close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the backend (outputs to a safe state). Called once."""


def _check_out(out: object, size: int, read_back: bool) -> None:
    """Raise ``ValueError`` unless ``out`` can take the read-back of a ``size``-entry batch."""
    if not read_back:
        raise ValueError("out= receives the read-back: pass read_back=True with it")
    if not (
        isinstance(out, np.ndarray)
        and out.shape == (size,)
        and out.dtype.kind == "f"
        and out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writeable float array of shape ({size},), got "
            f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
        )
