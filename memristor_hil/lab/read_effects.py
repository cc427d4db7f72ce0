"""What a characterization says of the array beyond each device's power law.

Two of the emulator's array options (``emulator://?read_noise=...&stuck=...``, docs/array.md)
leave a mark a pulse train can see:

- **read noise**: two reads of a device with no pulse between them differ by read noise
  alone (``characterize`` reads the untouched devices twice for this). With a relative noise
  ``s`` per read, the relative difference of a pair has standard deviation ``s * sqrt(2)``;
  the estimate is robust (the median absolute deviation), so a glitch or a stuck device does
  not inflate it.
- **stuck devices**: a device that a train moving its neighbours far beyond the read noise
  leaves where it was.

Drift, the converters and the wires need other measurements (reads over time without pulses,
a sweep of the read voltage, a known pattern), so they are not estimated here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["READ_RESOLUTION", "ReadEffects", "read_effects"]

#: Relative differences below this are the readings' own rounding, not noise (a float32
#: reading carries about 6e-8 of its value; the instruments' own resolution is coarser)
READ_RESOLUTION = 1e-6

#: A device is stuck when the mean of its last quarter of readings differs from the mean of its
#: first quarter by less than this many standard errors of that difference under read noise
#: alone (or by less than the resolution when there is no noise); a pulsed device's readings
#: fall (SET) from one quarter to the next
STUCK_SIGMAS = 5.0

#: ... and only when the median device's change is this many times that threshold: a train
#: too short to move good devices beyond the noise cannot tell a stuck device
DECISIVE = 3.0

_MAD_TO_SIGMA = 1.4826  # the median absolute deviation of a normal variable, in its sigmas


class ReadEffects(NamedTuple):
    """Read noise and stuck devices, as far as a characterization's readings show them.

    Attributes
    ----------
    read_noise : float or None
        Relative standard deviation of one reading (the emulator's ``read_noise``); 0 when
        repeated reads agree to :data:`READ_RESOLUTION`; None when no device was read twice
        without a pulse between.
    pairs : int
        The repeated-read pairs the read noise rests on.
    stuck : numpy.ndarray or None
        Row-major indices of the devices no pulse moved; None when the train was too short
        to tell.
    devices : int
        Devices in the readings.
    """

    read_noise: float | None
    pairs: int
    stuck: np.ndarray | None
    devices: int

    @property
    def stuck_fraction(self) -> float | None:
        """The fraction of the devices that are stuck (the emulator's ``stuck``)."""
        if self.stuck is None or not self.devices:
            return None
        return self.stuck.size / self.devices

    def url_options(self) -> str:
        """``read_noise=...&stuck=...`` for an emulator like the measured array: the effects
        found (a zero or unknown one is left out, so the emulator keeps its ideal default)."""
        options = []
        if self.read_noise:
            options.append(f"read_noise={self.read_noise:.3g}")
        if self.stuck_fraction:
            options.append(f"stuck={self.stuck_fraction:.3g}")
        return "&".join(options)


def read_effects(data: dict[int, tuple[np.ndarray, np.ndarray]]) -> ReadEffects:
    """Estimate read noise and find stuck devices in ``{cell: (pulses, resistance)}``.

    Parameters
    ----------
    data : dict
        Each device's readings in order with the pulse count it had reached
        (:meth:`.Readings.by_cell`): consecutive readings at the same count are repeated reads.
    """
    differences = []
    for pulses, resistance in data.values():
        same = pulses[1:] == pulses[:-1]
        first, second = resistance[:-1][same], resistance[1:][same]
        differences.append((second - first) / (0.5 * (first + second)))
    pairs = int(sum(d.size for d in differences))
    noise = None
    if pairs:
        d = np.concatenate(differences)
        noise = _MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2)
        noise = noise if noise >= READ_RESOLUTION else 0.0
    return ReadEffects(noise, pairs, _stuck(data, noise or 0.0), len(data))


def _stuck(data: dict[int, tuple[np.ndarray, np.ndarray]], noise: float) -> np.ndarray | None:
    """The pulsed devices whose readings do not move beyond what the noise explains, or None
    when the train does not move the median device decisively beyond that."""
    cells, changes, thresholds = [], [], []
    for cell, (pulses, resistance) in data.items():
        quarter = pulses.size // 4
        if quarter < 1 or not pulses[-1] > pulses[0]:
            continue
        first, last = resistance[:quarter].mean(), resistance[-quarter:].mean()
        cells.append(cell)
        changes.append(abs(first - last) / np.median(resistance))
        # the standard error of a difference of two means of `quarter` noisy readings
        thresholds.append(max(STUCK_SIGMAS * noise * np.sqrt(2 / quarter), READ_RESOLUTION))
    if not cells:
        return None
    change, threshold = np.asarray(changes), np.asarray(thresholds)
    if not np.median(change / threshold) > DECISIVE:
        return None
    return np.asarray(cells, dtype=np.int64)[change < threshold]
