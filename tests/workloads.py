"""A seeded workload for the end-to-end tests, to push through the emulator service (started
with the plugin's fixtures, ``pytest_memristor_hil``) and compare with the in-process emulator.

``run_workload`` is the hook for other workloads: anything that drives a Crossbar and returns
what it saw (e.g. a seeded mPES Nengo run returning its weights) can be compared the same way
between the in-process emulator and the service.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from memristor_hil import Crossbar, PulseBatch
from memristor_hil.testing import EmulatorService

#: The emulated crossbar every end-to-end test uses: device variability and per-pulse noise on,
#: so that any difference in batch order or noise draws between the paths shows up.
ROWS, COLS = 12, 10
EMULATOR_URL = f"emulator://?rows={ROWS}&cols={COLS}&seed=7&sigma=0.15&noise=0.05"


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


#: The reference firmware's host build, with sanitizers (built by ``firmware_command``).
FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"


#: Conformance (docs/protocol.md, section 10): a command that serves another implementation
#: of the protocol on a new pseudo-terminal, run instead of the reference firmware by every
#: "firmware" test; and a text its identity contains.
BOARD = os.environ.get("MEMRISTOR_HIL_BOARD", "")
BOARD_IDENTITY = os.environ.get("MEMRISTOR_HIL_BOARD_IDENTITY", "xbar-firmware")


def firmware_command() -> list[str]:
    """The board under test (``MEMRISTOR_HIL_BOARD``), else the sanitizer (ASan + UBSan)
    build of the firmware's host program, built if needed."""
    if BOARD:
        return shlex.split(BOARD)
    binary = FIRMWARE_DIR / "build" / "xbar-host-asan"
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "asan"], check=True, timeout=600)
    return [str(binary)]


class FirmwareProcess(EmulatorService):
    """The C firmware serving a pseudo-terminal, driven like the plugin's EmulatorService.

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
        super().__init__(*argv, url=url, env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})

    def _launch(self) -> None:
        self.proc = subprocess.Popen(
            [*firmware_command(), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self._env,
            start_new_session=True,
        )
        self.where = self._first_line(timeout=60)

    def assert_clean(self) -> None:
        """No sanitizer report in the firmware's stderr."""
        text = self.log
        assert "Sanitizer" not in text and "runtime error" not in text, text
