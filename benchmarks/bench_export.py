"""CSV export of a record the size of the lab-bench walkthrough's 8 s mPES learning run.

That run (docs/lab-bench.md, step 5) records 6065 batches of ~5330 cells each with float32
read-back from a 100x200 service: 32.3 million rows, about 1.9 GB of CSV. This script builds a
record of the same shape (ascending cell batches with read-back through a RecordingCrossbar on
a float32 emulator, as mPES sends them), then times ``memristor-hil record export`` of it as a
user runs it, once per CSV writer, side by side, and prints wall and CPU seconds (the export
process's own CPU time: the machine's load stretches wall time, not CPU time), rows per
second and the bytes written.

    .venv/bin/python benchmarks/bench_export.py                     # walkthrough size
    .venv/bin/python benchmarks/bench_export.py --events 600        # a tenth, quicker
    .venv/bin/python benchmarks/bench_export.py --record big.sqlite --writers pyarrow python

``--record PATH`` keeps the record (and reuses it if it exists, skipping the build).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.lab.recording import RecordingCrossbar

URL = "emulator://?rows=100&cols=200&seed=1&sigma=0.15&dtype=float32"
CELLS = 100 * 200


def build(path: Path, events: int, cells_per_event: int, seed: int = 0) -> None:
    """Record ``events`` batches of about ``cells_per_event`` ascending cells with read-back."""
    rng = np.random.default_rng(seed)
    fraction = cells_per_event / CELLS
    start = time.perf_counter()
    with RecordingCrossbar(open_crossbar(URL), path) as xbar:
        for step in range(events):
            cells = np.flatnonzero(rng.random(CELLS) < fraction)
            xbar.apply(PulseBatch.from_flat(cells, 200), read_back=True)
            if step % 1000 == 999:
                print(f"  built {step + 1} of {events} events", file=sys.stderr)
    took = time.perf_counter() - start
    print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {took:.0f} s")


def export(path: Path, writer: str) -> tuple[float, float, int, int]:
    """``(wall s, CPU s, rows, bytes)`` of ``memristor-hil record export`` with ``writer``."""
    out = path.with_name(f"{path.stem}-{writer}.csv")
    command = [str(Path(sys.executable).with_name("memristor-hil")), "record", "export"]
    command += [str(path), "--out", str(out), "--writer", writer]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = int(done.stdout.rsplit("wrote ", 1)[1].split(" rows")[0].replace(",", ""))
    size = out.stat().st_size
    out.unlink()
    return wall, cpu, rows, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6065, help="batches in the record")
    parser.add_argument("--cells-per-event", type=int, default=5330, help="cells per batch")
    parser.add_argument("--record", type=Path, help="keep the record here (reused if present)")
    parser.add_argument(
        "--writers", nargs="+", default=["pyarrow", "python"], choices=("pyarrow", "python"),
        help="CSV writers to time, in this order",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as folder:
        path = args.record or Path(folder) / "walkthrough.sqlite"
        if not path.exists():
            build(path, args.events, args.cells_per_event)
        print(f"load average before the exports: {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")  # fmt: skip
        print(f"{'writer':<8} {'wall s':>8} {'CPU s':>8} {'rows':>12} {'rows/CPU s':>12} "
              f"{'rows/wall s':>12} {'MB':>7}")  # fmt: skip
        results = {}
        for writer in args.writers:
            wall, cpu, rows, size = export(path, writer)
            results[writer] = (wall, cpu)
            print(f"{writer:<8} {wall:>8.1f} {cpu:>8.1f} {rows:>12,} {rows / cpu:>12,.0f} "
                  f"{rows / wall:>12,.0f} {size / 1e6:>7.0f}")  # fmt: skip
        if {"pyarrow", "python"} <= results.keys():
            fast, slow = results["pyarrow"], results["python"]
            print(f"python / pyarrow: {slow[0] / fast[0]:.1f}x wall, {slow[1] / fast[1]:.1f}x CPU")


if __name__ == "__main__":
    main()
