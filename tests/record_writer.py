"""Helper process for the kill -9 test: apply batches through a RecordingCrossbar forever.

Usage: python record_writer.py RECORD_PATH SYNCHRONOUS
Prints the index of each batch once ``apply`` has returned (the batch is acknowledged).
Batch ``i`` is :func:`batch_for` ``(i)``, so the test can rebuild what was sent.
"""

import sys

import numpy as np

from memristor_hil import PulseBatch, open_crossbar
from memristor_hil.lab.recording import RecordingCrossbar

URL = "emulator://?rows=30&cols=40&seed=5&sigma=0.15"


def batch_for(i: int) -> PulseBatch:
    rng = np.random.default_rng(i)
    cells = np.sort(rng.choice(1200, size=300, replace=False))
    return PulseBatch.from_flat(cells, 40, pulses=rng.integers(1, 20, size=300))


def main() -> None:
    path, synchronous = sys.argv[1], sys.argv[2]
    xbar = RecordingCrossbar(open_crossbar(URL), path, url=URL, synchronous=synchronous)
    i = 0
    while True:
        xbar.apply(batch_for(i), read_back=True)
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main()
