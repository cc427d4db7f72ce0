"""The experiment record: every batch applied and every read, in a file that survives kill -9.

A record is one SQLite database in WAL mode. Each :meth:`Record.log_apply` or
:meth:`Record.log_read` is one committed transaction, so once it returns the event is in the
file: a process killed with SIGKILL afterwards loses nothing that was logged, and a kill in the
middle of a commit loses only that one event (SQLite rolls the half-written transaction back
when the file is next opened). Arrays are stored as a type byte plus their little-endian bytes
(zlib-compressed where that pays), read back with ``numpy.frombuffer`` for a fixed list of
numeric types: nothing in a record is ever unpickled or evaluated. Why SQLite and what
survives what: ``docs/recording.md``.

Writing: :meth:`Record.create` (usually through
:class:`~memristor_hil.lab.recording.RecordingCrossbar`). Reading: :meth:`Record.open`, then
:meth:`Record.events`, :meth:`Record.batches`, :meth:`Record.reads` and :meth:`Record.readings`
(every resistance reading with the pulses each cell had received when it was taken).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..pulses import SafetyLimits
from .record_codec import (
    ReadingCodec,
    RecordError,
    as_integers,
    narrow,
    pack,
    pack_cells,
    pack_float,
    unpack,
    unpack_cells,
)

__all__ = ["Event", "Readings", "Record", "RecordError", "pack", "unpack"]

#: Format 2 delta-codes readings (record_codec.py); format 1 files are still read.
FORMAT = 2
_READABLE = (1, 2)
_SYNCHRONOUS = ("NORMAL", "FULL")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('apply', 'read')),
    time REAL NOT NULL,
    duration REAL NOT NULL,
    ncells INTEGER NOT NULL,
    cells_encoding TEXT NOT NULL CHECK (cells_encoding IN ('diff', 'bitmap')),
    cells BLOB NOT NULL,
    pulses BLOB,
    voltage BLOB,
    width BLOB,
    resistance BLOB,
    error TEXT
);
"""


@dataclass(frozen=True)
class Event:
    """One logged event: a batch applied or a read.

    Attributes
    ----------
    index : int
        Position in the record, from 0.
    kind : {"apply", "read"}
    time : float
        When the call started (Unix time, seconds).
    duration : float
        How long the call took, in seconds.
    cells : numpy.ndarray
        Row-major cell indices, in call order (int64).
    rows, cols : numpy.ndarray
        The same cells as row and column numbers.
    pulses : numpy.ndarray or None
        Pulses per cell (``apply`` only).
    voltage, width : numpy.ndarray or None
        Volt and seconds per cell (``apply`` only).
    resistance : numpy.ndarray or None
        Ohm per cell: the read-back of an ``apply`` (None without read-back) or the read,
        exactly as the crossbar returned it (float32 or float64).
    error : str or None
        The error the call raised; the batch may then have been applied in part.
    """

    index: int
    kind: str
    time: float
    duration: float
    cells: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    pulses: np.ndarray | None
    voltage: np.ndarray | None
    width: np.ndarray | None
    resistance: np.ndarray | None
    error: str | None


