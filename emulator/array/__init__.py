"""The emulator as one circuit: a passive crossbar's nodal model (:mod:`.circuit`), reads
(:mod:`.measure`) and writes (:mod:`.writes`) through it, the options that describe it
(:mod:`.options`), and the crossbar that puts them together (:mod:`.crossbar`)."""

from .circuit import NodalSystem, Nodes, Wiring
from .crossbar import ArrayCrossbar
from .options import READ_SCHEMES, WRITE_SCHEMES, ArrayOptions, DeviceEffects

__all__ = [
    "READ_SCHEMES",
    "WRITE_SCHEMES",
    "ArrayCrossbar",
    "ArrayOptions",
    "DeviceEffects",
    "NodalSystem",
    "Nodes",
    "Wiring",
]
