"""Round trips and pulses per second through each transport (issue: hardware in the loop).

Starts ``memristor-hil emulate`` twice (``--serial`` on a pseudo-terminal, ``--tcp`` on a
loopback port for VISA/pyvisa-py) and measures, side by side with the in-process emulator in the
same run: the median round trip of a one-cell batch and of a 10^4-cell batch (the 100x100
positive block of a 100x200 crossbar of float32 devices, with read-back: 2.5 kB out as a
bitmap, 40 kB of binary32 back through protocol version 3), plus the round trips and pulses
per second that follow. With ``--mpes`` it also times the 100x100-neuron Nengo network of
reference/baselines.md learning with mPES on each backend, relative to the in-process emulator.

Usage::

    python benchmarks/bench_transports.py [--repeats N] [--mpes] [--in-turn] [--sim-time S]
        [--rounds R] [--pipeline] [--steps N] [--compute S]

``--pipeline`` times mPES-shaped steps (a batch of ~5000 cells with read-back plus ``--compute``
seconds of other work, 0.3 ms by default: the part of a 100x100 Nengo step that does not need
the step's read-back) applied in turn and overlapped through ``Crossbar.submit``.

Targets: a 10^4-pulse batch round trip under 2 ms; the 100x100 Nengo run through serial or VISA
within 2x of the in-process one (issue 16), with bit-identical devices at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from typing import NamedTuple

import nengo
import numpy as np

from memristor_hil import Crossbar, PulseBatch, open_crossbar
from memristor_hil.testing import EmulatorService

#: 100 post x (100 + 100) pre devices: the mPES layout of a 100x100 connection
SHAPE = (100, 200)
#: float32 devices, as mPES's default model (the native read-back of protocol version 3 then
#: carries 4 bytes per reading instead of 8)
URL = f"emulator://?rows={SHAPE[0]}&cols={SHAPE[1]}&seed=0&dtype=float32"


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


def mpes_table(running: Services, sim_time: float, rounds: int, in_turn: bool = False) -> None:
    """Wall time of the 100x100 network of reference/baselines.md with mPES on each backend.

    mPES submits each step's batch and stores its read-back in the next step
    (``SimmPESCollect``), so the round trip overlaps Nengo's other operators; with
    ``in_turn`` the drivers also run with each step waiting for its own read-back (the
    collector taken out of the built model), as before the overlap.

    Every backend gets the same runs in the same order (a warm-up, then ``rounds`` interleaved
    rounds), so their devices must end in the same state: the last line compares every
    device's resistance, read through each backend, with the in-process emulator's, bit for
    bit. Wall clock (``time.perf_counter``): the service's work is in another process.
    """
    from bench_mpes import build

    from memristor_hil import mPES
    from memristor_hil.learning.operator import SimmPESCollect

    def run(crossbar, seconds: float, overlap: bool = True) -> tuple[float, float]:
        # bench_mpes.py's network (shared/reference/baselines.md), SHAPE[0] neurons each side
        model = nengo.builder.Model(dt=0.001)
        model.build(build(SHAPE[0], mPES(crossbar=crossbar)))
        if not overlap:  # each step waits for its own read-back (before SimmPESCollect)
            ops = [op for op in model.operators if not isinstance(op, SimmPESCollect)]
            model.operators[:] = ops
        with nengo.Simulator(None, model=model, progress_bar=False) as sim:
            start, cpu = time.perf_counter(), time.process_time()
            sim.run(seconds)
            return time.perf_counter() - start, time.process_time() - cpu

    crossbars = open_backends(running.urls)
    runs = [(name, name, True) for name in crossbars]
    if in_turn:
        runs += [(f"{name} in turn", name, False) for name in crossbars]  # same runs each
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    served: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    try:
        for crossbar in crossbars.values():
            run(crossbar, 0.05)  # compile, connect, fill caches
        for _ in range(rounds):
            for label, name, overlap in runs:
                pid = running.pids.get(name)
                before = cpu_seconds(pid) if pid else 0.0
                wall, host = run(crossbars[name], sim_time, overlap)
                times[label].append(wall)
                cpu[label].append(host)
                served[label].append(cpu_seconds(pid) - before if pid else 0.0)
        final = {name: np.asarray(x.read_all(), np.float64) for name, x in crossbars.items()}
    finally:
        for crossbar in crossbars.values():
            crossbar.close()
    print(
        f"\n{SHAPE[0]}x{SHAPE[1] // 2} Nengo network with mPES (float32 devices), {sim_time} s "
        f"simulated (dt 1 ms), {rounds} interleaved rounds, wall clock"
    )
    print("(host CPU: this process's CPU time per step, the smallest of the rounds; what the")
    print(" transport costs the host beyond the in-process step, whatever the overlap hides;")
    print(" service CPU: the service process's, which only a free core runs beside the host's)")
    print(
        f"{'backend':16} {'min s':>8} {'median s':>9} {'min x in-process':>17} {'(median)':>9} "
        f"{'host CPU ms/step':>17} {'service CPU ms/step':>20}"
    )
    best, middle = min(times["in-process"]), statistics.median(times["in-process"])
    steps = round(sim_time / 0.001)
    for name, got in times.items():
        print(
            f"{name:16} {min(got):8.3f} {statistics.median(got):9.3f} {min(got) / best:16.2f}x "
            f"{statistics.median(got) / middle:8.2f}x {min(cpu[name]) / steps * 1e3:17.3f} "
            f"{min(served[name]) / steps * 1e3:20.3f}"
        )
    print(f"load average after the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print_identity(final)


def open_backends(urls: dict[str, str]) -> dict[str, Crossbar]:
    """The in-process emulator and the two drivers; driver objects, not URLs (which may
    wrap them, e.g. to record): the timing is of the transport alone."""
    from memristor_hil.drivers import SerialCrossbar, VisaCrossbar

    return {
        "in-process": open_crossbar(urls["in-process"]),
        "serial": SerialCrossbar(urls["serial"].split("://", 1)[1], timeout=10),
        "visa": VisaCrossbar(urls["visa"].split("://", 1)[1], timeout=10),
    }


def print_identity(final: dict[str, np.ndarray]) -> None:
    """Whether each driver's devices ended bit for bit where the in-process ones did."""
    for name in ("serial", "visa"):
        same = final[name].tobytes() == final["in-process"].tobytes()
        print(f"{name}: every device's final resistance bit-identical to in-process: {same}")


