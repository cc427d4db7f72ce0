"""The reference firmware's device model (firmware/src/hal_model.c) in Python scalars.

Both evaluate the power law with the C library's ``pow`` (``math.pow`` here), operation for
operation, so their results agree bit for bit (docs/protocol.md, "Bit-exactness"). NumPy's
vectorised ``np.power`` may differ from ``pow`` in the last bit, which is why the firmware is
compared with this model and not with the emulator.
"""

from __future__ import annotations

import math

import numpy as np

from memristor_hil import Crossbar, PulseBatch
from memristor_hil.pulses import Cells

R0, R1, A, V_REF, A_SLOPE, R_INIT = 200.0, 2.3e8, -0.146, 0.1, -0.53, 1e8


class ReferenceCrossbar(Crossbar):
    """A nominal power-law crossbar (no variability, no noise), scalar libm arithmetic."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__((rows, cols), identity="reference model")
        top = (R1 - R0) / R1
        n0 = math.pow(min((R_INIT - R0) / R1, top), 1.0 / A)
        self._n_min = math.pow(top, 1.0 / A)
        self._n = [n0] * (rows * cols)

    def _apply(self, batch: PulseBatch, cells: Cells, read_back: bool) -> np.ndarray | None:
        pulses = np.broadcast_to(batch.pulses, len(cells.flat))
        volts = np.broadcast_to(np.asarray(batch.voltage, float), len(cells.flat))
        for i, cell in enumerate(cells.flat.tolist()):
            k = 1.0 * int(pulses[i])
            ratio = A / (A + A_SLOPE * (float(volts[i]) - V_REF))
            x = self._n[cell]
            if x < self._n_min:
                x = self._n_min
            if ratio == 1.0:
                x = x + k
            else:
                x = math.pow(math.pow(x, ratio) + k, 1.0 / ratio)
            self._n[cell] = x
        return self._read(cells.flat) if read_back else None

    def _read(self, flat: np.ndarray) -> np.ndarray:
        return np.array([R0 + R1 * math.pow(self._n[c], A) for c in flat.tolist()])
