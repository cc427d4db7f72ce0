"""The ``emulator://`` options that describe the array (circuit, schemes, device effects).

Read with :func:`memristor_hil.url_options.read_options`; :func:`array_from_options` turns
the values into :class:`~.options.ArrayOptions` and :class:`~.options.DeviceEffects`, or None
when none was given (then the emulator stays the ideal one, unchanged).
"""

from __future__ import annotations

import re
from typing import Any

from memristor_hil.url_options import Option

from .options import ArrayOptions, DeviceEffects, Wiring

__all__ = ["ARRAY_FIELDS", "array_from_options"]

_WIRING = ("row_wire", "col_wire", "row_end", "col_end")
_ARRAY = ("read", "write", "group", "v_read", "threshold")
_EFFECTS = (
    "read_noise",
    "drift",
    "drift_sigma",
    "stuck",
    "adc_bits",
    "adc_range",
    "dac_step",
    "tick",
)
#: The options, each read as its type (an option not given reads as None).
ARRAY_FIELDS: dict[str, Option[Any]] = {
    "wire": Option(float),
    **{name: Option(float) for name in _WIRING},
    "read": Option(str),
    "write": Option(str),
    "group": Option(str),
    "v_read": Option(float),
    "threshold": Option(float),
    **{name: Option(float) for name in _EFFECTS},
    "adc_bits": Option(int),
}


def array_from_options(values: dict[str, Any]) -> tuple[ArrayOptions, DeviceEffects] | None:
    """The array and device effects the options describe (None when none is given).

    ``wire`` sets both ``row_wire`` and ``col_wire`` (either given beside it wins).

    Raises
    ------
    ValueError
        Naming the option, for an unknown scheme, a negative or non-finite resistance, a
        fraction outside [0, 1], ``adc_bits`` < 1, and so on.
    """
    given = {name: value for name, value in values.items() if value is not None}
    if not given:
        return None
    try:
        wire = given.pop("wire", None)
        if wire is not None:
            Wiring(row_wire=wire)  # checked under its own name first
            given.setdefault("row_wire", wire)
            given.setdefault("col_wire", wire)
        wiring = Wiring(**{name: given[name] for name in _WIRING if name in given})
        array = ArrayOptions(wiring, **{name: given[name] for name in _ARRAY if name in given})
        effects = DeviceEffects(**{name: given[name] for name in _EFFECTS if name in given})
    except ValueError as exc:
        text = str(exc)
        if wire is not None and text.startswith("row_wire="):
            text = "wire=" + text.removeprefix("row_wire=")
        named = re.match(r"(\w+=\S+) (.*)", text, re.DOTALL)
        if named:  # url_options' wording: "bad option NAME=VALUE for emulator://: WHY"
            raise ValueError(f"bad option {named[1]} for emulator://: {named[2]}") from None
        raise ValueError(f"bad options for emulator://: {text}") from None
    return array, effects
