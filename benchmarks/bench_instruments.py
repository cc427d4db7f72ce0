"""Host-side cost per timestep of driving ArC ONE and ArC TWO, beside the in-process emulator.

The 100x100 mPES network of ``bench_mpes.py`` runs once on the in-process emulator while every
batch the rule sends is captured. Each captured timestep is then replayed through:

- the in-process emulator: ``apply(batch, read_back=True)`` (the baseline);
- ArC ONE: encoding the batch and its masked read-back into the bytes the driver writes
  (``encode_batch`` + ``encode_masked_read``);
- ArC TWO: planning the buffered program (``plan_pulses``) and issuing its calls to an
  instrument that does nothing (``pulse_slice_masked`` per instruction, ``execute``, the
  read-back calls), i.e. everything the host does before the USB transfer.

It prints the median host time per timestep, its ratio to the emulator's, and the bytes
(ArC ONE) or instructions (ArC TWO) per timestep, with the link time those imply from the
instruments' documented figures (921600 baud 8E1 = 83.8 kB/s; ArC TWO ~2.5 ms per immediate
instruction). ArC ONE addresses a 32x32 array, so this 100x200-device network would span
several boards; the encoding cost per step is what is measured.

Usage::

    python benchmarks/bench_instruments.py               # 0.5 s simulated (500 timesteps)
    python benchmarks/bench_instruments.py --seconds 1 --n 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import nengo
import numpy as np
from memristor_hil.drivers.arc1 import encode_batch, encode_masked_read
from memristor_hil.drivers.arc2 import COL_CHANNELS, READ_ALL_ROWS, ROW_CHANNELS, plan_pulses

from memristor_hil import Crossbar, PulseBatch, mPES, open_crossbar
from memristor_hil.pulses import Cells

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpes import build  # noqa: E402 - the benchmark folder's own module

ARC1_BYTES_PER_S = 921_600 / 11  # 8 data bits, parity, start and stop bits
ARC2_IMMEDIATE_S = 2.5e-3


class Capture(Crossbar):
    """A crossbar that forwards to an emulator and keeps every batch it was given."""

    def __init__(self, inner: Crossbar) -> None:
        super().__init__(inner.shape, limits=inner.limits, identity=inner.identity)
        self.inner = inner
        self.batches: list[PulseBatch] = []

    @property
    def model(self):
        return self.inner.model

    def _apply(self, batch, cells, read_back):
        self.batches.append(batch)
        return self.inner.apply(batch, read_back=read_back)

    def _read(self, flat):
        return self.inner._read(flat)

    def _close(self):
        self.inner.close()


class NullArC2:
    """Takes ArC TWO calls and does nothing (the host-side cost only)."""

    def pulse_slice_masked(self, chan, voltage, nanos, mask):
        return self

    def ground_all(self):
        return self

    def execute(self):
        return self

    def read_slice_masked(self, chan, mask, vread):
        return None

    def read_all(self, vread, order):
        return None


def capture(n: int, seconds: float) -> tuple[str, list[PulseBatch]]:
    url = f"emulator://?rows={n}&cols={2 * n}&seed=1&sigma=0.15"
    xbar = Capture(open_crossbar(url))
    net = build(n, mPES(crossbar=xbar))
    with nengo.Simulator(net, progress_bar=False) as sim:
        sim.run(seconds)
    xbar.close()
    return url, xbar.batches


def median_per_step(func, batches: list[PulseBatch]) -> float:
    times = []
    for batch in batches:
        start = time.perf_counter()
        func(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="neurons in pre and post (100)")
    parser.add_argument("--seconds", type=float, default=0.5, help="simulated seconds (0.5)")
    args = parser.parse_args(argv)
    url, batches = capture(args.n, args.seconds)
    ncols = 2 * args.n
    print(f"{args.n}x{args.n} mPES network, {len(batches)} timesteps with pulses "
          f"({args.seconds:g} s simulated); cells per step: median "
          f"{statistics.median(len(b) for b in batches):.0f}")  # fmt: skip

    # baseline: the in-process emulator, replaying the same batches from the same start
    with open_crossbar(url) as xbar:
        emulator = median_per_step(lambda b: xbar.apply(b, read_back=True), batches)

    # ArC ONE: bytes written per step
    sizes = []

    def arc1(batch: PulseBatch) -> None:
        words, bits = batch.rows + 1, batch.cols + 1
        data, _ = encode_batch(batch, words, bits)
        sizes.append(len(data) + len(encode_masked_read(args.n, ncols, words, bits)))

    arc1_time = median_per_step(arc1, batches)
    arc1_bytes = statistics.median(sizes[: len(batches)])

    # ArC TWO: the buffered program and the read-back calls per step
    rows_ch = np.resize(np.array(ROW_CHANNELS), args.n)  # channel numbers for the lookups only
    cols_ch = np.resize(np.array(COL_CHANNELS), ncols)
    instrument = NullArC2()
    counts = []

    def arc2(batch: PulseBatch) -> None:
        flat = batch.rows.astype(np.intp) * ncols + batch.cols
        cells = Cells(flat, bool(np.all(flat[1:] > flat[:-1])))
        program = plan_pulses(batch, cells, (args.n, ncols), rows_ch, cols_ch)
        for ins in program:
            instrument.pulse_slice_masked(ins.chan, ins.voltage, ins.nanos, ins.mask)
            instrument.ground_all()  # as the driver does after every pulse
        instrument.execute()
        touched = np.unique(batch.rows)
        if len(touched) > READ_ALL_ROWS:
            instrument.read_all(0.2, "Cols")
        else:
            for row in touched.tolist():
                mask = np.unique(cols_ch[batch.cols[batch.rows == row]])
                instrument.read_slice_masked(int(rows_ch[row]), mask, 0.2)
        counts.append((len(program), 1 if len(touched) > READ_ALL_ROWS else len(touched)))

    arc2_time = median_per_step(arc2, batches)
    pulses = statistics.median(c[0] for c in counts[: len(batches)])
    reads = statistics.median(c[1] for c in counts[: len(batches)])

    print(f"{'backend':<28} {'host us/step':>13} {'x emulator':>11}   per step on the link")
    print(f"{'emulator:// (in process)':<28} {emulator * 1e6:>13.1f} {1.0:>11.2f}")
    print(f"{'arc1:// (encode bytes)':<28} {arc1_time * 1e6:>13.1f} {arc1_time / emulator:>11.2f}"
          f"   {arc1_bytes:.0f} bytes = {arc1_bytes / ARC1_BYTES_PER_S * 1e3:.1f} ms at "
          "921600 baud")  # fmt: skip
    print(f"{'arc2:// (build program)':<28} {arc2_time * 1e6:>13.1f} {arc2_time / emulator:>11.2f}"
          f"   {pulses:.0f} pulse instructions + 1 execute + {reads:.0f} read call(s); "
          f"{(pulses + reads) * ARC2_IMMEDIATE_S * 1e3:.0f} ms if each were immediate "
          f"(~2.5 ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
