"""The fast CSV writer of ``record export``: Arrow's C++ CSV writer (pyarrow, the ``[export]``
extra) formats the numbers, while Python only gathers each event's columns.

Rows, columns and values are those of the reference writer
(:func:`memristor_hil.lab.record_export.export_csv` with ``writer="python"``, whose rows
:func:`memristor_hil.lab.record_rows.csv_block` formats); number text may
differ (Arrow writes the shortest text that reads back as the same float64, the reference up
to 17 significant digits), never the value it reads back as. What is constant over an event
(its index, kind and time, and usually pulses, voltage and width) is formatted once per event
in Python, as the reference does, and written by Arrow as dictionary text; resistance, row and
column are formatted by Arrow. Events that carry an error are written by the reference
writer's code, because Arrow's unquoted output refuses commas and quotes in a value.

Events are gathered into chunks of about :data:`CHUNK_ROWS` rows; Arrow formats chunks on
:data:`THREADS` threads (with the GIL released) while Python gathers the next.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .record import Event, Record
from .record_rows import COLUMNS, Progress, Selection, csv_block, events_of

__all__ = ["CHUNK_ROWS", "write_csv"]

#: Rows per chunk handed to Arrow: large enough that per-chunk costs vanish, small enough for
#: a smooth progress bar and little memory (about 40 MB per chunk).
CHUNK_ROWS = 1 << 18
#: Chunks formatted at once (Arrow formats one chunk on one thread).
THREADS = min(2, os.cpu_count() or 1)
_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16)
_KINDS = pa.array(["apply", "read"])


class _Texts:
    """A dictionary column: each distinct text once (as the reference writer writes a constant;
    "" is entry 0, the empty field of a read or a batch without read-back) and, per event, one
    code (the event's value is constant) or an array of codes (one per row)."""

    def __init__(self) -> None:
        self.texts: list[str] = [""]
        self._index: dict[str, int] = {}
        self.codes: list[int | np.ndarray] = []
        self._varying = False

    def index(self, text: str) -> int:
        found = self._index.get(text)
        if found is None:
            found = self._index[text] = len(self.texts)
            self.texts.append(text)
        return found

    def add_text(self, text: str) -> None:
        """The same text on every row of the event."""
        self.codes.append(self.index(text))

    def add(self, values: np.ndarray | None) -> None:
        """The event's values (None: the empty text on every row)."""
        if values is None:
            self.codes.append(0)
            return
        text = _int_text if values.dtype.kind in "iu" else _float_text
        if np.all(values == values[0]):
            self.codes.append(self.index(text(values[0])))
            return
        uniques, inverse = np.unique(values, return_inverse=True)
        codes = np.array([self.index(text(u)) for u in uniques], dtype=np.int32)
        self.codes.append(codes[inverse.reshape(-1)])
        self._varying = True

    def array(self, counts: np.ndarray) -> pa.DictionaryArray:
        """The column for events of ``counts`` rows each."""
        if self._varying:
            parts = [
                np.full(n, code, np.int32) if isinstance(code, int) else code
                for code, n in zip(self.codes, counts, strict=True)
            ]
            indices = np.concatenate(parts)
        else:
            indices = np.repeat(np.array(self.codes, dtype=np.int32), counts)
        return pa.DictionaryArray.from_arrays(pa.array(indices), self.texts)


def _int_text(value: Any) -> str:
    return str(int(value))


def _float_text(value: Any) -> str:
    return repr(float(value))


class _Chunk:
    """The columns of a run of events, as Arrow arrays once :meth:`table` is called."""

    def __init__(self, ncols: int) -> None:
        self.ncols = ncols
        self.rows = 0
        self.counts: list[int] = []
        self.event: list[int] = []
        self.kind: list[int] = []
        self.time, self.pulses, self.voltage, self.width = _Texts(), _Texts(), _Texts(), _Texts()
        self.cells: list[np.ndarray] = []
        self.resistance: list[np.ndarray] = []
        self.unmeasured: list[int] = []  # positions in ``counts`` of events without readings

    def add(self, event: Event, keep: np.ndarray | None) -> int:
        """Gather the event's rows (those of ``keep``, or all). Returns how many."""

        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return values if values is None or keep is None else values[keep]

        n = event.cells.size if keep is None else keep.size
        if not n:
            return 0
        apply = event.kind == "apply"
        self.event.append(event.index)
        self.kind.append(0 if apply else 1)
        self.time.add_text(repr(event.time))
        self.pulses.add(pick(event.pulses) if apply else None)
        self.voltage.add(pick(event.voltage) if apply else None)
        self.width.add(pick(event.width) if apply else None)
        self.cells.append(pick(event.cells))
        resistance = pick(event.resistance)
        if resistance is None:
            self.unmeasured.append(len(self.counts))
            resistance = np.zeros(n)
        self.resistance.append(resistance)
        self.counts.append(n)
        self.rows += n
        return n

    def table(self) -> pa.Table:
        counts = np.array(self.counts, dtype=np.int64)
        rows, cols = np.divmod(np.concatenate(self.cells), self.ncols)
        mask = None
        if self.unmeasured:
            measured = np.ones(len(counts), dtype=bool)
            measured[self.unmeasured] = False
            mask = ~np.repeat(measured, counts)
        kinds = np.repeat(np.array(self.kind, dtype=np.int8), counts)
        columns = [
            pa.array(np.repeat(np.array(self.event, dtype=np.int64), counts)),
            pa.DictionaryArray.from_arrays(pa.array(kinds), _KINDS),
            self.time.array(counts),
            pa.array(rows),
            pa.array(cols),
            self.pulses.array(counts),
            self.voltage.array(counts),
            self.width.array(counts),
            pa.array(np.concatenate(self.resistance).astype(np.float64, copy=False), mask=mask),
            pa.nulls(self.rows, pa.string()),
        ]
        return pa.Table.from_arrays(columns, names=list(COLUMNS))


def _format(table: pa.Table) -> pa.Buffer:
    """The table's CSV text (Arrow releases the GIL while it formats)."""
    stream = pa.BufferOutputStream()
    pacsv.write_csv(table, stream, _OPTIONS)
    return stream.getvalue()


def write_csv(
    record: Record, out: str | os.PathLike[str], selection: Selection, progress: Progress
) -> int:
    """Write the selection as CSV, as the reference writer does; ``progress(rows)`` after each
    chunk is written. Returns rows written.

    Up to :data:`THREADS` chunks are formatted at once, each into its own buffer, while Python
    gathers the next; buffers are written in order, so at most ``THREADS + 1`` chunks are held.
    """
    total = 0
    pending: deque[tuple[Future | str, int]] = deque()
    with pa.OSFile(os.fspath(out), "wb") as sink, ThreadPoolExecutor(THREADS) as pool:
        sink.write((",".join(COLUMNS) + "\n").encode())

        def drain(keep: int) -> None:
            """Write finished text, oldest first, until at most ``keep`` chunks are pending."""
            while len(pending) > keep:
                text, rows = pending.popleft()
                sink.write(text.encode() if isinstance(text, str) else text.result())
                progress(rows)

        def hand_over(chunk: _Chunk) -> _Chunk:
            if chunk.rows:
                pending.append((pool.submit(_format, chunk.table()), chunk.rows))
                drain(THREADS)
            return _Chunk(record.shape[1])

        chunk = _Chunk(record.shape[1])
        for event in events_of(record, selection):
            keep = selection.rows_of(event)
            if event.error is not None:  # quoted text: the reference writer's code
                chunk = hand_over(chunk)
                n = event.cells.size if keep is None else keep.size
                pending.append((csv_block(event, keep) if n else "", n))
                total += n
                continue
            total += chunk.add(event, keep)
            if chunk.rows >= CHUNK_ROWS:
                chunk = hand_over(chunk)
        hand_over(chunk)
        drain(0)
    return total
