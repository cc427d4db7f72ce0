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

A wrapper (a recording, say) forwards exactly these, so nothing is reached by probing for
attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import AddressError, CrossbarClosedError, InvalidBatchError, UnsupportedError
from .pulses import Cells, PulseBatch, SafetyLimits, cell_indices

if TYPE_CHECKING:
    from .powerlaw import DeviceParameters, PowerLaw

__all__ = ["Crossbar"]


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
        self._check_open()
        if not isinstance(batch, PulseBatch):
            raise InvalidBatchError(f"apply() takes a PulseBatch, got {type(batch).__name__}")
        if out is not None:
            _check_out(out, len(batch), read_back)
        batch.check(self._limits)
        return self._apply_batch(batch, read_back, out)

    def read(self, rows: ArrayLike, cols: ArrayLike) -> np.ndarray:
        """Resistances of the cells ``(rows[i], cols[i])``, shape ``(len(rows),)``."""
        self._check_open()
        return self._read(self._locate(rows, cols).flat)

    def read_region(self, row: int, col: int, nrows: int, ncols: int) -> np.ndarray:
        """Resistances of the ``nrows x ncols`` block whose top-left cell is ``(row, col)``."""
        self._check_open()
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
        return self._read_all()

    def close(self) -> None:
        """Leave the outputs safe and release the device. Safe to call twice."""
        if not self._closed:
            self._closed = True
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

    def _check_open(self) -> None:
        if self._closed:
            raise CrossbarClosedError(f"{self!r} is closed")

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
