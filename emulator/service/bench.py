"""The emulated bench's physics: an emulated crossbar wired to a switching matrix and an SMU.

:class:`Bench` holds what the two emulated instruments share: the device array (an
:class:`~memristor_hil.emulator.EmulatedCrossbar`), the wiring map, the matrix's closed
crosspoints and the SMU's output state. The SMU reaches the devices that the closed crosspoints
connect between its force row and its ground row; several devices in parallel when several
crosspoints are closed, none (an open circuit) when either side is open.

Each pulse of a trigger-model sweep is its own step: it draws the current of the state it
meets (a characterisation measures the devices' response inside a train), then moves the
devices by one pulse, exactly as the in-process emulator applies a batch of single pulses in
the same order. A 0 V step draws no current and changes nothing; a negative (RESET) pulse on
a device model without a RESET branch leaves the devices as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from memristor_hil.emulator.crossbar import EmulatedCrossbar
from memristor_hil.emulator.url import open_emulator

from memristor_hil.protocol.tsp import CARD_COLUMNS, CARD_ROWS, MAX_SLOTS, Wiring
from memristor_hil.pulses import PulseBatch, SafetyLimits

__all__ = ["OPEN_CIRCUIT", "Bench", "BenchError", "parse_channels"]

#: What the emulated SMU reads as the resistance of an open circuit (the 2600B's overflow
#: reading, 9.91e37; unverified against a manual).
OPEN_CIRCUIT = 9.91e37

_ANY_PULSE = SafetyLimits(
    v_min=-1e3, v_max=1e3, width_min=1e-12, width_max=1e3, max_pulses=2**31 - 1, compliance=1e3
)
_CHANNEL = re.compile(r"^([1-6])([A-H])(\d\d)$")


class BenchError(Exception):
    """An instrument refused a request (bad channel, forbidden crosspoint, ...)."""


def parse_channels(text: str, slots: frozenset[int]) -> set[tuple[int, str, int]] | None:
    """The crosspoints a 707B channel list names; None for ``"allslots"``.

    Accepts channels ``1A05`` separated by commas or semicolons, ranges ``1A01:1A05`` (the
    block of rows and columns between the two corners, lowest first: ``1A01:1H12`` is a whole
    card), ``"slotN"`` and ``"allslots"`` (707B reference manual, "Channel list parameter for
    remote commands").
    """
    if not isinstance(text, str):
        raise BenchError(f"a channel list is a string, got {type(text).__name__}")
    if len(text) > 65_536:
        raise BenchError("channel list too long")
    found: set[tuple[int, str, int]] = set()
    for item in (part.strip() for part in re.split(r"[,;]", text)):
        low = item.lower()
        if low == "allslots":
            return None
        if low.startswith("slot") and low[4:].isdigit():
            slot = int(low[4:])
            if slot not in slots:
                raise BenchError(f"slot {slot} has no card")
            found |= {(slot, r, c) for r in CARD_ROWS for c in range(1, CARD_COLUMNS + 1)}
            continue
        first, colon, last = item.partition(":")
        start = _channel(first.strip(), slots)
        end = _channel(last.strip(), slots) if colon else start
        if end[0] != start[0] or end[1] < start[1] or end[2] < start[2]:
            raise BenchError(f"range {item!r}: one slot, the lowest channel first")
        rows = CARD_ROWS[CARD_ROWS.index(start[1]) : CARD_ROWS.index(end[1]) + 1]
        found |= {(start[0], r, c) for r in rows for c in range(start[2], end[2] + 1)}
    return found


def _channel(item: str, slots: frozenset[int]) -> tuple[int, str, int]:
    match = _CHANNEL.match(item.upper())
    if match is None:
        raise BenchError(f"{item!r} is not a channel (expected e.g. 1A05)")
    slot, row, column = int(match.group(1)), match.group(2), int(match.group(3))
    if slot not in slots or not 1 <= column <= CARD_COLUMNS:
        raise BenchError(f"channel {item} does not exist")
    return slot, row, column


class Bench:
    """The devices, the wiring, the matrix's crosspoints and the SMU's output.

    Parameters
    ----------
    xbar : EmulatedCrossbar
        The devices.
    wiring : Wiring, optional
        How they are wired to the matrix; default :meth:`Wiring.default` for the shape.
    slots : iterable of int, optional
        Slots holding a card (default: every slot the wiring uses).
    forbidden : iterable of str, optional
        Channels the matrix refuses to close (as ``channel.setforbidden`` would).
    log : callable, optional
        Gets a line for each event a person watching the service would want to see.
    relay_time : float
        Seconds one switching action takes (the 707B waits out its relays before a command
        returns; its manual's example uses 4 ms per relay). An exclusive close that also
        opens crosspoints takes two (break before make, the 707B's default rule).
    """

    def __init__(
        self,
        xbar: EmulatedCrossbar,
        wiring: Wiring | None = None,
        *,
        slots: list[int] | None = None,
        forbidden: list[str] | None = None,
        log: Callable[[str], None] | None = None,
        relay_time: float = 4e-3,
    ) -> None:
        self.xbar = xbar
        self.relay_time = float(relay_time)
        self.wiring = wiring or Wiring.default(*xbar.shape)
        if self.wiring.shape != xbar.shape:
            raise ValueError(f"the wiring is {self.wiring.shape}, the devices {xbar.shape}")
        used = {s for s, _ in (*self.wiring.rows, *self.wiring.cols)}
        self.slots = frozenset(slots if slots is not None else used)
        if not self.slots <= set(range(1, MAX_SLOTS + 1)):
            raise ValueError("slots are 1..6")
        self.forbidden = parse_channels(",".join(forbidden), self.slots) if forbidden else set()
        self.closed: set[tuple[int, str, int]] = set()
        self._path_cache: tuple[np.ndarray, np.ndarray] | None = None
        self.output_on = False
        self.clock = 0.0  #: seconds the real instruments would have spent (virtual time)
        self.counts = {"pulses": 0, "trains": 0, "reads": 0, "closes": 0}
        self._log = log or (lambda text: None)

    @classmethod
    def from_url(cls, url: str, wiring: Wiring | None = None, **options) -> Bench:
        """The devices an ``emulator://`` URL names, taking any pulse the SMU sources (the
        host enforces the limits; the devices do not refuse them)."""
        named = open_emulator(url)
        xbar = EmulatedCrossbar(*named.shape, named.model, seed=named.seed, limits=_ANY_PULSE)
        return cls(xbar, wiring, **options)

    def warm_up(self) -> None:
        """Compile the device model's kernels on a scratch crossbar, so the first pulse train
        does not spend seconds (and a script's time budget) compiling."""
        scratch = EmulatedCrossbar(2, 2, self.xbar.model, seed=0, limits=_ANY_PULSE)
        for voltage in (self.xbar.model.v_ref, self.xbar.model.v_ref * 1.5):
            scratch.apply(PulseBatch([0], [1], 2, voltage=voltage), read_back=True)
        scratch.read([0, 1], [1, 0])

    # ------------------------------------------------------------------ matrix
    def close(self, channels: str, exclusive: bool) -> None:
        """Close crosspoints (``exclusive``: open every other one first)."""
        wanted = parse_channels(channels, self.slots)
        if wanted is None:
            raise BenchError("cannot close allslots")
        refused = wanted & self.forbidden
        if refused:
            names = ",".join(sorted(f"{s}{r}{c:02d}" for s, r, c in refused))
            raise BenchError(f"channel {names} is forbidden to close")
        opens = bool(self.closed - wanted) if exclusive else False
        closes = bool(wanted - self.closed)
        self.clock += self.relay_time * (opens + closes)
        self.closed = set(wanted) if exclusive else self.closed | wanted
        self._path_cache = None
        self.counts["closes"] += 1

    def open(self, channels: str) -> None:
        """Open crosspoints (``"allslots"``: all)."""
        which = parse_channels(channels, self.slots)
        opened = self.closed if which is None else self.closed & which
        if opened:
            self.clock += self.relay_time
            if which is None:
                self._log("matrix: all crosspoints open")
        self.closed = self.closed - opened
        self._path_cache = None

    def closed_names(self) -> list[str]:
        """The closed channels, sorted, as the matrix names them."""
        return sorted(f"{s}{r}{c:02d}" for s, r, c in self.closed)

    # ------------------------------------------------------------------ SMU
    def set_output(self, on: bool) -> None:
        if bool(on) != self.output_on:
            self._log(f"smu: output {'on' if on else 'off'}")
        self.output_on = bool(on)

    def _path(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the devices between the force and ground rows (all pairs)."""
        if self._path_cache is None:
            self._path_cache = self._find_path()
        return self._path_cache

    def _find_path(self) -> tuple[np.ndarray, np.ndarray]:
        wiring = self.wiring
        rows, cols = [], []
        for slot, row, column in self.closed:
            line = wiring.line_of(slot, column)
            if line is None:
                continue
            kind, index = line
            if kind == "row" and row == wiring.force_row:
                rows.append(index)
            elif kind == "col" and row == wiring.ground_row:
                cols.append(index)
        r = np.repeat(np.array(sorted(rows), dtype=np.int64), len(cols))
        c = np.tile(np.array(sorted(cols), dtype=np.int64), len(rows))
        return r, c

    def resistance(self) -> float:
        """What the SMU sees: the devices on the path in parallel (open circuit: huge)."""
        if not self.output_on:
            return OPEN_CIRCUIT
        rows, cols = self._path()
        if rows.size == 0:
            return OPEN_CIRCUIT
        r = self.xbar.read(rows, cols)
        return float(r[0]) if r.size == 1 else float(1.0 / np.sum(1.0 / r))

    def pulse_train(
        self, level: float, width: float, count: int, limit_i: float
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Source ``count`` pulses of ``level`` V, ``width`` s, current limit ``limit_i`` A.

        Returns the current each pulse drew and the resistance it met (from the state that
        pulse met), and whether the current limit was reached. A pulse in compliance leaves
        the devices untouched (the source clamps: its voltage collapses to ``limit_i * R``),
        and so do the rest of the train.
        """
        self.clock += count * width
        currents = np.zeros(max(int(count), 0))
        r = self.resistance()
        seen = np.full(currents.size, r)
        if not self.output_on or r >= OPEN_CIRCUIT or count <= 0 or level == 0:
            return currents, seen, False
        rows, cols = self._path()
        moves = level > 0 or self.xbar.model.reset  # no RESET branch: a RESET pulse does nothing
        batch = PulseBatch(rows, cols, 1, voltage=float(level), width=float(width))
        self.counts["trains"] += 1
        for k in range(currents.size):
            current = level / r
            if abs(current) > limit_i:
                self._log(f"smu: compliance at {level} V ({abs(current):.3g} A > {limit_i:.3g} A)")
                currents[k:] = np.copysign(limit_i, level)
                seen[k:] = r
                return currents, seen, True
            currents[k], seen[k] = current, r
            if moves:
                after = self.xbar.apply(batch, read_back=True)
                self.counts["pulses"] += rows.size
                r = float(after[0]) if after.size == 1 else float(1.0 / np.sum(1.0 / after))
        return currents, seen, False

    def source(self, level_v: float, limit_i: float) -> tuple[float, float, bool, float]:
        """A DC voltage source at ``level_v`` with current limit ``limit_i``: the voltage and
        current it reaches, whether it is in compliance (the current clamps at the limit, the
        voltage falls to ``limit_i * R``) and the load R. DC does not move the devices."""
        r = self.resistance()
        if not self.output_on:
            return 0.0, 0.0, False, r
        current = level_v / r
        if abs(current) > limit_i:
            current = float(np.copysign(limit_i, level_v))
            return current * r, current, True, r
        return level_v, current, False, r

    def source_current(self, level_i: float, limit_v: float) -> tuple[float, float, bool, float]:
        """A DC current source: as :meth:`source` with the roles of voltage and current
        swapped (the voltage clamps at ``limit_v``)."""
        r = self.resistance()
        if not self.output_on:
            return 0.0, 0.0, False, r
        voltage = level_i * r
        if abs(voltage) > limit_v:
            voltage = float(np.copysign(limit_v, level_i))
            return voltage, voltage / r, True, r
        return voltage, level_i, False, r

    def measure_r(self, seconds: float) -> float:
        """One resistance reading, taking ``seconds`` of instrument time."""
        self.clock += seconds
        self.counts["reads"] += 1
        return self.resistance()

    def delay(self, seconds: float) -> None:
        """Instrument time passes (not waited out: the emulation runs as fast as it can)."""
        self.clock += seconds
