"""``memristor-hil record show|export RECORD``: look inside an experiment record."""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from memristor_hil.lab.record import Event, Record

ORDER = 60
_COLUMNS = ("event", "kind", "time", "row", "col", "pulses", "voltage", "width", "resistance")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "record",
        help="show or export an experiment record",
        description="Look inside an experiment record (a run of characterize, or any run "
        "through open_crossbar(url, record=...)): 'show' summarises it, 'export' writes every "
        "event as CSV or NPZ.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="summarise a record: device, parameters, counts, first and last events",
        description="Print the device identity, URL, settings, number of batches and reads, "
        "time span and the first and last events of a record.",
    )
    show.add_argument("record", type=Path, help="the record file (.sqlite)")
    show.add_argument("--events", type=int, default=5, help="events to list at each end")
    show.set_defaults(run=run_show)
    export = actions.add_parser(
        "export",
        help="write every event of a record as CSV or NPZ",
        description="Write one row per cell per event: "
        + ", ".join(_COLUMNS)
        + ", error (pulses, voltage and width are empty for reads; resistance is empty for a "
        "batch without read-back). NPZ holds the same columns as arrays (NaN/-1 for empty) "
        "plus 'meta' (JSON text), readable with numpy.load(..., allow_pickle=False).",
        epilog="examples:\n  memristor-hil record export run.sqlite --format csv\n"
        "  memristor-hil record export run.sqlite --format npz --out run.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("record", type=Path, help="the record file (.sqlite)")
    export.add_argument("--format", choices=("csv", "npz"), default="csv", help="output format")
    export.add_argument("--out", type=Path, help="output file (default RECORD with .csv/.npz)")
    export.set_defaults(run=run_export)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _describe(event: Event) -> str:
    text = f"#{event.index:<6} {event.kind:<5} {_when(event.time)} {event.cells.size:>6} cells"
    if event.kind == "apply":
        volts = np.unique(event.voltage)
        v = f"{volts[0]:g} V" if volts.size == 1 else f"{volts.min():g}..{volts.max():g} V"
        low, high = (
            (int(event.pulses.min()), int(event.pulses.max())) if event.cells.size else (0, 0)
        )
        per_cell = f"{low}" if low == high else f"{low}..{high}"
        text += f" {per_cell:>7} pulses/cell at {v}"
    if event.resistance is not None and event.resistance.size:
        text += f"  median R {np.median(event.resistance):.5g} ohm"
    if event.error:
        text += f"  ERROR {event.error}"
    return text


def run_show(args: argparse.Namespace) -> int:
    with Record.open(args.record) as record:
        counts = record.counts()
        span = record.time_span()
        print(f"record:     {args.record} ({os.path.getsize(args.record) / 1e6:.2f} MB)")
        print(f"device:     {record.identity}")
        print(f"url:        {record.url}")
        print(f"shape:      {record.shape[0]} x {record.shape[1]}")
        print(f"created:    {_when(record.created)}")
        print(f"durability: synchronous={record.synchronous}")
        print(f"parameters: {json.dumps(record.parameters)}")
        print(f"events:     {counts['apply']} batches, {counts['read']} reads, "
              f"{counts['errors']} with errors")  # fmt: skip
        if span:
            print(f"time:       {_when(span[0])} .. {_when(span[1])} "
                  f"({span[1] - span[0]:.3f} s)")  # fmt: skip
        total = len(record)
        head = max(args.events, 0)
        tail_start = max(total - head, head)
        for event in record.events(stop=head):
            print("  " + _describe(event))
        if tail_start > head:
            print(f"  ... {tail_start - head} more ...")
        for event in record.events(start=tail_start):
            print("  " + _describe(event))
    return 0


def _columns(event: Event) -> dict[str, np.ndarray]:
    size = event.cells.size
    empty = np.full(size, np.nan)
    apply = event.kind == "apply"
    return {
        "event": np.full(size, event.index),
        "time": np.full(size, event.time),
        "row": event.rows,
        "col": event.cols,
        "pulses": event.pulses if apply else np.full(size, -1),
        "voltage": event.voltage if apply else empty,
        "width": event.width if apply else empty,
        "resistance": empty if event.resistance is None else event.resistance,
    }


def run_export(args: argparse.Namespace) -> int:
    out = args.out or args.record.with_suffix(f".{args.format}")
    if out.resolve() == args.record.resolve():
        raise ValueError(f"--out {out} would overwrite the record itself; choose another file")
    rows = 0
    with Record.open(args.record) as record:
        if args.format == "csv":
            with open(out, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([*_COLUMNS, "error"])
                for event in record.events():
                    c = _columns(event)
                    for i in range(event.cells.size):
                        writer.writerow([
                            event.index, event.kind, repr(event.time), int(c["row"][i]),
                            int(c["col"][i]),
                            "" if event.kind == "read" else int(c["pulses"][i]),
                            "" if event.kind == "read" else repr(float(c["voltage"][i])),
                            "" if event.kind == "read" else repr(float(c["width"][i])),
                            "" if event.resistance is None else repr(float(c["resistance"][i])),
                            event.error or "",
                        ])  # fmt: skip
                    rows += event.cells.size
        else:
            parts: dict[str, list[np.ndarray]] = {k: [] for k in _COLUMNS if k != "kind"}
            kinds, errors = [], []
            for event in record.events():
                for key, value in _columns(event).items():
                    parts[key].append(value)
                kinds.append(np.full(event.cells.size, event.kind == "apply"))
                errors.append(np.full(event.cells.size, event.error is not None))
                rows += event.cells.size
            arrays = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
            arrays["is_apply"] = np.concatenate(kinds) if kinds else np.empty(0, bool)
            arrays["failed"] = np.concatenate(errors) if errors else np.empty(0, bool)
            meta = {
                "identity": record.identity,
                "shape": list(record.shape),
                "url": record.url,
                "parameters": record.parameters,
                "created": record.created,
            }
            with open(out, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {rows} rows ({args.format}) to {out}")
    return 0
