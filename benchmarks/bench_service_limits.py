"""The emulator service's limits, measured: memory under the largest legal batches, many
concurrent clients, and what an idle or non-reading client costs the others.

Prints, each measured in this run:

1. peak RSS of a 1000x1000 service (device variability on) after max-size batches: every cell
   with its own random voltage (read back), then every cell at one voltage, then N batches at
   N distinct voltages (target: under 600 MB);
2. the time until all of 50 concurrent ``*IDN?`` clients are answered (target: 1 s);
3. a reading client's ``*IDN?`` round trip, median and worst, alone and then beside a client
   that sent 200 ``XBAR:ALL?`` (720 kB replies each) and reads none of them, and beside 50
   idle connections (target: delayed by less than 50 ms).

Usage::

    python benchmarks/bench_service_limits.py [--skip-memory] [--voltages N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from memristor_hil.testing import EmulatorService


def start_service(url: str, *args: str) -> tuple[subprocess.Popen, int]:
    """The service process and the TCP port it announced."""
    service = EmulatorService("--quiet", *args, url=url)
    return service.proc, service.port


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        try:
            chunk = sock.recv(4096)
        except OSError:  # refused or reset: not answered
            break
        if not chunk:
            break
        line += chunk
    return line


def memory(voltages: int) -> None:
    from memristor_hil.drivers import VisaCrossbar

    from memristor_hil import PulseBatch

    proc, port = start_service("emulator://?rows=1000&cols=1000&seed=1&sigma=0.15", "--tcp=:0")
    rng = np.random.default_rng(0)
    every = np.arange(1_000_000)
    try:
        start = peak_rss_mb(proc.pid)
        with VisaCrossbar(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=120) as xbar:
            t0 = time.perf_counter()
            v = rng.uniform(0.05, 0.3, every.size)
            xbar.apply(PulseBatch.from_flat(every, 1000, voltage=v), read_back=True)
            per_cell = time.perf_counter() - t0
            after_per_cell = peak_rss_mb(proc.pid)
            xbar.apply(PulseBatch.from_flat(every, 1000, voltage=0.2), read_back=True)
            after_uniform = peak_rss_mb(proc.pid)
            few = every[:100]
            for v in rng.uniform(0.05, 0.3, voltages):
                xbar.apply(PulseBatch.from_flat(few, 1000, voltage=float(v)))
            after_voltages = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    print("1. service memory, 1000x1000 crossbar with device variability (sigma=0.15)")
    print(f"   after start-up                                    {start:7.0f} MB")
    print(
        f"   10^6 cells, 10^6 random voltages, read back      {after_per_cell:7.0f} MB peak "
        f"({per_cell:.1f} s)"
    )
    print(f"   10^6 cells at one voltage, read back             {after_uniform:7.0f} MB peak")
    print(
        f"   {voltages} batches at {voltages} distinct voltages             "
        f"{after_voltages:7.0f} MB peak   (target < 600 MB)"
    )


def clients() -> None:
    from memristor_hil.protocol import messages as wire
    from memristor_hil.protocol.messages import Op
    from memristor_hil.protocol.scpi import encode_command

    proc, port = start_service("emulator://?rows=300&cols=300&seed=1", "--tcp=:0")
    try:
        socks = [connect(port) for _ in range(50)]
        t0 = time.perf_counter()
        for sock in socks:
            sock.sendall(b"*IDN?\n")
        answered = sum(b"EmulatedCrossbar" in read_line(sock) for sock in socks)
        all_answered = time.perf_counter() - t0
        for sock in socks:
            sock.close()
        print(
            f"2. 50 concurrent *IDN? clients: {answered} of 50 answered, within "
            f"{all_answered * 1e3:.1f} ms   (target: all within 1 s)"
        )

        def round_trips(sock: socket.socket, count: int = 50) -> np.ndarray:
            times = []
            for _ in range(count):
                t = time.perf_counter()
                sock.sendall(b"*IDN?\n")
                read_line(sock)
                times.append(time.perf_counter() - t)
            return np.array(times) * 1e3

        reader = connect(port)
        alone = round_trips(reader)
        hog = connect(port)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(
            b"".join(
                encode_command(Op.READ_ALL, wire.encode_request(s, Op.READ_ALL, b""))
                for s in range(1, 201)
            )
        )
        time.sleep(0.5)
        beside_hog = round_trips(reader)
        idle = [connect(port) for _ in range(50)]
        beside_idle = round_trips(reader)
        for sock in [hog, reader, *idle]:
            sock.close()
        rss = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    print("3. a reading client's *IDN? round trip (50 each), 300x300 service")
    for name, t in (
        ("alone", alone),
        ("beside a client not reading 200 XBAR:ALL?", beside_hog),
        ("beside that and 50 idle connections", beside_idle),
    ):
        print(f"   {name:44} median {np.median(t):6.2f} ms, worst {t.max():6.2f} ms")
    delay = max(np.max(beside_hog), np.max(beside_idle)) - np.median(alone)
    print(
        f"   worst delay caused: {delay:.1f} ms   (target < 50 ms); service peak RSS {rss:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1000x1000 part")
    parser.add_argument("--voltages", type=int, default=100)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_memory:
        memory(args.voltages)
    clients()
    return 0


if __name__ == "__main__":
    sys.exit(main())
