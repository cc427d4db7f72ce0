"""Pulse-update throughput of the in-process emulator (issue: foundation).

Prints pulse-updates per second for 10^4- and 10^6-cell batches on a 1000x1000 crossbar, with
and without reading the touched cells back (into a new array, and into a caller's reused
buffer: ``apply(..., out=buffer)``), in float64 and float32, for cells in row-major order (what
the mPES operator sends) and in random order (the worst case: every access misses cache, and
the read-back needs a second pass); then the wall time of a one-cell batch. Also the numpy
``**`` reference over the same number of elements, measured in the same run, so the figures
can be compared across machines.

Times are this thread's CPU time by default (``--clock cpu``; the machine may be shared with
other jobs, which inflates wall time), ``--clock wall`` for wall time; the load average is
printed with the figures.

Usage::

    python benchmarks/bench_emulator.py [--repeats N] [--clock cpu|wall]

Targets (speed round two): >= 300 M pulse-updates/s for the 10^6-cell float32 batch in
row-major order, >= 150 M/s in random order; a one-cell batch with read-back < 5 us.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from memristor_hil.emulator import EmulatedCrossbar

from memristor_hil import PowerLaw, PulseBatch

clock = time.thread_time


def best_time(func, repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds (after one warm-up call)."""
    func()
    best = np.inf
    for _ in range(repeats):
        start = clock()
        func()
        best = min(best, clock() - start)
    return best


def median_time(func, repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        start = clock()
        func()
        times.append(clock() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per figure")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    shape = (1000, 1000)
    print(
        f"crossbar {shape[0]}x{shape[1]}; best of {args.repeats}, {args.clock} time; M/s = "
        f"million pulse-updates/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    targets = {}
    print(
        "order: rowmajor/random with int64 addresses (as PulseBatch.from_flat makes them), "
        "row-i32: row-major with int32 addresses (as the mPES operator sends); read_back out=: "
        "into a reused buffer"
    )
    print(f"{'dtype':8} {'cells':>8} {'order':8} {'read_back':>9} {'ms':>8} {'M/s':>8}")
    for dtype in ("float64", "float32"):
        xbar = EmulatedCrossbar(*shape, PowerLaw(dtype=dtype), seed=0)
        for count in (10**4, 10**6):
            orders = ["rowmajor", "random"] + ["row-i32"] * (dtype == "float32" and count > 10**4)
            for order in orders:
                cells = rng.choice(xbar.size, count, replace=False)
                cells = cells if order == "random" else np.sort(cells)
                batch = PulseBatch.from_flat(cells, shape[1])
                if order == "row-i32":  # the addresses' width the mPES operator sends
                    rows, cols = (a.astype(np.int32) for a in (batch.rows, batch.cols))
                    batch = PulseBatch(rows, cols)
                buffer = np.empty(count, dtype)
                for read_back in (False, True, "out="):
                    t = best_time(
                        lambda x=xbar, b=batch, r=read_back, o=buffer: x.apply(
                            b, read_back=bool(r), out=o if r == "out=" else None
                        ),
                        args.repeats,
                    )
                    print(
                        f"{dtype:8} {count:>8} {order:8} {read_back!s:>9} {t * 1e3:8.3f} "
                        f"{count / t / 1e6:8.1f}"
                    )
                    if dtype == "float32" and count == 10**6:
                        targets[order, read_back] = count / t / 1e6
        x = np.full(10**6, 300.3, dtype=dtype)
        t = best_time(lambda x=x: x ** x.dtype.type(-0.146), args.repeats)
        print(
            f"{dtype:8} reference: numpy x**a over 10^6 elements {t * 1e3:.3f} ms "
            f"({10**6 / t / 1e6:.0f} M/s)"
        )

    xbar = EmulatedCrossbar(*shape, seed=0)
    one = PulseBatch([5], [7])
    t_apply = median_time(lambda: xbar.apply(one), 5000)
    t_read_back = median_time(lambda: xbar.apply(one, read_back=True), 5000)
    out = np.empty(1)
    t_out = median_time(lambda: xbar.apply(one, read_back=True, out=out), 5000)
    t_build = median_time(lambda: xbar.apply(PulseBatch([5], [7]), read_back=True), 5000)
    print(
        f"one-cell batch (median of 5000): apply {t_apply * 1e6:.1f} us; with read-back "
        f"{t_read_back * 1e6:.1f} us (into a reused buffer {t_out * 1e6:.1f} us); building the "
        f"PulseBatch too {t_build * 1e6:.1f} us"
    )
    for (order, read_back), rate in targets.items():
        goal = 150 if order == "random" else 300
        print(
            f"target: 10^6 float32 cells, {order}, read_back={read_back!s}: {rate:.0f} M/s "
            f"(target >= {goal}: {'met' if rate >= goal else 'NOT met'})"
        )
    print(
        f"target: one-cell batch with read-back {t_read_back * 1e6:.1f} us (target < 5: "
        f"{'met' if t_read_back < 5e-6 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
