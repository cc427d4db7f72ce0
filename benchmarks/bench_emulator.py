"""Pulse-update throughput of the in-process emulator (issue: foundation).

Prints pulse-updates per second for 10^4- and 10^6-cell batches on a 1000x1000 crossbar, with
and without reading the touched cells back, in float64 and float32, for cells in row-major
order (what the mPES operator sends) and in random order (the worst case: every access
misses cache, and repeated-cell handling needs a second pass); then the wall time of a one-cell
batch. Also the numpy ``**`` reference over the same number of elements, measured in the same
run, so the figures can be compared across machines.

Usage::

    python benchmarks/bench_emulator.py [--repeats N]

Targets: >= 100 million pulse-updates/s on the 10^6-cell batch; a one-cell batch < 20 us.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from memristor_hil.emulator import EmulatedCrossbar

from memristor_hil import PowerLaw, PulseBatch


def best_time(func, repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds (after one warm-up call)."""
    func()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def median_time(func, repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per figure")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (1000, 1000)
    print(f"crossbar {shape[0]}x{shape[1]}; best of {args.repeats}; M/s = million pulse-updates/s")
    print(f"{'dtype':8} {'cells':>8} {'order':8} {'read_back':>9} {'ms':>8} {'M/s':>8}")
    for dtype in ("float64", "float32"):
        xbar = EmulatedCrossbar(*shape, PowerLaw(dtype=dtype), seed=0)
        for count in (10**4, 10**6):
            for order in ("rowmajor", "random"):
                cells = rng.choice(xbar.size, count, replace=False)
                cells = np.sort(cells) if order == "rowmajor" else cells
                batch = PulseBatch.from_flat(cells, shape[1])
                for read_back in (False, True):
                    t = best_time(
                        lambda x=xbar, b=batch, r=read_back: x.apply(b, read_back=r), args.repeats
                    )
                    print(
                        f"{dtype:8} {count:>8} {order:8} {read_back!s:>9} {t * 1e3:8.3f} "
                        f"{count / t / 1e6:8.1f}"
                    )
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
    t_build = median_time(lambda: xbar.apply(PulseBatch([5], [7]), read_back=True), 5000)
    print(
        f"one-cell batch (median of 5000): apply {t_apply * 1e6:.1f} us; with read-back "
        f"{t_read_back * 1e6:.1f} us; building the PulseBatch too {t_build * 1e6:.1f} us"
    )


if __name__ == "__main__":
    main()