@dataclass(frozen=True)
class Readings:
    """Every resistance reading of a record, flattened, in record order.

    ``pulses[i]`` is how many pulses cell ``cells[i]`` had received since the record began
    when ``resistance[i]`` was read (batches that raised are not counted). Select one cell's
    history with ``readings.cells == c``, or use :meth:`by_cell`.
    """

    cells: np.ndarray
    pulses: np.ndarray
    resistance: np.ndarray
    time: np.ndarray
    event: np.ndarray

    def by_cell(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{cell: (pulses, resistance)}``, each cell's readings in order."""
        order = np.argsort(self.cells, kind="stable")
        cells = self.cells[order]
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if cells.size else []
        ends = np.r_[starts[1:], cells.size] if cells.size else []
        return {
            int(cells[s]): (self.pulses[order[s:e]], self.resistance[order[s:e]])
            for s, e in zip(starts, ends, strict=True)
        }


def _pack_value(value: float | np.ndarray) -> bytes:
    if type(value) is float:  # the usual case, a batch's one voltage or width
        return pack_float(value)
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    return pack(array, compress=array.size > 1)


def _expand(blob: bytes | None, size: int, dtype: type) -> np.ndarray | None:
    if blob is None:
        return None
    array = unpack(blob).astype(dtype, copy=False)
    return np.full(size, array[0], dtype=dtype) if array.size == 1 else array


class Record:
    """An experiment record on disk; create one to write, open one to read.

    Use :meth:`create` or :meth:`open`, not the constructor. A record is a context manager.

    Attributes
    ----------
    path : pathlib.Path
        The record file.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, writable: bool) -> None:
        self.path = path
        self._db = connection
        self._writable = writable
        self._meta = self._load_meta()
        self._codec = ReadingCodec(self.shape[0] * self.shape[1])
        self._checkpointer: _Checkpointer | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        identity: str,
        shape: tuple[int, int],
        limits: SafetyLimits | None = None,
        parameters: dict[str, Any] | None = None,
        url: str | None = None,
        synchronous: str = "NORMAL",
    ) -> Record:
        """Create a new record file (never overwrites one) and return it open for writing.

        Parameters
        ----------
        path : path-like
            The file to create; its folder is created if needed.
        identity : str
            The device's identity string.
        shape : tuple of int
            The crossbar's ``(rows, cols)``.
        limits : SafetyLimits, optional
            The crossbar's safety limits.
        parameters : dict, optional
            The run's parameters (JSON-serialisable), kept with the record.
        url : str, optional
            The URL the crossbar was opened with.
        synchronous : {"NORMAL", "FULL"}
            SQLite's ``synchronous`` setting. ``NORMAL`` (default) keeps every logged event
            through a crash or kill of the process; ``FULL`` also through a power cut or
            operating-system crash, at the cost of one fsync per event. See
            ``docs/recording.md``.

        Raises
        ------
        FileExistsError
            If ``path`` exists: records are never overwritten.
        """
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} must be one of {_SYNCHRONOUS}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Exclusive creation: a second writer or an old record is never overwritten.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoints (copying the WAL into the database, with an fsync) run in a
            # background thread instead of inside whichever commit crosses the threshold.
            db.execute("PRAGMA wal_autocheckpoint=0")
            rows, cols = (int(x) for x in shape)
            meta = {
                "format": FORMAT,
                "created": time.time(),
                "identity": identity,
                "shape": [rows, cols],
                "limits": asdict(limits or SafetyLimits()),
                "parameters": parameters or {},
                "url": url,
                "synchronous": synchronous,
            }
            db.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        record = cls(path, db, writable=True)
        record._checkpointer = _Checkpointer(path)
        return record

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Record:
        """Open an existing record for reading (also one left behind by a killed process).

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        RecordError
            If the file is not a memristor-hil record.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no record at {path}")
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA query_only=ON")
            return cls(path, db, writable=False)
        except (sqlite3.DatabaseError, RecordError) as exc:
            db.close()
            raise RecordError(f"{path} is not a memristor-hil record ({exc})") from None

    def _load_meta(self) -> dict[str, Any]:
        try:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as exc:
            raise RecordError(str(exc)) from None
        meta = {key: json.loads(value) for key, value in rows}
        if meta.get("format") not in _READABLE:
            raise RecordError(f"unknown record format {meta.get('format')!r}")
        return meta

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._db.close()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Record {str(self.path)!r} {self.identity!r} {len(self)} events>"

    # ------------------------------------------------------------------ description
    @property
    def identity(self) -> str:
        """The device's identity string."""
        return self._meta["identity"]

    @property
    def shape(self) -> tuple[int, int]:
        """The crossbar's ``(rows, cols)``."""
        rows, cols = self._meta["shape"]
        return int(rows), int(cols)

    @property
    def limits(self) -> SafetyLimits:
        """The crossbar's safety limits."""
        return SafetyLimits(**self._meta["limits"])

    @property
    def parameters(self) -> dict[str, Any]:
        """The run's parameters (a copy)."""
        return json.loads(json.dumps(self._meta["parameters"]))

    @property
    def created(self) -> float:
        """When the record was created (Unix time)."""
        return float(self._meta["created"])

    @property
    def url(self) -> str | None:
        """The URL the crossbar was opened with, if known."""
        return self._meta.get("url")

    @property
    def synchronous(self) -> str:
        """SQLite's ``synchronous`` setting the record was written with."""
        return self._meta["synchronous"]

    def update_parameters(self, **parameters: Any) -> None:
        """Add or change run parameters (committed at once)."""
        self._check_writable()
        merged = {**self._meta["parameters"], **parameters}
        text = json.dumps(merged)
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'parameters'", (text,))
        self._meta["parameters"] = json.loads(text)

    # ------------------------------------------------------------------ writing
    def _check_writable(self) -> None:
        if not self._writable:
            raise RecordError(f"{self.path} was opened for reading; use Record.create to write")

    def log_apply(
        self,
        cells: np.ndarray,
        pulses: np.ndarray,
        voltage: float | np.ndarray,
        width: float | np.ndarray,
        resistance: np.ndarray | None,
        *,
        started: float,
        duration: float,
        error: str | None = None,
        ascending: bool | None = None,
    ) -> int:
        """Commit one applied batch; returns its event index.

        ``pulses``, ``voltage`` and ``width`` may be single values shared by every cell.
        ``ascending`` says the cells strictly ascend (computed when not given).
        """
        self._check_writable()
        flat = as_integers(cells)
        encoding, cell_blob = pack_cells(flat, ascending)
        return self._insert(
            "INSERT INTO events (kind, time, duration, ncells, cells_encoding, cells, pulses, "
            "voltage, width, resistance, error) VALUES ('apply', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                started,
                duration,
                flat.size,
                encoding,
                cell_blob,
                pack(narrow(as_integers(pulses))),
                _pack_value(voltage),
                _pack_value(width),
            ),
            flat,
            resistance,
            error,
        )

    def _insert(
        self,
        sql: str,
        values: tuple,
        flat: np.ndarray,
        resistance: np.ndarray | None,
        error: str | None,
    ) -> int:
        """Commit one event; the reading codec moves on only once the event is in the file."""
        blob = None if resistance is None else self._codec.encode(flat, resistance)
        try:
            cur = self._db.execute(sql, (*values, blob, error))
        except BaseException:
            self._codec.discard()
            raise
        self._codec.commit()
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return int(cur.lastrowid) - 1

    def log_read(
        self,
        cells: np.ndarray,
        resistance: np.ndarray | None,
        *,
        started: float,
        duration: float,
        error: str | None = None,
    ) -> int:
        """Commit one read; returns its event index."""
        self._check_writable()
        flat = as_integers(cells)
        encoding, cell_blob = pack_cells(flat)
        return self._insert(
            "INSERT INTO events (kind, time, duration, ncells, cells_encoding, cells, resistance, "
            "error) VALUES ('read', ?, ?, ?, ?, ?, ?, ?)",
            (started, duration, flat.size, encoding, cell_blob),
            flat,
            resistance,
            error,
        )

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Number of events by kind, and of those that raised."""
        out = {"apply": 0, "read": 0, "errors": 0}
        for kind, n, errors in self._db.execute(
            "SELECT kind, COUNT(*), COUNT(error) FROM events GROUP BY kind"
        ):
            out[kind] = int(n)
            out["errors"] += int(errors)
        return out

    def time_span(self) -> tuple[float, float] | None:
        """``(first start, last end)`` of the events, or None for an empty record."""
        first, last = self._db.execute(
            "SELECT MIN(time), MAX(time + duration) FROM events"
        ).fetchone()
        return None if first is None else (float(first), float(last))

    def events(
        self, kind: str | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[Event]:
        """Iterate over the events in order.

        Parameters
        ----------
        kind : {"apply", "read"}, optional
            Only events of this kind.
        start, stop : int, optional
            Only events with ``start <= index < stop``. Readings are delta-coded against each
            cell's earlier readings, so the readings of the events before ``start`` are
            decoded too (nothing else of them is).
        """
        if kind is not None and kind not in ("apply", "read"):
            raise ValueError(f"kind={kind!r} must be 'apply' or 'read'")
        codec = ReadingCodec(self.shape[0] * self.shape[1])
        if start > 0 and self._meta.get("format") != 1:
            for encoding, cells, res in self._db.execute(
                "SELECT cells_encoding, cells, resistance FROM events WHERE id <= ? AND "
                "resistance IS NOT NULL ORDER BY id",
                (int(start),),
            ):
                codec.decode(unpack_cells(encoding, cells), res)
        query = (
            "SELECT id, kind, time, duration, ncells, cells_encoding, cells, pulses, voltage, "
            "width, resistance, error FROM events WHERE id > ?"
        )
        args: list[str | int] = [int(start)]
        if stop is not None:
            query += " AND id <= ?"
            args.append(int(stop))
        ncols = self.shape[1]
        for row in self._db.execute(query + " ORDER BY id", args):
            index, kind_, started, duration, ncells, encoding, cells = row[:7]
            pulses, voltage, width, res, err = row[7:]
            if kind is not None and kind_ != kind:
                if res is not None:  # keep the reading codec in step
                    codec.decode(unpack_cells(encoding, cells), res)
                continue
            flat = unpack_cells(encoding, cells)
            rows, cols = np.divmod(flat, ncols)
            yield Event(
                index=int(index) - 1,
                kind=kind_,
                time=float(started),
                duration=float(duration),
                cells=flat,
                rows=rows,
                cols=cols,
                pulses=_expand(pulses, ncells, np.int64),
                voltage=_expand(voltage, ncells, np.float64),
                width=_expand(width, ncells, np.float64),
                resistance=None if res is None else codec.decode(flat, res),
                error=err,
            )

    def cells(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """The flat cell indices (``row * cols + col``) of each event with ``start <= index <
        stop``, in order; cheap: nothing else of the events is decoded."""
        query = "SELECT cells_encoding, cells FROM events WHERE id > ?"
        args: list[int] = [int(start)]
        if stop is not None:
            query += " AND id <= ?"
            args.append(int(stop))
        for encoding, cells in self._db.execute(query + " ORDER BY id", args):
            yield unpack_cells(encoding, cells)

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def batches(self) -> Iterator[Event]:
        """Iterate over the applied batches."""
        return self.events("apply")

    def reads(self) -> Iterator[Event]:
        """Iterate over the reads."""
        return self.events("read")

    def readings(self) -> Readings:
        """Every resistance reading with the pulse count its cell had reached (numpy arrays)."""
        totals = np.zeros(self.shape[0] * self.shape[1], dtype=np.int64)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cells", "pulses", "r", "t", "e")}
        for event in self.events():
            if event.kind == "apply" and event.error is None:
                np.add.at(totals, event.cells, event.pulses)
            if event.resistance is None:
                continue
            parts["cells"].append(event.cells)
            parts["pulses"].append(totals[event.cells])
            parts["r"].append(event.resistance)
            parts["t"].append(np.full(event.cells.size, event.time + event.duration))
            parts["e"].append(np.full(event.cells.size, event.index, dtype=np.int64))

        def cat(key: str, dtype: type) -> np.ndarray:
            return np.concatenate(parts[key]) if parts[key] else np.empty(0, dtype)

        return Readings(
            cells=cat("cells", np.int64),
            pulses=cat("pulses", np.int64),
            resistance=cat("r", np.float64).astype(np.float64, copy=False),
            time=cat("t", np.float64),
            event=cat("e", np.int64),
        )

    def history(self, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        """One cell's readings: ``(pulses received so far, resistance)`` arrays."""
        rows, cols = self.shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"cell ({row}, {col}) is outside the {rows}x{cols} crossbar")
        readings = self.readings()
        mask = readings.cells == row * cols + col
        return readings.pulses[mask], readings.resistance[mask]


class _Checkpointer:
    """Copies a record's WAL into its database file from a background thread.

    The writer turns SQLite's automatic checkpoint off, so no commit stalls for the copy and
    its fsync; this thread runs a PASSIVE checkpoint (which never blocks the writer) every
    ``every`` commits, or at least once a second while commits arrive. A checkpoint only moves
    data that is already committed, so what survives a kill is unchanged.
    """

    def __init__(self, path: Path, every: int = 256) -> None:
        self._path = path
        self._every = every
        self._count = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="record-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """Count one commit; wake the thread every ``every`` commits."""
        self._count += 1
        if self._count % self._every == 0:
            self._wake.set()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            seen = 0
            while not self._stopping:
                self._wake.wait(1.0)
                self._wake.clear()
                if self._count != seen:
                    seen = self._count
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error:
                        pass  # busy or closing: the next round (or the writer's close) does it
        finally:
            db.close()

    def stop(self) -> None:
        """Stop the thread (the writer's close then checkpoints what is left)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
