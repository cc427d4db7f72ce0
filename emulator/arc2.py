"""EmulatedArC2: a stand-in for ``pyarc2.Instrument`` over an :class:`EmulatedCrossbar`.

ArC TWO has no simulation mode and no wire protocol one could reproduce, so the ``arc2://``
backend is tested against this object. It implements the subset of ``pyarc2.Instrument`` that
:class:`memristor_hil.drivers.arc2.ArC2Crossbar` calls, with the same names and parameters
(``tests/test_arc2.py`` checks them against the installed ``pyarc2``), and behaves as the
vendor's code does, not as our driver expects (libarc2 ``src/instrument.rs`` at commit
72f8c9f, pyarc2 ``src/lib.rs`` and ``pyarc2/__init__.py`` at b06691d):

- Channels 0..15 and 32..47 are libarc2's ``ALL_BITS`` (bitlines, the crossbar's rows, the
  low side of a pulse or read), 16..31 and 48..63 its ``ALL_WORDS`` (wordlines, columns).
  A slice read with low channel ``chan`` answers for the 32 channels of the other group in
  ascending channel order, ``NaN`` outside the mask (``read_slice_masked``, instrument.rs
  1649-1700; pyarc2 documents the ``NaN``, though libarc2's loop tests the channel group,
  not the mask, and so returns raw values there: the driver uses only masked entries).
- ``read_all(vread, order)`` biases, one slice read each, the channels ``BiasOrder.Rows``
  -> ``ALL_WORDS`` or ``BiasOrder.Cols`` -> ``ALL_BITS`` (instrument.rs 1713-1728) and pyarc2
  reshapes the 1024 values row-major to (32, 32) (lib.rs 1034-1038): axis 0 is the biased
  channel. ``Rows`` therefore answers ``[word, bit]``, the transpose of a row-major crossbar.
- Every read drives the low channel to ``-vread`` and the high channels to 0 V
  (``vidx!(-vread)``, instrument.rs 1588, 1621, 1676); the current is returned with the sign
  of a current leaving the high channel, ``-vread / R``. Its sign is not pinned by the
  vendor code; arc2control only ever uses ``abs(vread / I)``.
- Pulse widths from 1 to 40 ns run as 40 ns (instrument.rs 2399-2400). Pulses of 500 ms or
  more take the slow path (instrument.rs 2081-2085), which leaves the high channels at
  ``+V/2`` and the low channel at ``-V/2`` until something grounds them (``pulse_one_slow``
  / ``setup_dacs_2t_pulsing``, instrument.rs 2131-2133, 2165-2183): :attr:`biased` says so.
- Operations queue in a command buffer until ``execute()``; reads flush it.

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

__all__ = ["ALL_BITS", "ALL_WORDS", "EmulatedArC2"]

#: libarc2's ``ALL_BITS`` (bitlines, rows) and ``ALL_WORDS`` (wordlines, columns).
ALL_BITS = tuple(range(0, 16)) + tuple(range(32, 48))
ALL_WORDS = tuple(range(16, 32)) + tuple(range(48, 64))
#: Instructions the stand-in's buffer holds before ``execute()`` (bounded, like the real one).
BUFFER_LIMIT = 1 << 16
#: libarc2 runs widths from 1 to 40 ns as 40 ns; from 500 ms on it takes the slow path.
HS_MIN_NANOS = 40
SLOW_NANOS = 500_000_000


def _order_name(order: Any) -> str:
    """``"Rows"`` or ``"Cols"`` for a ``pyarc2.BiasOrder`` (or the bare name)."""
    if isinstance(order, str) and order in ("Rows", "Cols"):
        return order
    try:
        from pyarc2 import BiasOrder
    except ImportError:
        BiasOrder = None  # noqa: N806 - the vendor's name
    if BiasOrder is not None:
        if order is BiasOrder.Rows:
            return "Rows"
        if order is BiasOrder.Cols:
            return "Cols"
    raise TypeError(f"order must be a pyarc2.BiasOrder, got {order!r}")


class EmulatedArC2:
    """An emulated ArC TWO whose channels are wired to an emulated crossbar.

    Parameters
    ----------
    xbar : EmulatedCrossbar
        The devices.
    row_channels, col_channels : sequence of int or None
        The bitline channel wired to each crossbar row and the wordline channel wired to each
        column (None: not wired), as in the layout the driver is given.
    """

    def __init__(
        self,
        xbar: EmulatedCrossbar,
        row_channels: Iterable[int | None] = ALL_BITS,
        col_channels: Iterable[int | None] = ALL_WORDS,
    ) -> None:
        self.xbar = xbar
        self._row_of = {c: r for r, c in enumerate(row_channels) if c is not None}
        self._col_of = {c: k for k, c in enumerate(col_channels) if c is not None}
        if set(self._row_of) - set(ALL_BITS) or set(self._col_of) - set(ALL_WORDS):
            raise ValueError("rows are wired to bitline channels, columns to wordline channels")
        self.calls: list[tuple[str, tuple]] = []
        self.fail: dict[str, BaseException] = {}
        self._buffer: list[tuple] = []
        #: channels left at a voltage by a slow pulse, until a ground runs
        self.biased: set[int] = set()
        #: the I/O logic last set with ``set_logic`` (mask, four directions)
        self.logic: tuple | None = None
        self.executed_programs = 0

    @property
    def grounded(self) -> bool:
        """Whether every line is at 0 V now and no pulse waits in the buffer."""
        return not self.biased and not any(item[0] == "pulse" for item in self._buffer)

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
        """Queue one pulse: ``chan`` (the low channel) at ``-V``, the masked channels high."""
        mask = np.array(mask, dtype=np.uint64)
        self._log("pulse_slice_masked", chan, voltage, nanos, tuple(mask.tolist()))
        if not 0 <= chan < 64 or int(nanos) < 0:
            raise ValueError(f"bad channel {chan} or width {nanos} ns")
        nanos = HS_MIN_NANOS if 0 < int(nanos) < HS_MIN_NANOS else int(nanos)
        self._queue(("pulse", int(chan), float(voltage), nanos, mask))
        return self

    def ground_all(self) -> EmulatedArC2:
        """Queue: every channel to 0 V."""
        self._log("ground_all")
        self._queue(("ground",))
        return self

    def set_logic(
        self, mask: int, cl0: Any = None, cl1: Any = None, cl2: Any = None, cl3: Any = None
    ) -> EmulatedArC2:
        """Set the daughterboard's I/O logic (which lines the socket or the header drive)."""
        self._log("set_logic", mask, cl0, cl1, cl2, cl3)
        self.logic = (int(mask), cl0, cl1, cl2, cl3)
        return self

    def execute(self) -> EmulatedArC2:
        """Run the buffered instructions."""
        self._log("execute")
        self._run_buffer()
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
        """Currents (float32) of the masked channels into low channel ``chan``; the 32
        channels of the other group in ascending order, ``NaN`` outside the mask."""
        mask = np.array(mask, dtype=np.uint64)
        self._log("read_slice_masked", chan, tuple(mask.tolist()), vread)
        return self._slice(int(chan), {int(c) for c in mask.tolist()}, vread)

    def read_all(self, vread: float, order: Any) -> np.ndarray:
        """(32, 32) float32 currents; axis 0 is the biased channel of ``order``."""
        self._log("read_all", vread, order)
        bias = ALL_WORDS if _order_name(order) == "Rows" else ALL_BITS
        rows = [self._slice(chan, None, vread) for chan in bias]
        return np.stack(rows).reshape(32, 32)

    def finalise_operation(self, mode: Any = None, control: Any = None) -> None:
        """Ground the channels (any ``mode`` but None) and run the buffer."""
        self._log("finalise_operation", mode, control)
        if mode is not None:
            self._queue(("ground",))
            self._run_buffer()

    # ------------------------------------------------------------------ internals
    def _slice(self, low: int, mask: set[int] | None, vread: float) -> np.ndarray:
        """One slice read at ``-vread`` on ``low``; the buffer runs first, lines ground after
        (``ground_all_fast`` in libarc2's read functions)."""
        self._run_buffer()
        is_row = low in ALL_BITS
        highs = ALL_WORDS if is_row else ALL_BITS
        out = np.full(32, np.nan, dtype=np.float32)
        resistance = self.xbar.read_all()
        for i, high in enumerate(highs):
            if mask is not None and high not in mask:
                continue
            row, col = (low, high) if is_row else (high, low)
            r, c = self._row_of.get(row), self._col_of.get(col)
            out[i] = 0.0 if r is None or c is None else np.float32(-vread / resistance[r, c])
        self.biased.clear()
        return out

    def _run_buffer(self) -> None:
        buffer, self._buffer = self._buffer, []
        pulses = []
        for item in buffer:
            if item[0] == "ground":
                self.biased.clear()
                continue
            pulses.append(item)
            _, chan, _, nanos, mask = item
            if nanos >= SLOW_NANOS:
                self.biased |= {chan, *(int(c) for c in mask.tolist())}
        self._apply_pulses(pulses)

    def _apply_pulses(self, pulses: list[tuple]) -> None:
        if not pulses:
            return
        totals: dict[tuple[float, int], dict[int, int]] = {}
        ncols = self.xbar.shape[1]
        for _, chan, voltage, nanos, mask in pulses:
            # the device sees +V from its wordline to its bitline when the bitline is low
            seen = voltage if chan in ALL_BITS else -voltage
            group = totals.setdefault((seen, nanos), {})
            for high in mask.tolist():
                row, col = (chan, int(high)) if chan in ALL_BITS else (int(high), chan)
                r, c = self._row_of.get(row), self._col_of.get(col)
                if r is None or c is None:
                    continue  # a channel wired to nothing: the pulse reaches no device
                cell = r * ncols + c
                group[cell] = group.get(cell, 0) + 1
        for (voltage, nanos), counts in sorted(totals.items()):
            if not counts:
                continue
            cells = np.array(sorted(counts), dtype=np.int64)
            number = np.array([counts[c] for c in cells.tolist()], dtype=np.int64)
            pulses_arg: Any = int(number[0]) if np.all(number == number[0]) else number
            batch = PulseBatch.from_flat(
                cells, ncols, pulses_arg, voltage=voltage, width=nanos / 1e9
            )
            self.xbar.apply(batch)
