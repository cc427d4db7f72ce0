"""The two places where mPES reaches past Nengo's public builder API, and nowhere else.

1. A connection's weights must start at the devices' weights, but Nengo builds the weight
   signal (from ``transform``) before the learning rule and offers no setter for a built
   signal's initial value: :func:`set_initial_value` writes ``Signal._initial_value``.
2. Nengo's generic ``build_learning_rule`` adds ``Copy(delta, weights, inc=True)`` for a rule
   that modifies weights; mPES sets the weights from its devices instead, so
   :func:`remove_weight_increment` takes that one operator out again.

Checked against Nengo 4.0.0 and 4.1.0 (``nengo/builder/signal.py``,
``nengo/builder/learning_rules.py``). Both functions fail loudly, naming the Nengo version,
when Nengo's internals no longer look as expected, and ``tests/test_mpes.py`` builds a model
through both, so a Nengo change shows up as a failing test, never as a silently unlearned
connection.
"""

from __future__ import annotations

from typing import Any

import nengo
import numpy as np
from nengo.builder.operator import Copy
from nengo.builder.signal import Signal

__all__ = ["remove_weight_increment", "set_initial_value"]

_CHECKED = "4.0.0 and 4.1.0"


class NengoInternalsChanged(RuntimeError):
    """Nengo's builder no longer has the internals mPES relies on."""


def set_initial_value(signal: Signal, value: np.ndarray) -> None:
    """Give a built signal a new initial value of the same shape and dtype."""
    if not hasattr(signal, "_initial_value"):
        raise NengoInternalsChanged(
            f"nengo {nengo.__version__}: Signal has no _initial_value (mPES was checked "
            f"with Nengo {_CHECKED}); it cannot set the connection's initial weights"
        )
    value = np.ascontiguousarray(value, dtype=signal.dtype)
    if value.shape != signal.shape:
        raise ValueError(f"initial value of shape {value.shape} for a {signal.shape} signal")
    value.setflags(write=False)
    signal._initial_value = value


def remove_weight_increment(model: Any, rule: Any) -> None:
    """Remove the generic ``weights += delta`` copy that Nengo added for ``rule``."""
    delta = model.sig[rule].get("delta")
    for index in range(len(model.operators) - 1, -1, -1):
        op = model.operators[index]
        if isinstance(op, Copy) and op.src is delta:
            del model.operators[index]
            return
    raise NengoInternalsChanged(
        f"nengo {nengo.__version__}: no Copy(delta, weights, inc=True) was built for "
        f"{rule} (mPES was checked with Nengo {_CHECKED}); the weights would drift from "
        "the devices"
    )
