"""Helpers for the end-to-end tests: the emulator service as a real subprocess, and a seeded
workload to push through it.

``run_workload`` is the hook for other workloads: anything that drives a Crossbar and returns
what it saw (e.g. a seeded mPES Nengo run returning its weights) can be compared the same way
between the in-process emulator and the service.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from memristor_hil import Crossbar, PulseBatch

#: The emulated crossbar every end-to-end test uses: device variability and per-pulse noise on,
#: so that any difference in batch order or noise draws between the paths shows up.
ROWS, COLS = 12, 10
EMULATOR_URL = f"emulator://?rows={ROWS}&cols={COLS}&seed=7&sigma=0.15&noise=0.05"


class ServiceProcess:
    """``python -m memristor_hil emulate ...`` in its own process; kill() it when done."""

    def __init__(self, *args: str, url: str = EMULATOR_URL) -> None:
        self.args = [*args, "--url", url]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memristor_hil", "emulate", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.where = self._first_line(timeout=60)

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not line.endswith(b"\n"):
            self.kill()
            raise RuntimeError(f"emulate did not announce its port:\n{self.stderr}")
        return line.decode().strip()

    @property
    def serial_url(self) -> str:
        return f"serial://{self.where}"

    @property
    def visa_url(self) -> str:
        host, port = self.where.rsplit(":", 1)
        return f"visa://TCPIP::{host}::{port}::SOCKET"

    @property
    def port(self) -> int:
        return int(self.where.rsplit(":", 1)[1])

    @property
    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def workload(steps: int, seed: int = 0, rows: int = ROWS, cols: int = COLS) -> Iterator[tuple]:
    """A seeded mix of batches: ``(PulseBatch, read_back)`` pairs.

    Dense ascending batches (sent as bitmaps), random lists with repeated cells, per-cell pulse
    counts and per-cell voltages, with and without read-back.
    """
    rng = np.random.default_rng(seed)
    size = rows * cols
    for step in range(steps):
        kind = step % 4
        if kind == 0:  # dense, ascending: a bitmap on the wire
            flat = np.flatnonzero(rng.random(size) < 0.6)
            batch = PulseBatch.from_flat(flat, cols, pulses=int(rng.integers(1, 4)))
        elif kind == 1:  # a list, repeats allowed, per-cell counts
            flat = rng.integers(0, size, int(rng.integers(1, 40)))
            batch = PulseBatch.from_flat(flat, cols, pulses=rng.integers(0, 20, len(flat)))
        elif kind == 2:  # per-cell voltages
            flat = rng.choice(size, int(rng.integers(1, 30)), replace=False)
            batch = PulseBatch.from_flat(flat, cols, voltage=rng.uniform(0.05, 0.3, len(flat)))
        else:  # one cell, many pulses
            batch = PulseBatch.from_flat([int(rng.integers(size))], cols, pulses=1000)
        yield batch, bool(rng.random() < 0.75)


def run_workload(xbar: Crossbar, steps: int, seed: int = 0, start: int = 0) -> list[np.ndarray]:
    """Apply steps ``start..steps-1`` of :func:`workload`; returns every read-back and, last,
    the whole array."""
    seen = []
    for step, (batch, read_back) in enumerate(workload(steps, seed, *xbar.shape)):
        if step < start:
            continue
        result = xbar.apply(batch, read_back=read_back)
        if read_back:
            seen.append(result)
    seen.append(xbar.read_all())
    return seen


def assert_bitwise_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, f"result {i}: shape {a.shape} != {b.shape}"
        assert a.tobytes() == b.tobytes(), f"result {i} differs"


def state_file(tmp: Path) -> Path:
    return tmp / "xbar-state.npz"


#: The reference firmware's host build, with sanitizers (built by ``firmware_binary``).
FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"


def firmware_binary() -> Path:
    """The sanitizer (ASan + UBSan) build of the firmware's host program, built if needed."""
    binary = FIRMWARE_DIR / "build" / "xbar-host-asan"
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "asan"], check=True, timeout=600)
    return binary


class FirmwareProcess(ServiceProcess):
    """The C firmware serving a pseudo-terminal: the same interface as :class:`ServiceProcess`.

    Accepts the service's options that the firmware has (``--max-message 512``,
    ``--corrupt=0.01``, ...); ``--serial`` is implied and ``--url`` ignored (the firmware models
    nominal devices: compare it with ``reference_model.ReferenceCrossbar``).
    """

    def __init__(self, *args: str, url: str = EMULATOR_URL) -> None:
        argv: list[str] = []
        for arg in args:
            if arg == "--serial":
                continue
            argv += arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg]
        self.args = argv
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
        self.proc = subprocess.Popen(
            [str(firmware_binary()), *argv], stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self.where = self._first_line(timeout=60)

    def assert_clean(self) -> None:
        """No sanitizer report in the firmware's stderr."""
        text = self.stderr
        assert "Sanitizer" not in text and "runtime error" not in text, text
