"""Reopening a saved emulator: the ideal crossbar or the array, whichever wrote the file."""

from __future__ import annotations

import os

import numpy as np

from memristor_hil.pulses import SafetyLimits

from .crossbar import EmulatedCrossbar

__all__ = ["crossbar_from_state"]


def crossbar_from_state(
    path: str | os.PathLike[str], limits: SafetyLimits | None = None
) -> EmulatedCrossbar:
    """The crossbar a :meth:`~EmulatedCrossbar.save_state` file describes: an
    :class:`~emulator.array.ArrayCrossbar` (same circuit, schemes and effects) when one wrote
    it, else an :class:`EmulatedCrossbar`."""
    with np.load(path, allow_pickle=False) as data:
        array = "array_meta" in data.files
    if array:
        from .array.crossbar import ArrayCrossbar  # scipy.sparse: only for an array

        return ArrayCrossbar.from_state(path, limits)
    return EmulatedCrossbar.from_state(path, limits)
