"""What an export covers and how the reference writer formats it: the columns, the selection
of events and cells, and one event's CSV rows (shared by both CSV writers of ``record export``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .record import Event, Record

__all__ = ["COLUMNS", "Progress", "Selection", "csv_block", "events_of"]

COLUMNS = (
    "event", "kind", "time", "row", "col", "pulses", "voltage", "width", "resistance", "error"
)  # fmt: skip
#: ``progress(rows)``: called as rows are written.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Selection:
    """Which events (``start <= index < stop``) and cells (a mask over all cells, or None)."""

    start: int = 0
    stop: int | None = None
    cells: np.ndarray | None = None

    def rows_of(self, event: Event) -> np.ndarray | None:
        """Positions of the event's selected cells (None: all of them)."""
        return None if self.cells is None else np.flatnonzero(self.cells[event.cells])


def events_of(record: Record, selection: Selection) -> Iterator[Event]:
    """The selected events, in order."""
    return record.events(start=selection.start, stop=selection.stop)


def _quote(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()


def _constant(values: np.ndarray | None) -> str | None:
    """The value's text when every cell has the same one (None otherwise)."""
    if values is None:
        return ""
    if values.size and np.all(values == values[0]):
        v = values[0]
        return str(int(v)) if values.dtype.kind in "iu" else repr(float(v))
    return None


def csv_block(event: Event, keep: np.ndarray | None) -> str:
    """All rows of one event, formatted with one ``%`` over the event's varying values."""

    def pick(values: np.ndarray | None) -> np.ndarray | None:
        return values if values is None or keep is None else values[keep]

    apply = event.kind == "apply"
    columns: list[list] = [pick(event.rows).tolist(), pick(event.cols).tolist()]
    fields = [f"{event.index}", event.kind, repr(event.time), "%d", "%d"]
    for values in (event.pulses, event.voltage, event.width) if apply else (None, None, None):
        values = pick(values)
        text = _constant(values)
        if text is None:
            columns.append(values.tolist())
            fields.append("%d" if values.dtype.kind in "iu" else "%.17g")
        else:
            fields.append(text)
    resistance = pick(event.resistance)
    if resistance is None:
        fields.append("")
    else:
        columns.append(resistance.astype(np.float64, copy=False).tolist())
        fields.append("%.17g")  # exact for float64, twice as fast as repr
    fields.append(_quote(event.error).replace("%", "%%") if event.error else "")
    line = ",".join(fields) + "\n"
    n = len(columns[0])
    values = [v for row in zip(*columns, strict=True) for v in row]
    return (line * n) % tuple(values)
