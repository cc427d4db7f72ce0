"""The crossbars a built model's mPES connections use: sharing, placement, rewinding, closing.

One :class:`CrossbarUse` exists per crossbar per built model. It records which cells each
connection occupies (so overlaps are refused at build time), takes a snapshot of the devices
before the first pulse, rewinds them when the simulation restarts from its first step, and
closes the crossbars the model opened itself when the simulator closes.

Closing: Nengo's ``Simulator.close()`` (also leaving a ``with nengo.Simulator(...)`` block)
drops the simulator's signal dictionary, the one object every operator's ``make_step`` is
given. :meth:`CrossbarUse.close_with` ties the owned crossbar's ``close()`` to that object's
lifetime, so the crossbar's outputs go to their safe state at ``sim.close()``, while the
drivers' transports (a pyvisa resource manager, a serial port) are still alive. A model that
is never simulated closes its crossbars when it is garbage-collected.
"""

from __future__ import annotations

import weakref
from typing import Any

from nengo.exceptions import BuildError, SimulationError

from ..crossbar import Crossbar
from .layout import Block

__all__ = ["CrossbarUse", "crossbar_uses"]


class CrossbarUse:
    """A crossbar as one built model uses it.

    Parameters
    ----------
    crossbar : Crossbar
        The open crossbar.
    owned : bool
        True when the model opened it (default emulator or URL); it is closed with the model.
    """

    def __init__(self, crossbar: Crossbar, owned: bool) -> None:
        self.crossbar = crossbar
        self.owned = owned
        self.regions: list[tuple[Block, str]] = []
        self.pulsed = False
        #: The SimmPES operator that pulses this crossbar (set by the builder).
        self.operator: Any = None
        self._snapshot = crossbar.snapshot() if crossbar.can_restore else None
        self._bound: set[int] = set()

    @property
    def restorable(self) -> bool:
        """True when the crossbar can return to its build-time state (an emulator)."""
        return self._snapshot is not None

    def claim(self, block: Block, owner: str) -> None:
        """Reserve ``block`` for ``owner``.

        Raises
        ------
        nengo.exceptions.BuildError
            If the block does not fit the crossbar or overlaps a block already claimed.
        """
        shape = self.crossbar.shape
        if not block.fits(shape):
            raise BuildError(
                f"{owner} needs crossbar cells {block}, which do not fit the "
                f"{shape[0]}x{shape[1]} crossbar {self.crossbar.identity!r}; choose a larger "
                "crossbar or another mPES(layout=...)"
            )
        for other, other_owner in self.regions:
            if block.overlaps(other):
                raise BuildError(
                    f"{owner} needs crossbar cells {block}, which overlap cells {other} of "
                    f"{other_owner} on the crossbar {self.crossbar.identity!r}; give the "
                    "connections layouts that do not overlap"
                )
        self.regions.append((block, owner))

    def rewind(self) -> None:
        """Return the devices to their build-time state if anything was pulsed since.

        Raises
        ------
        nengo.exceptions.SimulationError
            If devices were pulsed and the crossbar cannot be restored (hardware).
        """
        if not self.pulsed:
            return
        if self._snapshot is None:
            raise SimulationError(
                f"cannot reset the simulation: the devices of {self.crossbar.identity!r} were "
                "pulsed and this crossbar cannot return to its build-time state. Build a new "
                "Simulator to continue from the devices' present state."
            )
        self.crossbar.restore(self._snapshot)
        self.pulsed = False

    def close(self) -> None:
        """Close the crossbar if the model opened it (its outputs go to their safe state)."""
        if self.owned:
            self.crossbar.close()

    def close_with(self, signals: Any) -> None:
        """Close an owned crossbar when ``signals`` (a simulator's SignalDict) is released."""
        if self.owned and id(signals) not in self._bound:
            self._bound.add(id(signals))
            weakref.finalize(signals, self.close)


def crossbar_uses(model: Any) -> dict[Any, CrossbarUse]:
    """The model's crossbars in use, keyed by URL string or crossbar object id."""
    uses = getattr(model, "_mpes_crossbars", None)
    if uses is None:
        uses = {}
        model._mpes_crossbars = uses
        weakref.finalize(model, _close_owned, uses)
    return uses


def _close_owned(uses: dict[Any, CrossbarUse]) -> None:
    for use in uses.values():
        use.close()
