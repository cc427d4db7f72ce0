"""``memristor-hil record show|export RECORD``: look inside an experiment record."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from memristor_hil.lab.cell_spec import CELLS_HELP

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
        + ", error (time: when the call started, Unix seconds UTC, the same for every cell of an "
        "event; resistance in ohm, voltage in V, width in s; pulses, voltage and width are empty "
        "for reads; resistance is empty for a batch without read-back). NPZ holds the same "
        "columns as arrays (NaN/-1 for empty) plus 'meta' (JSON text), readable with "
        "numpy.load(..., allow_pickle=False).",
        epilog="examples:\n  memristor-hil record export run.sqlite --format csv\n"
        "  memristor-hil record export run.sqlite --format npz --out run.npz\n"
        "  memristor-hil record export run.sqlite --events 0:100 --cells '0:4,0:8'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("record", type=Path, help="the record file (.sqlite)")
    export.add_argument("--format", choices=("csv", "npz"), default="csv", help="output format")
    export.add_argument("--out", type=Path, help="output file (default RECORD with .csv/.npz)")
    export.add_argument(
        "--events",
        metavar="START:STOP",
        default=":",
        help="only these events (indices as 'record show' lists them, half-open; either end "
        "may be left out, ':' is all)",
    )
    export.add_argument(
        "--cells",
        default="all",
        help=f"only these cells: {CELLS_HELP}",
    )
    export.add_argument(
        "--writer",
        choices=("auto", "pyarrow", "python"),
        default="auto",
        help="CSV writer: pyarrow (Arrow's C++ writer, the [export] extra; half the CPU time, "
        "on two threads), python (pure Python) or auto (pyarrow when installed)",
    )
    export.set_defaults(run=run_export)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _describe(event: Any) -> str:
    import numpy as np

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
    from memristor_hil.lab.record import Record

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


def run_export(args: argparse.Namespace) -> int:
    from memristor_hil.lab import record_export
    from memristor_hil.lab.characterize import parse_cells
    from memristor_hil.lab.record import Record
    from memristor_hil.lab.record_policy import format_size

    from ._progress import progress_bar

    out = args.out or args.record.with_suffix(f".{args.format}")
    if out.resolve() == args.record.resolve():
        raise ValueError(f"--out {out} would overwrite the record itself; choose another file")
    start, stop = record_export.parse_events(args.events)
    with Record.open(args.record) as record:
        mask = None
        if args.cells != "all":
            import numpy as np

            rows, cols = parse_cells(args.cells, record.shape)
            mask = np.zeros(record.shape[0] * record.shape[1], dtype=bool)
            mask[rows * record.shape[1] + cols] = True
        selection = record_export.Selection(start, stop, mask)
        events, expected = record_export.estimate(record, selection)
        if expected == 0:
            raise ValueError(
                f"nothing to export: events {args.events} of {args.record} hold no reading of "
                f"cells {args.cells!r} (export --events 0:1 --cells all shows which cells an "
                "event touched); no file written"
            )
        per_row = (
            record_export.CSV_BYTES_PER_ROW
            if args.format == "csv"
            else record_export.NPZ_BYTES_PER_ROW
        )
        print(
            f"exporting {events} events, {expected:,} rows to {out}: expect about "
            f"{format_size(expected * per_row)}"
            + (" (before compression; built in memory)" if args.format == "npz" else "")
        )
        if args.format == "csv" and args.writer == "auto" and not record_export.has_pyarrow():
            print(f"note: writing CSV in pure Python; {record_export.PYARROW_HINT}")
        with progress_bar(expected, "exporting", unit="row", unit_scale=True) as bar:
            if args.format == "csv":
                rows_written = record_export.export_csv(
                    record, out, selection, bar.update, writer=args.writer
                )
            else:
                rows_written = record_export.export_npz(record, out, selection, bar.update)
    size = out.stat().st_size
    print(f"wrote {rows_written:,} rows ({args.format}, {format_size(size)}) to {out}")
    return 0
