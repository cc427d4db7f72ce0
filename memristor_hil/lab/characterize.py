"""Characterize devices: pulse trains with reads in between, for fitting the power law.

:func:`characterize` reads the chosen cells (twice: the difference is read noise), then
applies SET pulses to all of them in batches and reads them back after each batch, following a
schedule of cumulative pulse counts (:func:`read_schedule`: every ``K`` pulses, or log-spaced,
which suits a power law best). Run it on a
:class:`~memristor_hil.lab.recording.RecordingCrossbar` and everything lands in a record that
:func:`memristor_hil.lab.fitting.fit_record` fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..crossbar import Crossbar
from ..pulses import PulseBatch
from .cell_spec import CELLS_HELP

__all__ = ["Characterization", "characterize", "parse_cells", "read_schedule"]

_RANGE = re.compile(r"^\s*(\d*)\s*(?::\s*(\d*)\s*)?$")


def parse_cells(spec: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Parse a cell selection into ``(rows, cols)``, each cell once, in row-major order.

    Parameters
    ----------
    spec : str
        ``all``; or blocks ``ROWS,COLS`` separated by ``;``, where ``ROWS`` and ``COLS`` are a
        number or a half-open range ``START:STOP`` (either end may be left out).
    shape : tuple of int
        The crossbar's ``(rows, cols)``; cells outside it are an error.

    Examples
    --------
    >>> rows, cols = parse_cells("0:2,1:3;5,0", (8, 8))
    >>> list(zip(rows.tolist(), cols.tolist()))
    [(0, 1), (0, 2), (1, 1), (1, 2), (5, 0)]
    """
    nrows, ncols = shape
    text = spec.strip().lower()
    if text == "all":
        rows, cols = np.divmod(np.arange(nrows * ncols), ncols)
        return rows, cols
    flat: list[np.ndarray] = []
    for block in filter(None, (b.strip() for b in text.split(";"))):
        parts = block.split(",")
        if len(parts) != 2:
            raise ValueError(f"cell block {block!r} must be ROWS,COLS; --cells takes {CELLS_HELP}")
        r = _span(parts[0], nrows, "row", block)
        c = _span(parts[1], ncols, "column", block)
        flat.append((r[:, None] * ncols + c[None, :]).reshape(-1))
    if not flat:
        raise ValueError(f"no cells in {spec!r}; --cells takes {CELLS_HELP}")
    cells = np.unique(np.concatenate(flat))
    return np.divmod(cells, ncols)


def _span(text: str, size: int, what: str, block: str) -> np.ndarray:
    match = _RANGE.match(text)
    if not match or (match.group(2) is None and not match.group(1)):
        raise ValueError(f"{what}s {text!r} in {block!r} must be a number or START:STOP")
    start = int(match.group(1)) if match.group(1) else 0
    if match.group(2) is None:
        stop = start + 1
    else:
        stop = int(match.group(2)) if match.group(2) else size
    if not 0 <= start < stop <= size:
        raise ValueError(
            f"{what}s {text!r} in {block!r} are outside the crossbar, which has {size} {what}s "
            f"(0..{size - 1}; ranges are half-open START:STOP)"
        )
    return np.arange(start, stop)


def read_schedule(pulses: int, read_every: int | None = None, reads: int = 60) -> np.ndarray:
    """Cumulative pulse counts after which the cells are read (the last one is ``pulses``).

    Parameters
    ----------
    pulses : int
        Pulses per cell in the whole train.
    read_every : int, optional
        Read every this many pulses. Without it, ``reads`` log-spaced reads: a power law
        changes as much between 10 and 100 pulses as between 1e4 and 1e5, so log spacing
        pins ``a`` and the initial pulse count with few reads.
    reads : int
        Number of reads for the log-spaced schedule.
    """
    pulses = int(pulses)
    if pulses < 1:
        raise ValueError(f"--pulses must be at least 1, got {pulses}")
    if read_every is not None:
        if read_every < 1:
            raise ValueError(f"--read-every must be at least 1, got {read_every}")
        return np.unique(np.r_[np.arange(read_every, pulses, read_every), pulses]).astype(int)
    if reads < 1:
        raise ValueError(f"--reads must be at least 1, got {reads}")
    return np.unique(np.geomspace(1, pulses, reads).round().astype(np.int64))


@dataclass(frozen=True)
class Characterization:
    """Readings of a pulse train.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        The cells, shape ``(cells,)``.
    pulses : numpy.ndarray
        Pulses applied before each read, shape ``(reads + 1,)``, starting at 0.
    resistance : numpy.ndarray
        Ohm, shape ``(reads + 1, cells)``.
    repeat_read : numpy.ndarray or None
        A second reading of the untouched devices, right after the first (shape ``(cells,)``):
        the two differ by read noise alone (:mod:`memristor_hil.lab.read_effects`).
    """

    rows: np.ndarray
    cols: np.ndarray
    pulses: np.ndarray
    resistance: np.ndarray
    repeat_read: np.ndarray | None = None


def characterize(
    crossbar: Crossbar,
    rows: np.ndarray,
    cols: np.ndarray,
    pulses: int,
    *,
    read_every: int | None = None,
    reads: int = 60,
    voltage: float = 0.1,
    width: float = 1e-6,
    progress: Callable[[int, int], None] | None = None,
) -> Characterization:
    """Read the cells twice, then pulse them all and read them back on a schedule.

    The second read of the untouched devices measures read noise (two reads with no pulse
    between differ by it alone), which ``memristor-hil fit`` estimates.

    Parameters
    ----------
    crossbar : Crossbar
        The crossbar (wrap it in a RecordingCrossbar to keep a record).
    rows, cols : numpy.ndarray
        The cells (see :func:`parse_cells`).
    pulses : int
        SET pulses per cell in total.
    read_every, reads : int, optional
        The read schedule (:func:`read_schedule`).
    voltage, width : float
        Pulse voltage (V) and width (s); checked against the crossbar's safety limits.
    progress : callable, optional
        ``progress(pulses_done, pulses)`` after each read.
    """
    schedule = read_schedule(pulses, read_every, reads)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    limit = crossbar.limits.max_pulses
    history = [crossbar.read(rows, cols)]
    repeat_read = crossbar.read(rows, cols)
    done = 0
    for target in schedule:
        remaining = int(target) - done
        while remaining > 0:  # one batch may hold at most limits.max_pulses per cell
            step = min(remaining, limit)
            remaining -= step
            batch = PulseBatch(rows, cols, pulses=step, voltage=voltage, width=width)
            result = crossbar.apply(batch, read_back=remaining == 0)
        history.append(result)
        done = int(target)
        if progress is not None:
            progress(done, int(schedule[-1]))
    pulses_before = np.r_[0, schedule].astype(np.int64)
    return Characterization(rows, cols, pulses_before, np.array(history), repeat_read)
