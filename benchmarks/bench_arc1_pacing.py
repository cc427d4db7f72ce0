"""What the vendor's masked-read pacing costs: a read-back of n cells from the emulated ArC ONE.

ArC ONE's vendor software sends a masked read's ``w b`` pairs one at a time, each after the
previous value arrived (libarc1 ``modules/readops.py`` ``ReadMasked``), and so does
``arc1://``. This times ``read`` of n cells through the driver (paced) against the same bytes
sent at once, over a pseudo-terminal to ``memristor-hil emulate --serial --dialect arc1`` in
its own process. On USB serial a round trip costs at least one 1 ms frame, so real hardware
pays about 1 ms per cell more than the pty shows (unverified on hardware).

Usage::

    python benchmarks/bench_arc1_pacing.py
"""

from __future__ import annotations

import time

import numpy as np
import serial
from memristor_hil.drivers.arc1 import encode_masked_read

from memristor_hil import open_crossbar
from memristor_hil.testing import EmulatorService

URL = "emulator://?rows=32&cols=32&seed=1"
REPEATS = 5


def _at_once(port: str, request: bytes, size: int) -> float:
    """Seconds for the whole masked read written at once (the pre-pacing driver's way)."""
    link = serial.serial_for_url(port, timeout=2.0)
    try:
        start = time.perf_counter()
        for _ in range(REPEATS):
            link.write(request)
            if len(link.read(size)) != size:
                raise TimeoutError("the emulated ArC ONE did not answer")
        return (time.perf_counter() - start) / REPEATS
    finally:
        link.close()


def main() -> int:
    service = EmulatorService("--serial", "--dialect", "arc1", url=URL)
    sizes = (1, 32, 256, 1024)
    try:
        fast = "rows=32&cols=32&reset_delay=0&write_delay=0"
        paced = []
        with open_crossbar(f"arc1://{service.where}?{fast}", record=False) as xbar:
            for n in sizes:
                rows, cols = np.divmod(np.arange(n), 32)
                start = time.perf_counter()
                for _ in range(REPEATS):
                    xbar.read(rows, cols)
                paced.append((time.perf_counter() - start) / REPEATS)
        print(f"{'cells':>6} {'paced ms':>10} {'us/cell':>8} {'at once ms':>11}")
        for n, took in zip(sizes, paced, strict=True):
            rows, cols = np.divmod(np.arange(n), 32)
            burst = _at_once(service.where, encode_masked_read(32, 32, rows + 1, cols + 1), 4 * n)
            print(f"{n:>6} {took * 1e3:>10.2f} {took / n * 1e6:>8.1f} {burst * 1e3:>11.2f}")
    finally:
        service.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
