"""ArC2Crossbar: Arc Instruments' ArC TWO through its Python library ``pyarc2``, as a Crossbar.

ArC TWO has 64 channels; a daughterboard wires them to the array's bitlines and wordlines.
Crossbar row ``r`` is the board's bitline ``r`` (channels 0..15 and 32..47, the low side of a
pulse or read) and column ``c`` its wordline ``c`` (channels 16..31 and 48..63), as arc2control
numbers them (``arc2control/mapper.py``: ``wb2ch[w][b] = (high, low)``; its crossbar data is
indexed ``[bitline][wordline]``). Which channel each line is on comes from the board's mapping:
the built-in ``standard32`` is arc2control's ``mappings/standard32.toml``, and any mapping file
in that format (or a JSON file) loads as given. Operations queue in the instrument's command
buffer and run on ``execute()``; this driver turns one batch into one buffered program:

1. for each row touched and each pulse round ``k`` (cells that need at least ``k`` pulses),
   one ``pulse_slice_masked(row channel, voltage, nanos, column channels)`` followed by
   ``ground_all()``, as arc2control grounds after every pulse operation (``widgets/app.py``
   ``pulseSelectedSlices``); a pulse of 500 ms or more would otherwise leave +-V/2 on its lines;
2. ``execute()``, then wait until the instrument is idle (``busy()`` polled against the
   timeout, then ``wait()``);
3. with read-back, ``read_slice_masked(row channel, column channels, vread)`` per touched row,
   or one ``read_all(vread, BiasOrder.Cols)`` when many rows were touched (axis 0 of its
   result is the bitline channel, as arc2control reads it); resistance is
   ``|vread / current|`` on every path.

Widths are whole nanoseconds from 40 ns (libarc2 runs 1-40 ns as 40 ns; shorter widths are
refused by the limits, never stretched). At connect the driver grounds the lines and sets the
daughterboard's I/O logic from the mapping, as arc2control does. A program holds at most
``max_instructions`` pulse instructions (2048 by default, the chunk ``pyarc2`` flushes); a
larger batch is split into several programs, still one ``apply``. On close and on error the
driver queues ``ground_all()`` and executes it.

``pyarc2`` is imported only by :func:`open_arc2` (``pip install memristor-hil[arc2]``);
:class:`ArC2Crossbar` itself takes any object with the methods it calls, which is how the
tests drive it with :class:`memristor_hil.emulator.arc2.EmulatedArC2`.
"""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memristor_hil.crossbar import Crossbar
from memristor_hil.errors import (
    AddressError,
    ConnectionLostError,
    CrossbarError,
    CrossbarTimeoutError,
    DeviceError,
    ProtocolError,
)
from memristor_hil.pulses import Cells, PulseBatch, SafetyLimits
from memristor_hil.url_options import Option, keyword_only, query_options, read_options_and_limits

from .arc1 import INSTRUMENT_RANGES

__all__ = [
    "ARC2_LIMITS",
    "ArC2Crossbar",
    "ChannelLayout",
    "LAYOUTS",
    "load_layout",
    "open_arc2",
    "plan_pulses",
]

#: ArC TWO's row channels (bitlines, the low side of a pulse) and column channels (wordlines).
ROW_CHANNELS = tuple(range(0, 16)) + tuple(range(32, 48))
COL_CHANNELS = tuple(range(16, 32)) + tuple(range(48, 64))
#: The shortest pulse: libarc2 runs widths of 1 to 40 ns as 40 ns (``src/instrument.rs``).
MIN_WIDTH = 40e-9
#: What the instrument can do, as far as public material says (unverified on hardware: check
#: the manual of your unit): +-10 V per channel, pulses from 40 ns to 1 s.
ARC2_LIMITS = SafetyLimits(v_min=-10.0, v_max=10.0, width_min=MIN_WIDTH, width_max=1.0)
#: The default limits: the project's conservative defaults, from the instrument's 40 ns.
DEFAULT_LIMITS = SafetyLimits(width_min=MIN_WIDTH)
#: Pulse instructions per buffered program (pyarc2 flushes its buffer in chunks of 2048).
MAX_INSTRUCTIONS = 2048
#: Read-back through ``read_all`` (one call) when more rows than this were touched.
READ_ALL_ROWS = 8
#: I/O cluster directions a mapping file may name.
_DIRECTIONS = ("in", "out")


