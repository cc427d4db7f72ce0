"""Recording overhead: the same run on a plain crossbar and on a RecordingCrossbar.

Workload ``standin`` (default): the shape of a 100x100 mPES step without Nengo: every step
applies one batch of ~5000 cells (ascending, as mPES sends them) with read-back to a 100x200
emulator (each weight is a pair of devices). Workload ``mpes``: a 100x100 mPES network, when
``memristor_hil.mPES`` is installed. Variants run interleaved, several rounds, and the median
per-step time of each is printed with its ratio to the plain run, all from this one run
(minimum over rounds: the machine's load only adds time; the median beside it). The record's
bytes per step are printed beside the format-1 size (float64 read-back plus a plain cell
bitmap, what records held before readings were delta-coded), and ``--export`` times
``memristor-hil record export`` (CSV) of the last recorded run.

    python benchmarks/bench_record.py                       # short (a few seconds)
    python benchmarks/bench_record.py --steps 2000 --rounds 5
    python benchmarks/bench_record.py --workload mpes --sim-time 1.0 --export
    python benchmarks/bench_record.py --workload mpes --clock wall   # wall time instead of CPU
    python benchmarks/bench_record.py --workload mpes --breakdown    # where the extra time goes

``--breakdown`` adds two variants between plain and recorded: the RecordingCrossbar with a
record that stores nothing (the wrapper's own work), and one that encodes every event as a
record does but skips the SQLite commit; the differences of their times say what each layer
costs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.lab.record import Record
from memristor_hil.lab.record_codec import (
    ReadingCodec,
    as_integers,
    narrow,
    pack,
    pack_cells,
    pack_float,
)
from memristor_hil.lab.recording import RecordingCrossbar

URL = "emulator://?rows=100&cols=200&seed=1&sigma=0.15"
#: mPES's default device model is float32; the recorded readings are then float32 too.
MPES_URL = URL + "&dtype=float32"


def standin_batches(steps: int, seed: int = 0) -> list[PulseBatch]:
    """~5000 distinct cells per step, in ascending row-major order, one pulse each."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        cells = np.flatnonzero(rng.random(20_000) < 0.25)
        batches.append(PulseBatch.from_flat(cells, 200))
    return batches


def run_standin(xbar, batches: list[PulseBatch]) -> float:
    """Seconds per step."""
    start = time.perf_counter()
    for batch in batches:
        xbar.apply(batch, read_back=True)
    return (time.perf_counter() - start) / len(batches)


def run_mpes(xbar, sim_time: float) -> float:
    """Wall seconds per simulated second of bench_mpes.py's 100x100 network learning on ``xbar``
    (the network of shared/reference/baselines.md)."""
    from bench_mpes import build, wall_time

    from memristor_hil import mPES

    return wall_time(build(100, mPES(crossbar=xbar)), sim_time) / sim_time


class _NoStore(Record):
    """A record that stores nothing: what the wrapper costs by itself (``--breakdown``)."""

    def log_apply(self, *args: object, **kwargs: object) -> int:
        return 0

    def log_read(self, *args: object, **kwargs: object) -> int:
        return 0


