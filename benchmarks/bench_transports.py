"""Round trips and pulses per second through each transport (issue: hardware in the loop).

Starts ``memristor-hil emulate`` twice (``--serial`` on a pseudo-terminal, ``--tcp`` on a
loopback port for VISA/pyvisa-py) and measures, side by side with the in-process emulator in the
same run: the median round trip of a one-cell batch and of a 10^4-cell batch (the 100x100
positive block of a 100x200 crossbar, with read-back: 2.5 kB out as a bitmap, 80 kB of float64
back), plus the round trips and pulses per second that follow. With ``--mpes`` it also times the
100x100-neuron Nengo network of reference/baselines.md learning with mPES on each backend,
relative to the in-process emulator.

Usage::

    python benchmarks/bench_transports.py [--repeats N] [--mpes] [--sim-time S]

Targets: a 10^4-pulse batch round trip under 2 ms; the 100x100 Nengo run through serial or VISA
within 3x of the in-process one.
"""

from __future__ import annotations

import argparse
import subprocess
import time

import numpy as np

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.testing import EmulatorService

#: 100 post x (100 + 100) pre devices: the mPES layout of a 100x100 connection
SHAPE = (100, 200)
URL = f"emulator://?rows={SHAPE[0]}&cols={SHAPE[1]}&seed=0"


def start_service(*args: str, url: str = URL) -> tuple[subprocess.Popen, str]:
    """The service process and the address it announced."""
    service = EmulatorService(*args, "--quiet", url=url)
    return service.proc, service.where


def median_round_trip(xbar, batch: PulseBatch, repeats: int) -> float:
    for _ in range(3):
        xbar.apply(batch, read_back=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        xbar.apply(batch, read_back=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def transport_table(urls: dict[str, str], repeats: int) -> None:
    rows, cols = np.divmod(np.arange(100 * 100), 100)  # the 10^4 devices of one sign
    batches = {
        "1 cell": PulseBatch([5], [7]),
        "10^4 cells": PulseBatch(rows, cols),
    }
    print(f"median of {repeats} round trips (apply + read-back), {SHAPE[0]}x{SHAPE[1]} crossbar")
    print("(every round trip moves the batch's pulses and reads its cells back)")
    print(
        f"{'backend':10} {'batch':>10} {'round trip':>12} {'trips/s':>10} {'pulses/s':>12} "
        f"{'x in-process':>13}"
    )
    reference: dict[str, float] = {}
    for name, url in urls.items():
        with open_crossbar(url, timeout=10) if name != "in-process" else open_crossbar(url) as x:
            for label, batch in batches.items():
                t = median_round_trip(x, batch, repeats)
                reference.setdefault(label, t)
                print(
                    f"{name:10} {label:>10} {t * 1e3:9.3f} ms {1 / t:10.0f} "
                    f"{batch.total_pulses / t:12.3g} {t / reference[label]:12.1f}x"
                )


def mpes_table(urls: dict[str, str], sim_time: float) -> None:
    """Wall time of the 100x100 network of reference/baselines.md with mPES on each backend."""
    from bench_mpes import build, wall_time
    from memristor_hil.drivers import SerialCrossbar, VisaCrossbar

    from memristor_hil import mPES

    def run(crossbar) -> float:
        # bench_mpes.py's network (shared/reference/baselines.md), SHAPE[0] neurons each side
        return wall_time(build(SHAPE[0], mPES(crossbar=crossbar)), sim_time)

    print(f"\n{SHAPE[0]}x{SHAPE[1] // 2} Nengo network with mPES, {sim_time} s simulated (dt 1 ms)")
    base = None
    for name, url in urls.items():
        # driver objects, not URLs: the timing is of the transport alone
        if name == "serial":
            crossbar = SerialCrossbar(url.split("://", 1)[1], timeout=10)
        elif name == "visa":
            crossbar = VisaCrossbar(url.split("://", 1)[1], timeout=10)
        else:
            crossbar = open_crossbar(url)
        with crossbar:
            t = run(crossbar)
        base = base or t
        print(f"{name:10} {t:8.2f} s wall {t / base:8.2f}x in-process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed round trips per figure")
    parser.add_argument("--mpes", action="store_true", help="also time a 100x100 mPES run")
    parser.add_argument("--sim-time", type=float, default=1.0, help="simulated seconds (--mpes)")
    args = parser.parse_args()
    serial_proc, pty = start_service("--serial")
    tcp_proc, address = start_service("--tcp", "127.0.0.1:0")
    host, port = address.rsplit(":", 1)
    urls = {
        "in-process": URL,
        "serial": f"serial://{pty}",
        "visa": f"visa://TCPIP::{host}::{port}::SOCKET",
    }
    try:
        transport_table(urls, args.repeats)
        if args.mpes:
            mpes_table(urls, args.sim_time)
    finally:
        for proc in (serial_proc, tcp_proc):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
