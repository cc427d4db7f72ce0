"""``memristor-hil characterize URL``: pulse trains with reads, into a record."""

from __future__ import annotations

import argparse
from pathlib import Path

from memristor_hil.lab.cell_spec import CELLS_HELP

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "characterize",
        help="pulse cells in trains, reading them as they go, into a record",
        description="Read the chosen cells, then apply SET pulses to all of them in batches, "
        "reading them back after each batch, and record everything (every batch and reading, "
        "with times, the device identity and these settings) for 'memristor-hil fit'.",
        epilog="examples:\n"
        "  memristor-hil characterize 'emulator://?rows=8&cols=8&sigma=0.15' --cells all "
        "--pulses 100000\n"
        "  memristor-hil characterize visa://TCPIP::127.0.0.1::5025::SOCKET --cells '0:4,0:8' "
        "--pulses 10000 --read-every 100 --record records/chip7.sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="crossbar URL: emulator://?..., serial://PORT, visa://RESOURCE")
    parser.add_argument("--cells", default="all", help=f"which cells: {CELLS_HELP}")
    parser.add_argument("--pulses", type=int, default=100_000, help="SET pulses per cell in total")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--read-every", type=int, metavar="K", help="read every K pulses")
    when.add_argument(
        "--reads",
        type=int,
        default=60,
        help="without --read-every: this many log-spaced reads, which pins a power "
        "law with few reads",
    )
    parser.add_argument("--voltage", type=float, default=0.1, help="pulse voltage, V")
    parser.add_argument("--width", type=float, default=1e-6, help="pulse width, s")
    parser.add_argument(
        "--record",
        type=Path,
        help="record file to create (default records/<UTC time>-<scheme>.sqlite)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from memristor_hil import open_crossbar
    from memristor_hil.lab.characterize import characterize, parse_cells, read_schedule
    from memristor_hil.lab.record_policy import default_record_path, take_record_option
    from memristor_hil.lab.recording import RecordingCrossbar

    from ._progress import ProgressBar

    schedule = read_schedule(args.pulses, args.read_every, args.reads)  # bad numbers: fail early
    url, path = take_record_option(args.url, args.record)
    if path in (None, True, False):  # characterize always records
        path = default_record_path(url.partition("://")[0] or "crossbar")
    settings = {
        "command": "characterize",
        "cells": args.cells,
        "pulses": args.pulses,
        "read_every": args.read_every,
        "reads": None if args.read_every else args.reads,
        "voltage": args.voltage,
        "width": args.width,
    }
    inner = open_crossbar(url, record=False)
    try:
        rows, cols = parse_cells(args.cells, inner.shape)  # bad cells: fail before a record
        xbar = RecordingCrossbar(inner, path, url=url, parameters=settings)
    except BaseException:
        inner.close()
        raise
    with xbar:
        print(f"{xbar.identity}: {xbar.shape[0]}x{xbar.shape[1]} crossbar")
        print(
            f"characterizing {rows.size} cells: {args.pulses} pulses each at {args.voltage:g} V, "
            f"{args.width:g} s, read {schedule.size} times; recording to {path}"
        )
        result = characterize(
            xbar,
            rows,
            cols,
            args.pulses,
            read_every=args.read_every,
            reads=args.reads,
            voltage=args.voltage,
            width=args.width,
            progress=ProgressBar("pulses per cell", unit="pulse"),
        )
    r = result.resistance
    print(f"{'pulses':>10} {'median R (ohm)':>15} {'min R':>12} {'max R':>12}")
    for i in np.unique(np.linspace(0, len(result.pulses) - 1, 6).round().astype(int)):
        print(f"{result.pulses[i]:>10} {np.median(r[i]):>15.5g} {r[i].min():>12.5g} "
              f"{r[i].max():>12.5g}")  # fmt: skip
    print(f"record: {path}")
    print(f"next:   memristor-hil fit {path}")
    return 0