class _EncodeOnly(_NoStore):
    """A record that encodes every event as a real one does, and stores nothing: the
    encoder's cost without the SQLite commit (``--breakdown``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._coder = ReadingCodec(self.shape[0] * self.shape[1])

    def log_apply(
        self,
        cells: np.ndarray,
        pulses: np.ndarray,
        voltage: float | np.ndarray,
        width: float | np.ndarray,
        resistance: np.ndarray | None,
        **kwargs: object,
    ) -> int:
        flat = as_integers(cells)
        pack_cells(flat, kwargs.get("ascending"))  # type: ignore[arg-type]
        pack(narrow(as_integers(pulses)))
        for value in (voltage, width):
            pack_float(value) if type(value) is float else pack(np.asarray(value, np.float64))
        if resistance is not None:
            self._coder.encode(flat, resistance)
            self._coder.commit()
        return 0


#: --breakdown's variants: the record class and what the variant adds to the one before it
BREAKDOWN = {
    "wrapper": (_NoStore, "RecordingCrossbar's own work (no record)"),
    "encode": (_EncodeOnly, "encoding cells, pulses and readings"),
    "record-normal": (Record, "the SQLite commit (no fsync)"),
    "record-full": (Record, "an fsync per commit (synchronous=FULL)"),
}


def make_variant(name: str, folder: Path, counter: list[int], url: str = URL):
    inner = open_crossbar(url)
    if name == "plain":
        return inner
    counter[0] += 1
    path = folder / f"{name}-{counter[0]}.sqlite"
    kind = BREAKDOWN[name][0]
    sync = "FULL" if name == "record-full" else "NORMAL"
    record = kind.create(path, identity=inner.identity, shape=inner.shape, synchronous=sync)
    return RecordingCrossbar(inner, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("standin", "mpes"), default="standin")
    parser.add_argument("--steps", type=int, default=300, help="steps per round (standin)")
    parser.add_argument("--sim-time", type=float, default=0.5, help="simulated s per round (mpes)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--export", action="store_true", help="time a CSV export of the record")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run the wrapper without a record and the encoder without SQLite, and "
        "print where a recorded step's extra time goes",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what the mpes workload times (the standin workload: wall)",
    )
    args = parser.parse_args()
    if args.workload == "mpes":
        try:
            from memristor_hil import mPES  # noqa: F401
        except ImportError:
            parser.error("--workload mpes needs memristor_hil.mPES, which this checkout lacks")
        import bench_mpes

        bench_mpes.clock = bench_mpes.CLOCKS[args.clock]
    variants = ["plain", "record-normal", "record-full"]
    if args.breakdown:
        variants = ["plain", *BREAKDOWN]
    times: dict[str, list[float]] = {v: [] for v in variants}
    sizes: dict[str, int] = {}
    format1: dict[str, int] = {}
    export_line = ""
    counter = [0]
    with tempfile.TemporaryDirectory(dir=".") as folder:
        if args.workload == "standin":
            batches = standin_batches(args.steps)
            run_standin(open_crossbar(URL), batches[:20])  # compile the kernels first
            print(f"standin workload: {args.steps} steps of one ~5000-cell batch with read-back "
                  f"on a 100x200 emulator, {args.rounds} rounds")  # fmt: skip
            for _ in range(args.rounds):
                for name in variants:
                    with make_variant(name, Path(folder), counter) as xbar:
                        times[name].append(run_standin(xbar, batches))
                    if name.startswith("record"):  # closed: the WAL is in the file
                        last = xbar.record.path
                        sizes[name] = last.stat().st_size
        else:
            run_mpes(open_crossbar(MPES_URL), 0.05)  # warm up (compiles the kernels)
            print(f"mpes workload: 100x100 mPES network, {args.sim_time} s simulated at "
                  f"dt=1 ms per round, {args.rounds} rounds, {args.clock} time")  # fmt: skip
            for _ in range(args.rounds):
                for name in variants:
                    with make_variant(name, Path(folder), counter, MPES_URL) as xbar:
                        times[name].append(run_mpes(xbar, args.sim_time))
                    if name.startswith("record"):  # closed: the WAL is in the file
                        last = xbar.record.path
                        sizes[name] = last.stat().st_size
        for name in sizes:
            format1[name] = format1_bytes(last)
        if args.export:
            export_line = time_export(last)
    plain = min(times["plain"])
    unit = "step" if args.workload == "standin" else "simulated s"
    steps = args.steps if args.workload == "standin" else int(round(args.sim_time / 1e-3))
    print(f"{'variant':<16} {'min ms per ' + unit:>22} {'ratio to plain':>15} "
          f"{'(median)':>9} {'bytes/step':>11} {'format-1 bytes/step':>20}")  # fmt: skip
    median_plain = statistics.median(times["plain"])
    for name in variants:
        t = min(times[name])
        ratio = f"{statistics.median(times[name]) / median_plain:>9.2f}"
        size = f"{sizes[name] / steps:>11.0f}" if name in sizes else f"{'-':>11}"
        old = f"{format1[name] / steps:>20.0f}" if name in format1 else f"{'-':>20}"
        print(f"{name:<16} {t * 1e3:>22.3f} {t / plain:>15.2f} {ratio} {size} {old}")
    if args.breakdown:
        per_step = 1e6 if args.workload == "standin" else 1e3  # us per step, dt = 1 ms
        print(f"where a recorded step's extra time goes (differences of the minima, us per "
              f"step; plain {plain * per_step:.0f} us):")  # fmt: skip
        before = plain
        for name in BREAKDOWN:
            t = min(times[name])
            print(f"  {(t - before) * per_step:>+8.1f}  {BREAKDOWN[name][1]} ({name})")
            before = t if name != "record-full" else before
    if export_line:
        print(export_line)


def format1_bytes(path: Path) -> int:
    """What the record's events took in format 1: float64 readings, plain cell bitmaps."""
    from memristor_hil.lab.record import Record

    with Record.open(path) as record:
        total = 0
        for (n,) in record._db.execute("SELECT ncells FROM events"):
            total += 8 * n + (record.shape[0] * record.shape[1] + 7) // 8
    return total


def time_export(path: Path) -> str:
    """Wall time of exporting the record to CSV with the command line, as a user would."""
    out = path.with_suffix(".csv")
    command = [str(Path(sys.executable).with_name("memristor-hil")), "record", "export"]
    start = time.perf_counter()
    subprocess.run([*command, str(path), "--out", str(out)], check=True, capture_output=True)
    took = time.perf_counter() - start
    return (f"export of the last record ({path.stat().st_size / 1e6:.1f} MB) to CSV: "
            f"{took:.1f} s wall, {out.stat().st_size / 1e6:.0f} MB written")  # fmt: skip


if __name__ == "__main__":
    main()
