"""EmulatedArC2: a stand-in for ``pyarc2.Instrument`` over an :class:`EmulatedCrossbar`.

ArC TWO has no simulation mode and no wire protocol one could reproduce, so the ``arc2://``
backend is tested against this object. It implements the subset of ``pyarc2.Instrument`` that
:class:`memristor_hil.drivers.arc2.ArC2Crossbar` calls, with the same names and parameters
(``tests/test_arc2.py`` checks them against the installed ``pyarc2``), and the documented
behaviour: pulse operations queue in a command buffer and return the instrument (so calls
chain); ``execute()`` runs the buffer; reads return float32 currents, ``NaN`` for channels
outside a mask; a row channel's slice answers for the 32 column channels in channel order.

Each ``execute()`` applies its buffered pulses to the devices as one batch, cells in row-major
order, so that a program built from a batch of distinct cells in row-major order (what mPES
sends) changes the devices exactly as ``apply`` on the in-process emulator does. Voltages are
used as given (the real instrument sets them to its DAC's resolution).

Every call is appended to :attr:`calls` as ``(name, args)``, for call-sequence tests; ``fail``
makes a named method raise, once, to emulate a timeout or an instrument error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from memristor_hil.pulses import PulseBatch

from .crossbar import EmulatedCrossbar

__all__ = ["EmulatedArC2"]

_ROWS = tuple(range(0, 16)) + tuple(range(32, 48))
_COLS = tuple(range(16, 32)) + tuple(range(48, 64))
#: Instructions the stand-in's buffer holds before ``execute()`` (bounded, like the real one).
BUFFER_LIMIT = 1 << 16


class EmulatedArC2:
    """An emulated ArC TWO whose channels are wired to an emulated crossbar.

    Parameters
    ----------
    xbar : EmulatedCrossbar
        The devices.
    row_channels, col_channels : sequence of int or None
        The channel wired to each crossbar row / column (None: not wired), as in the layout
        the driver is given.
    """

    def __init__(
        self,
        xbar: EmulatedCrossbar,
        row_channels: Iterable[int | None] = _ROWS,
        col_channels: Iterable[int | None] = _COLS,
    ) -> None:
        self.xbar = xbar
        self._row_of = {c: r for r, c in enumerate(row_channels) if c is not None}
        self._col_of = {c: k for k, c in enumerate(col_channels) if c is not None}
        self.calls: list[tuple[str, tuple]] = []
        self.fail: dict[str, BaseException] = {}
        self._buffer: list[tuple] = []
        self.grounded = True
        self.executed_programs = 0

    # ------------------------------------------------------------------ bookkeeping
    def _log(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def _queue(self, item: tuple) -> None:
        if len(self._buffer) >= BUFFER_LIMIT:
            raise RuntimeError("command buffer full: execute() first")
        self._buffer.append(item)

    # ------------------------------------------------------------------ pyarc2 interface
    def pulse_slice_masked(
        self, chan: int, voltage: float, nanos: int, mask: Iterable[int] | np.ndarray
    ) -> EmulatedArC2:
        """Queue one pulse from the masked high channels to ``chan`` (the low channel)."""
        mask = np.array(mask, dtype=np.uint64)
        self._log("pulse_slice_masked", chan, voltage, nanos, tuple(mask.tolist()))
        if chan not in self._row_of:
            raise ValueError(f"channel {chan} is not a wired row channel")
        self._queue(("pulse", int(chan), float(voltage), int(nanos), mask))
        return self

    def ground_all(self) -> EmulatedArC2:
        """Queue: every channel to 0 V."""
        self._log("ground_all")
        self._queue(("ground",))
        return self

    def execute(self) -> EmulatedArC2:
        """Run the buffered instructions: their pulses as one batch, then any grounding."""
        self._log("execute")
        buffer, self._buffer = self._buffer, []
        self._apply_pulses([item for item in buffer if item[0] == "pulse"])
        if any(item[0] == "ground" for item in buffer):
            self.grounded = True
        self.executed_programs += 1
        return self

    def busy(self) -> bool:
        """Whether a program is running (never: an emulated program runs in ``execute``)."""
        self._log("busy")
        return False

    def wait(self) -> None:
        """Block until the instrument is idle."""
        self._log("wait")

    def read_slice_masked(
        self, chan: int, mask: Iterable[int] | np.ndarray, vread: float
    ) -> np.ndarray:
        """Currents (float32) from the masked column channels into row channel ``chan``."""
        mask = np.array(mask, dtype=np.uint64)
        self._log("read_slice_masked", chan, tuple(mask.tolist()), vread)
        self.execute_pending()
        out = np.full(len(_COLS), np.nan, dtype=np.float32)
        row = self._row_of.get(int(chan))
        for i, col_chan in enumerate(_COLS):
            if col_chan in mask:
                col = self._col_of.get(col_chan)
                out[i] = 0.0 if row is None or col is None else self._current(row, col, vread)
        return out

    def read_all(self, vread: float, order: Any) -> np.ndarray:
        """A 32x32 float32 array of currents, rows and columns in channel order."""
        self._log("read_all", vread, order)
        self.execute_pending()
        out = np.zeros((32, 32), dtype=np.float32)
        rows = [(i, self._row_of[c]) for i, c in enumerate(_ROWS) if c in self._row_of]
        cols = [(j, self._col_of[c]) for j, c in enumerate(_COLS) if c in self._col_of]
        if rows and cols:
            ri, rr = (np.array(v) for v in zip(*rows, strict=True))
            cj, cc = (np.array(v) for v in zip(*cols, strict=True))
            r = self.xbar.read_all()[np.ix_(rr, cc)]
            out[np.ix_(ri, cj)] = (vread / r).astype(np.float32)
        return out

    def finalise_operation(self, mode: Any = None, control: Any = None) -> None:
        """Leave the channels grounded (any ``mode``) and run the buffer."""
        self._log("finalise_operation", mode, control)
        self._queue(("ground",))
        self.execute_pending()

    # ------------------------------------------------------------------ internals
    def execute_pending(self) -> None:
        """Run what is buffered (the real read calls flush the buffer too)."""
        if self._buffer:
            buffer, self._buffer = self._buffer, []
            self._apply_pulses([item for item in buffer if item[0] == "pulse"])
            if any(item[0] == "ground" for item in buffer):
                self.grounded = True

    def _current(self, row: int, col: int, vread: float) -> np.float32:
        r = self.xbar.read(np.array([row]), np.array([col]))[0]
        return np.float32(vread / r)

    def _apply_pulses(self, pulses: list[tuple]) -> None:
        if not pulses:
            return
        self.grounded = False
        totals: dict[tuple[float, int], dict[int, int]] = {}
        ncols = self.xbar.shape[1]
        for _, chan, voltage, nanos, mask in pulses:
            row = self._row_of[chan]
            group = totals.setdefault((voltage, nanos), {})
            for col_chan in mask.tolist():
                col = self._col_of.get(int(col_chan))
                if col is None:
                    continue  # a channel wired to nothing: the pulse reaches no device
                cell = row * ncols + col
                group[cell] = group.get(cell, 0) + 1
        for (voltage, nanos), counts in sorted(totals.items()):
            cells = np.array(sorted(counts), dtype=np.int64)
            number = np.array([counts[c] for c in cells.tolist()], dtype=np.int64)
            pulses_arg: Any = int(number[0]) if np.all(number == number[0]) else number
            batch = PulseBatch.from_flat(
                cells, ncols, pulses_arg, voltage=voltage, width=nanos / 1e9
            )
            self.xbar.apply(batch)