@dataclass(frozen=True)
class ChannelLayout:
    """Which ArC TWO channel each crossbar row (bitline) and column (wordline) is wired to.

    Parameters
    ----------
    rows, cols : tuple of (int or None)
        ``rows[r]`` is the channel of crossbar row (bitline) ``r``; ``cols[c]`` that of column
        (wordline) ``c``; None: not wired.
    name : str
        What the layout is called (a built-in name or a file).
    cells : tuple of (int, int), optional
        The (row, column) cells the board connects (arc2control's ``mask``); None: all.
    logic : (int, tuple of str), optional
        The daughterboard's I/O logic, ``(ios, directions)``, set at connect with
        ``set_logic`` (arc2control's first ``ioconfs`` entry); None: leave it.
    """

    rows: tuple[int | None, ...]
    cols: tuple[int | None, ...]
    name: str = ""
    cells: tuple[tuple[int, int], ...] | None = None
    logic: tuple[int, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.rows or not self.cols:
            raise ValueError("a channel layout needs at least one row and one column")
        for what, chans, allowed in (
            ("row", self.rows, ROW_CHANNELS),
            ("column", self.cols, COL_CHANNELS),
        ):
            wired = [c for c in chans if c is not None]
            if len(set(wired)) != len(wired):
                raise ValueError(f"layout {self.name!r}: a {what} channel is used twice")
            bad = [c for c in wired if c not in allowed]
            if bad:
                raise ValueError(
                    f"layout {self.name!r}: channels {bad} cannot be {what}s (ArC TWO {what} "
                    f"channels are {allowed[0]}..{allowed[15]} and {allowed[16]}..{allowed[-1]})"
                )
        for r, c in self.cells or ():
            if not (0 <= r < len(self.rows) and 0 <= c < len(self.cols)):
                raise ValueError(f"layout {self.name!r}: masked cell ({r}, {c}) is outside it")
        if self.logic is not None:
            ios, dirs = self.logic
            if not 0 <= ios <= 0xFFFF or len(dirs) != 4 or set(dirs) - set(_DIRECTIONS):
                raise ValueError(
                    f"layout {self.name!r}: I/O logic needs 0 <= ios <= 65535 and four "
                    f"directions of {_DIRECTIONS}, got {self.logic}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def channel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column channels as int64 arrays, -1 where not wired."""
        rows = np.array([-1 if c is None else c for c in self.rows], dtype=np.int64)
        cols = np.array([-1 if c is None else c for c in self.cols], dtype=np.int64)
        return rows, cols

    def wired(self) -> np.ndarray:
        """Boolean matrix of the cells wired to a channel pair (and inside the mask)."""
        rows, cols = self.channel_arrays()
        out = (rows[:, None] >= 0) & (cols[None, :] >= 0)
        if self.cells is not None:
            mask = np.zeros(self.shape, dtype=bool)
            mask[tuple(np.array(self.cells, dtype=np.int64).reshape(-1, 2).T)] = True
            out &= mask
        return out


def _interleave(first: range, second: range) -> tuple[int, ...]:
    return tuple(c for pair in zip(first, second, strict=True) for c in pair)


#: arc2control's ``mappings/standard32.toml`` (the [32NNA68] PLCC 32x32 board): bitlines
#: 15, 32, 14, 33, ..., 0, 47 and wordlines 16, 63, 17, 62, ..., 31, 48; socket I/O logic
#: ``ios = 0b0``, four clusters out.
STANDARD32 = ChannelLayout(
    _interleave(range(15, -1, -1), range(32, 48)),
    _interleave(range(16, 32), range(63, 47, -1)),
    "standard32",
    logic=(0, ("out",) * 4),
)
#: Built-in layouts: ``standard32`` (the default; ``std32`` is its older name) and
#: ``channels32``, rows and columns in channel order (a board wired that way).
LAYOUTS = {
    "standard32": STANDARD32,
    "std32": STANDARD32,
    "channels32": ChannelLayout(ROW_CHANNELS, COL_CHANNELS, "channels32"),
}


def load_layout(spec: str | ChannelLayout) -> ChannelLayout:
    """A built-in layout by name, an arc2control mapping file (``.toml``, loaded as given), or
    a JSON file ``{"rows": [ch, ...], "cols": [ch, ...]}`` (``null`` for a line not wired)."""
    if isinstance(spec, ChannelLayout):
        return spec
    if spec in LAYOUTS:
        return LAYOUTS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"layout {spec!r} is neither a built-in ({', '.join(LAYOUTS)}) nor a file")
    if path.suffix.lower() == ".toml":
        return _load_mapping(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or set(data) - {"rows", "cols", "name"}:
        raise ValueError(f"{path}: a layout file holds {{'rows': [...], 'cols': [...]}}")
    try:
        rows = tuple(None if c is None else int(c) for c in data["rows"])
        cols = tuple(None if c is None else int(c) for c in data["cols"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad layout: {exc}") from None
    return ChannelLayout(rows, cols, str(data.get("name", path.name)))


def _load_mapping(path: Path) -> ChannelLayout:
    """An arc2control mapping file: ``[config]`` words, bits, optional mask of ``[w, b]``
    pairs; ``[mapping]`` words and bits channel lists; optional ``[ioconfs.*]`` ios and dir
    (the first is the one applied at connect). Format read in arc2control
    ``arc2control/mapper.py`` ``ChannelMapper.from_toml``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        words, bits = int(raw["config"]["words"]), int(raw["config"]["bits"])
        cols = tuple(int(c) for c in raw["mapping"]["words"][:words])
        rows = tuple(int(c) for c in raw["mapping"]["bits"][:bits])
        mask = raw["config"].get("mask")
        cells = None if mask is None else tuple((int(b), int(w)) for w, b in mask)
        logic = None
        for conf in (raw.get("ioconfs") or {}).values():
            dirs = tuple(str(d).strip().lower() for d in conf.get("dir", ["out"] * 4))
            logic = (int(conf["ios"]), dirs)
            break
        name = str(raw["config"].get("name", path.stem))
    except (KeyError, TypeError, ValueError, AttributeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: bad arc2control mapping: {exc!r}") from None
    if len(rows) != bits or len(cols) != words:
        raise ValueError(
            f"{path}: the mapping lists fewer channels than words={words}, bits={bits}"
        )
    return ChannelLayout(rows, cols, name, cells=cells, logic=logic)


@dataclass(frozen=True)
class PulseInstruction:
    """One ``pulse_slice_masked(chan, voltage, nanos, mask)``."""

    chan: int
    voltage: float
    nanos: int
    mask: np.ndarray


def plan_pulses(
    batch: PulseBatch, cells: Cells, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> list[PulseInstruction]:
    """The pulse instructions of a batch, rows in row-major order, round by round.

    ``rows``/``cols`` are the layout's channel arrays. Entries naming the same cell at the same
    voltage and width add up (the instrument only sees pulses).
    """
    pulses = batch.pulses
    keep = pulses > 0
    if not keep.any():
        return []
    flat = cells.flat[keep]
    counts = pulses[keep].astype(np.int64)
    voltage = np.broadcast_to(batch.voltage, (len(batch),))[keep]
    width = np.broadcast_to(batch.width, (len(batch),))[keep]
    nanos = np.maximum(np.rint(width * 1e9).astype(np.int64), 1)
    out: list[PulseInstruction] = []
    if np.ndim(batch.voltage) == 0 and np.ndim(batch.width) == 0:
        groups = {(float(voltage[0]), int(nanos[0]))}
    else:
        pairs = np.unique(np.stack([voltage, nanos.astype(np.float64)]), axis=1)
        groups = {(float(v), int(n)) for v, n in pairs.T.tolist()}
    for v, n in sorted(groups):
        sel = (voltage == v) & (nanos == n) if len(groups) > 1 else slice(None)
        if cells.ascending and len(groups) == 1:  # distinct cells, row-major (mPES)
            uniq, total = flat, counts
        else:
            uniq, inverse = np.unique(flat[sel], return_inverse=True)
            total = np.bincount(inverse, weights=counts[sel], minlength=len(uniq))
            total = total.astype(np.int64)
        row_of, col_of = np.divmod(uniq, shape[1])
        starts = np.flatnonzero(np.r_[True, row_of[1:] != row_of[:-1]])
        ends = np.r_[starts[1:], len(uniq)]
        most = np.maximum.reduceat(total, starts).tolist()
        least = np.minimum.reduceat(total, starts).tolist()
        chans = rows[row_of[starts]].tolist()
        col_chans = cols[col_of].astype(np.uint64)
        bounds = zip(starts.tolist(), ends.tolist(), chans, most, least, strict=True)
        for s, e, chan, hi, lo in bounds:
            mask = col_chans[s:e]
            for k in range(1, hi + 1):
                out.append(PulseInstruction(chan, v, n, mask if k <= lo else mask[total[s:e] >= k]))
    return out


class ArC2Crossbar(Crossbar):
    """Arc Instruments' ArC TWO as a crossbar, through a ``pyarc2.Instrument``.

    Parameters
    ----------
    instrument : pyarc2.Instrument or a stand-in with the same methods
        The connected instrument.
    layout : ChannelLayout or str
        Channel of each crossbar row (bitline) and column (wordline): a built-in name
        (default ``standard32``, arc2control's), an arc2control mapping file, a JSON file, or
        a layout.
    vread : float
        Read voltage in volt (either sign; reads are ``|vread / I|``). Default 0.2 V.
    timeout : float
        Seconds to wait for a program to finish. Default 5.
    limits : SafetyLimits, optional
        Safety limits, inside :data:`.ARC2_LIMITS` (pulses from 40 ns).
    max_instructions : int
        Pulse instructions per buffered program; larger batches are split. Default 2048.
    name : str
        How to name the instrument in messages.
    """

    def __init__(
        self,
        instrument: Any,
        layout: ChannelLayout | str = "standard32",
        *,
        vread: float = 0.2,
        timeout: float = 5.0,
        limits: SafetyLimits | None = None,
        max_instructions: int = MAX_INSTRUCTIONS,
        name: str = "ArC TWO",
    ) -> None:
        layout = load_layout(layout)
        if not 0 < abs(vread) <= 1.0:
            raise ValueError(f"vread={vread} V must be non-zero and at most 1 V in magnitude")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not 1 <= int(max_instructions) <= 1 << 20:
            raise ValueError(f"max_instructions={max_instructions} must be in 1..{1 << 20}")
        limits = limits or DEFAULT_LIMITS
        limits.check_within(ARC2_LIMITS, "the ArC TWO", INSTRUMENT_RANGES)
        self.instrument = instrument
        self.layout = layout
        self.vread = float(vread)
        self.timeout = float(timeout)
        self.max_instructions = int(max_instructions)
        self._name = name
        self._row_ch, self._col_ch = layout.channel_arrays()
        self._wired = layout.wired()
        self.stats = {"programs": 0, "instructions": 0, "reads": 0}
        super().__init__(
            layout.shape,
            limits=limits,
            identity=f"Arc Instruments,ArC TWO,{name},layout {layout.name}",
        )
        # outputs grounded on close, or at interpreter exit if never closed
        self._finalizer = weakref.finalize(self, _ground, instrument)
        self._set_up()

    def _set_up(self) -> None:
        """What arc2control does at connect (``widgets/arc2connection_widget.py``
        ``connectArC2``): lines to soft ground (``finalise_operation``), then the I/O logic of
        the mapping (``set_logic(ios, *directions)``), run at once."""
        self._call("finalise_operation", _vendor("IdleMode", "SoftGnd"))
        if self.layout.logic is not None:
            ios, dirs = self.layout.logic
            self._call("set_logic", ios, *(_vendor("IODir", d.upper()) for d in dirs))
            self._call("execute")

    # ------------------------------------------------------------------ instrument calls
    def _call(self, method: str, *args: Any) -> Any:
        """Call an instrument method; its failures become this package's exceptions."""
        try:
            return getattr(self.instrument, method)(*args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except TimeoutError as exc:
            raise CrossbarTimeoutError(f"{self._name}: {method} timed out: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionLostError(f"{self._name}: {method} failed: {exc}") from None
        except BaseException as exc:  # pyarc2's ArC2Error, or a pyo3 panic from libarc2
            raise DeviceError(f"{self._name}: {method} failed: {exc!r}") from None

    def _run(self) -> None:
        """``execute()`` the buffer and wait, at most ``timeout``, until the instrument idles."""
        self._call("execute")
        deadline = time.monotonic() + self.timeout
        while self._call("busy"):
            if time.monotonic() > deadline:
                raise CrossbarTimeoutError(
                    f"{self._name}: the program did not finish within {self.timeout} s"
                )
            time.sleep(1e-4)
        self._call("wait")
        self.stats["programs"] += 1

    # ------------------------------------------------------------------ Crossbar hooks
    def _check_wired(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.divmod(flat, self.shape[1])
        unwired = ~self._wired[rows, cols]
        if unwired.any():
            i = int(np.argmax(unwired))
            raise AddressError(
                f"cell ({int(rows[i])}, {int(cols[i])}) is not wired to an ArC TWO channel "
                f"in layout {self.layout.name!r}"
            )
        return rows, cols

    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        self._check_wired(cells.flat)
        program = plan_pulses(batch, cells, self.shape, self._row_ch, self._col_ch)
        try:
            for start in range(0, len(program), self.max_instructions):
                for ins in program[start : start + self.max_instructions]:
                    self._call("pulse_slice_masked", ins.chan, ins.voltage, ins.nanos, ins.mask)
                    self._call("ground_all")  # arc2control grounds after every pulse
                self.stats["instructions"] += min(self.max_instructions, len(program) - start)
                self._run()
            return self._read(cells.flat) if read_back else None
        except CrossbarError:
            self._ground_quietly()
            raise

    def _read(self, flat: np.ndarray) -> np.ndarray:
        rows, cols = self._check_wired(flat)
        if len(flat) == 0:
            return np.empty(0)
        touched = np.unique(rows)
        if len(touched) > READ_ALL_ROWS:
            block = self._read_block()
            return block[rows, cols]
        out = np.empty(len(flat))
        order = np.argsort(COL_CHANNELS)  # read_slice_masked answers in channel order
        position = np.empty(64, dtype=np.int64)
        position[np.asarray(COL_CHANNELS)[order]] = np.arange(len(COL_CHANNELS))
        for row in touched.tolist():
            here = rows == row
            mask = np.unique(self._col_ch[cols[here]]).astype(np.uint64)
            currents = self._call("read_slice_masked", int(self._row_ch[row]), mask, self.vread)
            self.stats["reads"] += 1
            currents = np.asarray(currents)
            if currents.shape != (len(COL_CHANNELS),):
                raise ProtocolError(
                    f"{self._name}: read_slice_masked answered shape {currents.shape}, "
                    f"expected ({len(COL_CHANNELS)},)"
                )
            out[here] = self._resistance(currents[position[self._col_ch[cols[here]]]])
        return out

    def _read_block(self) -> np.ndarray:
        """Every wired cell's resistance through one ``read_all`` (NaN where not wired).

        ``BiasOrder.Cols`` biases the bitline channels, so axis 0 is the bitline (row) channel
        in ascending order and axis 1 the wordline channel (libarc2 ``read_all``, pyarc2
        ``read_all`` reshaping row-major; arc2control ``readAllClicked`` reads it so)."""
        order = _vendor("BiasOrder", "Cols")
        currents = np.asarray(self._call("read_all", self.vread, order))
        self.stats["reads"] += 1
        if currents.shape != (32, 32):
            raise ProtocolError(
                f"{self._name}: read_all answered shape {currents.shape}, expected (32, 32)"
            )
        row_index = np.searchsorted(np.array(ROW_CHANNELS), self._row_ch)
        col_index = np.searchsorted(np.array(COL_CHANNELS), self._col_ch)
        block = currents[np.ix_(row_index % 32, col_index % 32)]
        wired = self._wired
        out = np.full(self.shape, np.nan)
        out[wired] = self._resistance(block[wired])
        return out

    def _read_all(self) -> np.ndarray:
        return self._read_block()

    def _resistance(self, currents: np.ndarray) -> np.ndarray:
        currents = np.abs(currents.astype(np.float64))
        if not (np.all(np.isfinite(currents)) and np.all(currents > 0)):
            raise ProtocolError(
                f"{self._name}: garbled reply: a read current of a wired cell is zero, NaN or "
                "infinite"
            )
        return abs(self.vread) / currents

    def _ground_quietly(self) -> None:
        try:
            self._call("ground_all")
            self._call("execute")
        except CrossbarError:
            pass

    def _close(self) -> None:
        self._finalizer()


def _ground(instrument: Any) -> None:
    """``ground_all()`` and ``execute()``; never raises (used at close and at exit)."""
    try:
        instrument.ground_all()
        instrument.execute()
    except Exception:  # noqa: BLE001 - an instrument that is gone has nothing to ground
        pass


def _vendor(kind: str, member: str) -> Any:
    """``pyarc2.<kind>.<member>`` (e.g. ``BiasOrder.Cols``); the member's name alone when
    pyarc2 is not installed (a stand-in takes either)."""
    try:
        import pyarc2
    except ImportError:
        return member
    return getattr(getattr(pyarc2, kind), member)


_ARC2_OPTIONS = {
    "firmware": Option(str),
    "layout": Option(str),
    "vread": Option(float),
    "timeout": Option(float),
    "max_instructions": Option(int),
    "limits": Option(keyword_only),
    "instrument": Option(keyword_only),
}


def open_arc2(url: str, **overrides: Any) -> ArC2Crossbar:
    """Open ``arc2://[ID][?firmware=PATH&layout=NAME|FILE&vread=V&...]``.

    ``ID`` is the instrument's id from ``pyarc2.find_ids()`` (default: the first found).
    Options: ``firmware`` (the firmware file shipped with the board; required), ``layout``
    (default ``standard32``), ``vread``, ``timeout``, ``max_instructions``; safety limits
    ``v_min``, ``v_max``, ``width_min``, ``width_max``, ``max_pulses``. The keyword
    ``instrument=`` passes an already connected instrument (or a stand-in) instead.
    """
    rest = url.split("://", 1)[1]
    ident, _, query = rest.partition("?")
    _, options = query_options("x://?" + query)
    options = {**options, **overrides}
    kwargs = read_options_and_limits("arc2", options, _ARC2_OPTIONS, DEFAULT_LIMITS)
    instrument, firmware = kwargs.pop("instrument", None), kwargs.pop("firmware", None)
    try:
        device = int(ident) if ident else None
    except ValueError:
        raise ValueError(f"{url!r}: the instrument id {ident!r} is not an integer") from None
    if instrument is None:
        instrument, device = _connect(device, firmware)
    name = f"ArC TWO #{device}" if device is not None else "ArC TWO"
    try:
        return ArC2Crossbar(instrument, name=name, **kwargs)
    except BaseException:
        try:
            instrument.ground_all().execute()
        except Exception:  # noqa: BLE001 - already failing; the first error is the one to see
            pass
        raise


def _connect(device: int | None, firmware: str | None) -> tuple[Any, int]:
    try:
        import pyarc2
    except ImportError:
        raise ImportError("arc2:// needs pyarc2: pip install 'memristor-hil[arc2]'") from None
    if not firmware:
        raise ValueError("arc2:// needs firmware=PATH (the firmware file shipped with ArC TWO)")
    ids = pyarc2.find_ids()
    if device is None:
        if not ids:
            raise ConnectionLostError("no ArC TWO found (pyarc2.find_ids() is empty)")
        device = ids[0]
    elif device not in ids:
        raise ConnectionLostError(f"no ArC TWO with id {device}; found {ids}")
    try:
        return pyarc2.Instrument(device, firmware), device
    except Exception as exc:  # noqa: BLE001 - pyarc2's ArC2Error and friends
        raise ConnectionLostError(f"cannot connect to ArC TWO #{device}: {exc}") from None
