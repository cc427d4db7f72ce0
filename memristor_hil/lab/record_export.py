"""Export a record (or a selection of its events and cells) as CSV or NPZ, with progress.

One row per cell per event: ``event, kind, time, row, col, pulses, voltage, width, resistance,
error``. CSV is written by Arrow's C++ writer when pyarrow is installed
(``.record_export_arrow``, a chunk of events at a time), else by the reference writer here:
event by event, a whole event's rows with one string format (the event's constant fields are
formatted once), so memory stays at one event. NPZ holds the same columns as arrays and is
built in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .record import Record
from .record_rows import COLUMNS, Progress, Selection, csv_block, events_of

__all__ = [
    "COLUMNS",
    "WRITERS",
    "Selection",
    "estimate",
    "export_csv",
    "export_npz",
    "has_pyarrow",
    "parse_events",
]

#: Measured average CSV bytes per row (a 100x100 mPES record's rows are 55-65 bytes).
CSV_BYTES_PER_ROW = 62
#: NPZ bytes per row before compression: event, time, row, col, pulses, voltage, width,
#: resistance and two flags.
NPZ_BYTES_PER_ROW = 8 * 8 + 2


def parse_events(text: str | None) -> tuple[int, int | None]:
    """``"START:STOP"`` (half-open, either end may be left out) or ``"N"`` -> ``(start, stop)``."""
    if text is None or text.strip() in ("", ":", "all"):
        return 0, None
    try:
        if ":" not in text:
            index = int(text)
            return index, index + 1
        start, stop = text.split(":")
        return int(start or 0), (int(stop) if stop.strip() else None)
    except ValueError:
        raise ValueError(
            f"--events takes START:STOP (event indices, half-open, either end optional) or one "
            f"index, not {text!r}"
        ) from None


def estimate(record: Record, selection: Selection) -> tuple[int, int]:
    """``(events, rows)`` the selection covers, both exact.

    With a cell selection, each event's cells are decoded and counted (cheap: the readings are
    not decoded), since the events of a learning run touch some cells far more often than
    others and the fraction of cells selected can be off several times.
    """
    query = "SELECT COUNT(*), COALESCE(SUM(ncells), 0) FROM events WHERE id > ?"
    args: list[int] = [selection.start]
    if selection.stop is not None:
        query += " AND id <= ?"
        args.append(selection.stop)
    events, rows = record._db.execute(query, args).fetchone()
    if selection.cells is not None:
        mask = selection.cells
        rows = sum(
            int(np.count_nonzero(mask[flat]))
            for flat in record.cells(selection.start, selection.stop)
        )
    return int(events), int(rows)


#: CSV writers: Arrow's C++ writer (the ``[export]`` extra) and the pure-Python reference.
WRITERS = ("auto", "pyarrow", "python")
#: What to tell a user whose export falls back to the Python writer.
PYARROW_HINT = (
    "pip install 'memristor-hil[export]' (pyarrow) for a CSV export in half the CPU time, "
    "on two threads"
)


def has_pyarrow() -> bool:
    """Whether the fast CSV writer's library (pyarrow) can be imported."""
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def export_csv(
    record: Record,
    out: str | os.PathLike[str],
    selection: Selection,
    progress: Progress,
    writer: str = "auto",
) -> int:
    """Write the selection as CSV; ``progress(rows)`` as rows are written. Returns rows written.

    Parameters
    ----------
    writer : {"auto", "pyarrow", "python"}
        ``"pyarrow"``: Arrow's C++ CSV writer (``.record_export_arrow``), which needs the
        ``[export]`` extra; ``"python"``: the reference writer below; ``"auto"``: pyarrow when
        it is installed. Both write the same rows and values (number text may differ: Arrow
        writes the shortest text that reads back as the same float64).
    """
    if writer not in WRITERS:
        raise ValueError(f"writer={writer!r} must be one of {', '.join(WRITERS)}")
    if writer == "auto":
        writer = "pyarrow" if has_pyarrow() else "python"
    if writer == "pyarrow":
        if not has_pyarrow():
            raise ValueError(f"the pyarrow CSV writer needs pyarrow: {PYARROW_HINT}")
        from . import record_export_arrow

        return record_export_arrow.write_csv(record, out, selection, progress)
    total = 0
    with open(out, "w", newline="") as f:
        f.write(",".join(COLUMNS) + "\n")
        for event in events_of(record, selection):
            keep = selection.rows_of(event)
            n = event.cells.size if keep is None else keep.size
            if n:
                f.write(csv_block(event, keep))
            total += n
            progress(n)
    return total


def export_npz(
    record: Record, out: str | os.PathLike[str], selection: Selection, progress: Progress
) -> int:
    """Write the selection as NPZ (columns as arrays, NaN/-1 for empty, ``meta`` as JSON text,
    readable with ``numpy.load(..., allow_pickle=False)``). Returns rows written."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS if k not in ("kind", "error")}
    parts["is_apply"], parts["failed"] = [], []
    total = 0
    for event in events_of(record, selection):
        keep = selection.rows_of(event)
        n = event.cells.size if keep is None else keep.size

        def pick(values: np.ndarray, keep: np.ndarray | None = keep) -> np.ndarray:
            return values if keep is None else values[keep]

        apply = event.kind == "apply"
        empty = np.full(n, np.nan)
        parts["event"].append(np.full(n, event.index))
        parts["time"].append(np.full(n, event.time))
        parts["row"].append(pick(event.rows))
        parts["col"].append(pick(event.cols))
        parts["pulses"].append(pick(event.pulses) if apply else np.full(n, -1))
        parts["voltage"].append(pick(event.voltage) if apply else empty)
        parts["width"].append(pick(event.width) if apply else empty)
        res = event.resistance
        parts["resistance"].append(empty if res is None else pick(res).astype(np.float64))
        parts["is_apply"].append(np.full(n, apply))
        parts["failed"].append(np.full(n, event.error is not None))
        total += n
        progress(n)
    arrays = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    meta = {
        "identity": record.identity,
        "shape": list(record.shape),
        "url": record.url,
        "parameters": record.parameters,
        "created": record.created,
        "events": [selection.start, selection.stop],
    }
    with open(Path(out), "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    return total
