"""Soak the emulator service: N clients x M batches over VISA/TCP with faults injected and one
client killed at random points; nothing may be lost or applied twice.

Starts ``memristor-hil emulate --tcp`` with corrupted bytes, dropped bytes and dropped replies,
then N client processes (``VisaCrossbar``, retrying with the same sequence number), each sending
M batches at once with the others. Client 0 controls the crossbar: its batches pulse cells no
other batch touches; it is killed with SIGKILL at random moments while it pulses (``--kills``
times) and started again after the last batch it saw acknowledged. Clients 1..N-1 read M batches
of cells each: they observe, since the protocol has one controlling host at a time
(docs/protocol.md; several controllers on one sequence window are what issue 18's session claim
settles). At the end the service's state is read back and every pulse batch's effect is counted
in pulses (the model has no variability or noise and pulses are at the reference voltage, where
``n`` grows by exactly the pulse count), so each batch shows how many times it was applied:

- acknowledged: batches (pulses or reads) whose reply reached a client;
- lost: acknowledged batches found applied 0 times (must be 0);
- double-applied: batches found applied more than once (must be 0);
- in flight at a kill: sent by a killed client and never acknowledged: 0 or 1 application
  are both correct, and the count of each is shown;

and the service's peak RSS and the p50/p99 latency of an acknowledged batch.

Usage::

    python benchmarks/soak_service.py [--clients N] [--batches M] [--kills K] [--seed S]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from bench_service_limits import peak_rss_mb  # the benchmark folder's own module

from memristor_hil.testing import EmulatorService

#: Cells each batch pulses (its own, in its client's row).
CELLS = 4


def start_service(url: str, *args: str) -> tuple[subprocess.Popen, str]:
    """The service process and the address it announced."""
    service = EmulatorService("--quiet", *args, url=url)
    return service.proc, service.where


def pulses_of(batch: int) -> int:
    return 1 + (batch * 3) % 9


def run_client(resource: str, client: int, start: int, batches: int, log: Path) -> None:
    """Send batches ``start..batches-1``; append ``batch latency`` per acknowledgement.

    Client 0 pulses (its batch ``j`` pulses row 0, columns ``4j..4j+3``); the others read a
    random 64-cell batch each time."""
    from memristor_hil.drivers import VisaCrossbar

    from memristor_hil import PulseBatch

    rng = np.random.default_rng(client)
    # client 0 controls the device; a restarted client 0 takes over from its killed self (the
    # documented way to continue after a host died); the others only watch, as monitors
    role = {"takeover": start > 0} if client == 0 else {"monitor": True}
    with VisaCrossbar(resource, timeout=0.5, retries=20, **role) as xbar, open(log, "a") as out:
        rows, cols = xbar.shape
        for j in range(start, batches):
            t0 = time.perf_counter()
            if client == 0:
                cells = np.arange(j * CELLS, (j + 1) * CELLS)
                xbar.apply(PulseBatch(np.zeros(CELLS, int), cells, pulses=pulses_of(j)))
            else:
                flat = rng.integers(0, rows * cols, 64)
                xbar.read(*np.divmod(flat, cols))
            out.write(f"{j} {time.perf_counter() - t0:.6f}\n")
            out.flush()


def spawn_client(resource: str, client: int, start: int, batches: int, log: Path):
    """Client ``client`` in its own process (this script with ``--as-client``)."""
    argv = [resource, str(client), str(start), str(batches), str(log)]
    return subprocess.Popen([sys.executable, __file__, "--as-client", *argv])


def acknowledged(log: Path) -> dict[int, float]:
    if not log.exists():
        return {}
    acks = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a client killed mid-write leaves at most a partial last line
            acks[int(parts[0])] = float(parts[1])
    return acks


def wait_for_acks(log: Path, start: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the client started at batch ``start`` has had one acknowledged (or has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(j >= start for j in acknowledged(log)):
            return
        time.sleep(0.01)


def pulse_counts(xbar, model) -> np.ndarray:
    return model.pulse_number(xbar.read_all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--kills", type=int, default=3, help="times client 0 is killed")
    parser.add_argument("--corrupt", type=float, default=0.01)
    parser.add_argument("--drop-byte", type=float, default=0.01)
    parser.add_argument("--drop-reply", type=float, default=0.02)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.01,
        help="seconds the service waits before each reply (after applying): a kill then often "
        "lands between a batch applied and its acknowledgement",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (2 <= args.clients <= 64 and 1 <= args.batches <= 2000 and 0 <= args.kills <= 50):
        raise SystemExit("--clients 2..64, --batches 1..2000, --kills 0..50")

    from memristor_hil.drivers import VisaCrossbar

    from memristor_hil import PowerLaw, PulseBatch

    rng = np.random.default_rng(args.seed)
    rows, cols = 2, args.batches * CELLS
    url = f"emulator://?rows={rows}&cols={cols}&seed={args.seed}"
    faults = [
        f"--corrupt={args.corrupt}",
        f"--drop-byte={args.drop_byte}",
        f"--drop-reply={args.drop_reply}",
        f"--fault-seed={args.seed}",
        f"--latency={args.latency}",
    ]
    service, where = start_service(url, "--tcp", "127.0.0.1:0", *faults)
    host, port = where.rsplit(":", 1)
    resource = f"TCPIP::{host}::{port}::SOCKET"
    model = PowerLaw()
    try:
        with VisaCrossbar(resource, timeout=0.5, retries=20) as xbar:
            # one pulse everywhere first: every state is past n_min, so n then grows by exactly
            # the pulses applied
            every = np.arange(rows * cols)
            xbar.apply(PulseBatch.from_flat(every, cols, pulses=1))
            before = pulse_counts(xbar, model)
        with TemporaryDirectory() as tmp:
            logs = [Path(tmp) / f"client{c}.log" for c in range(args.clients)]
            procs = {
                c: spawn_client(resource, c, 0, args.batches, logs[c]) for c in range(args.clients)
            }
            t0 = time.monotonic()
            in_flight: list[int] = []
            start0 = 0  # where client 0's current process started
            for _ in range(args.kills):
                # once the (re)started client is pulsing, at a random moment of its stream
                wait_for_acks(logs[0], start0, procs[0])
                time.sleep(float(rng.uniform(0.0, 0.5)))
                victim = procs[0]
                if victim.poll() is not None:
                    break  # it finished before it could be killed again
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                nxt = max(max(acknowledged(logs[0]), default=-1) + 1, start0)
                if nxt < args.batches:
                    in_flight.append(nxt)  # maybe sent, never acknowledged: skip it
                    start0 = nxt + 1
                    procs[0] = spawn_client(resource, 0, start0, args.batches, logs[0])
            for proc in procs.values():
                proc.wait(timeout=600)
            elapsed = time.monotonic() - t0
            acks = [acknowledged(log) for log in logs]
        with VisaCrossbar(resource, timeout=0.5, retries=20, monitor=True) as xbar:
            after = pulse_counts(xbar, model)
        rss = peak_rss_mb(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()

    gained = (after - before).reshape(rows, cols)
    lost = double = 0
    flight_counts = {0: 0, 1: 0}
    for j in range(args.batches):
        per_cell = gained[0, j * CELLS : (j + 1) * CELLS] / pulses_of(j)
        times = int(np.rint(per_cell.mean()))
        if not np.allclose(per_cell, times, atol=1e-6):
            raise SystemExit(f"batch {j}: its cells disagree on how often it was applied")
        if j in acks[0]:
            lost += times == 0
            double += times > 1
        elif j in in_flight:
            double += times > 1
            flight_counts[min(times, 1)] += 1
        elif times:
            double += 1  # never sent, yet applied
    if np.any(np.abs(gained[1]) > 1e-6):
        raise SystemExit("a row no batch pulses has changed")
    latencies = np.array([t for a in acks for t in a.values()]) * 1e3
    total = sum(len(a) for a in acks)
    pulse_acks = len(acks[0])
    print(
        f"soak: {args.clients} clients x {args.batches} batches, client 0 killed "
        f"{len(in_flight)} time(s), faults corrupt={args.corrupt} drop-byte={args.drop_byte} "
        f"drop-reply={args.drop_reply} latency={args.latency} s (seed {args.seed}), "
        f"{elapsed:.1f} s"
    )
    print(
        f"batches acknowledged       {total} ({pulse_acks} pulse batches of client 0, "
        f"{total - pulse_acks} read batches of {args.clients - 1} observers)"
    )
    print(f"batches lost               {lost}   (must be 0)")
    print(f"batches double-applied     {double}   (must be 0)")
    print(
        f"in flight at a kill        {len(in_flight)}: applied once {flight_counts[1]}, "
        f"not applied {flight_counts[0]} (either is correct)"
    )
    print(f"service peak RSS           {rss:.0f} MB")
    print(
        f"latency per batch          p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p99 {np.percentile(latencies, 99):.1f} ms (includes retries after injected faults)"
    )
    return 0 if lost == 0 and double == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-client"]:
        resource, client, start, batches, log = sys.argv[2:7]
        run_client(resource, int(client), int(start), int(batches), Path(log))
        sys.exit(0)
    sys.exit(main())
