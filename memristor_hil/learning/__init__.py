"""The mPES learning rule for Nengo: rule type, builder, operator, kernels, device layouts.

Importing this package registers the builder with Nengo (as importing ``nengo`` registers
Nengo's own). The layers, top down:

- ``.rule``: :class:`mPES`, the ``LearningRuleType`` users put on a connection;
- ``.builder``: ``build_mpes``, which checks a connection, places its devices and adds it
  to its crossbar's operator;
- ``.crossbars``: how a built model shares, rewinds and closes the crossbars it uses;
- ``.operator``: ``SimmPES``, one per crossbar, sending each step's pulses as one batch;
- ``.kernels``: the operator's compiled loops;
- ``.layout``: where a connection's positive and negative devices sit;
- ``.nengo_internals``: the two places that reach past Nengo's public builder API.
"""

from .builder import BuiltmPES, build_mpes
from .layout import Block, Layout
from .rule import DEFAULT_CROSSBAR, DEFAULT_MODEL, mPES

__all__ = [
    "DEFAULT_CROSSBAR",
    "DEFAULT_MODEL",
    "Block",
    "BuiltmPES",
    "Layout",
    "build_mpes",
    "mPES",
]