def mpes_batches(steps: int, seed: int = 0) -> list[PulseBatch]:
    """The shape of a 100x100 mPES step: ~5000 distinct ascending cells of the 100x200 array."""
    rng = np.random.default_rng(seed)
    return [
        PulseBatch.from_flat(np.flatnonzero(rng.random(SHAPE[0] * SHAPE[1]) < 0.25), SHAPE[1])
        for _ in range(steps)
    ]


def busy(seconds: float) -> None:
    """Stand-in for the Nengo work of a step (holds the interpreter, as Nengo's ops do)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def pipeline_table(urls: dict[str, str], steps: int, compute: float, rounds: int) -> None:
    """Per step: ``compute`` seconds of other work and one mPES-shaped apply with read-back,
    either in turn (``apply``) or overlapped (``submit``, the work, then ``result()``): what
    an mPES operator that submits its batch and collects the read-back only before the next
    step reads its weights would gain. Devices must end bit-identical to in-process."""
    crossbars = open_backends(urls)
    batches = mpes_batches(steps)

    def in_turn(x) -> float:
        start = time.perf_counter()
        for batch in batches:
            busy(compute)
            x.apply(batch, read_back=True)
        return (time.perf_counter() - start) / steps

    def overlapped(x) -> float:
        start = time.perf_counter()
        for batch in batches:
            pending = x.submit(batch, read_back=True)
            busy(compute)
            pending.result()
        return (time.perf_counter() - start) / steps

    times: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(rounds):
            for name, x in crossbars.items():
                for mode, run in (("apply", in_turn), ("submit", overlapped)):
                    times.setdefault((name, mode), []).append(run(x))
        final = {name: np.asarray(x.read_all(), np.float64) for name, x in crossbars.items()}
    finally:
        for x in crossbars.values():
            x.close()
    print(
        f"\nmPES-shaped steps (~5000 cells, float32 read-back) with {compute * 1e3:.2f} ms of "
        f"other work each, {steps} steps x {rounds} interleaved rounds, wall clock"
    )
    print(f"{'backend':10} {'mode':>7} {'min ms/step':>12} {'x in-process apply':>19}")
    base = min(times[("in-process", "apply")])
    for (name, mode), got in times.items():
        print(f"{name:10} {mode:>7} {min(got) * 1e3:12.3f} {min(got) / base:18.2f}x")
    print_identity(final)


class Services(NamedTuple):
    """The backends' URLs, and the process id of the service behind each driver."""

    urls: dict[str, str]
    pids: dict[str, int]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; NaN where psutil is missing."""
    try:
        import psutil  # installed with the [sweep] extra (Dask's distributed needs it)
    except ImportError:
        return float("nan")
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@contextlib.contextmanager
def services() -> Iterator[Services]:
    """Fresh serial and TCP services (devices as the in-process emulator's)."""
    serial_proc, pty = start_service("--serial")
    tcp_proc, address = start_service("--tcp", "127.0.0.1:0")
    host, port = address.rsplit(":", 1)
    try:
        yield Services(
            {
                "in-process": URL,
                "serial": f"serial://{pty}",
                "visa": f"visa://TCPIP::{host}::{port}::SOCKET",
            },
            {"serial": serial_proc.pid, "visa": tcp_proc.pid},
        )
    finally:
        for proc in (serial_proc, tcp_proc):
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed round trips per figure")
    parser.add_argument("--mpes", action="store_true", help="also time a 100x100 mPES run")
    parser.add_argument("--sim-time", type=float, default=1.0, help="simulated seconds (--mpes)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (--mpes)")
    parser.add_argument(
        "--in-turn", action="store_true", help="also time the drivers without overlap (--mpes)"
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="also time apply vs submit (overlapped) steps"
    )
    parser.add_argument("--steps", type=int, default=300, help="steps per round (--pipeline)")
    parser.add_argument(
        "--compute", type=float, default=0.3e-3, help="other work per step, s (--pipeline)"
    )
    args = parser.parse_args()
    with services() as running:
        transport_table(running.urls, args.repeats)
    if args.mpes:
        with services() as running:  # fresh devices: the runs must end bit-identical
            mpes_table(running, args.sim_time, args.rounds, args.in_turn)
    if args.pipeline:
        with services() as running:
            pipeline_table(running.urls, args.steps, args.compute, args.rounds)


if __name__ == "__main__":
    main()
