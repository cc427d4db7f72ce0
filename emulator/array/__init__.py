"""The emulator as one circuit: a passive crossbar's nodal model (:mod:`.circuit`)."""

from .circuit import NodalSystem, Nodes, Wiring

__all__ = ["NodalSystem", "Nodes", "Wiring"]
