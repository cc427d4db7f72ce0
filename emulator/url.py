"""``emulator://`` URLs: an in-process EmulatedCrossbar described by query parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memristor_hil.powerlaw import PowerLaw, Variability
from memristor_hil.url_options import boolean, query_options, read_options

from .array.url import ARRAY_FIELDS, array_from_options
from .crossbar import EmulatedCrossbar

__all__ = ["open_emulator", "model_from_options"]

_FLOAT_OPTIONS = PowerLaw.float_fields()
_SIGMA_OPTIONS = {"sigma_r0": "r0", "sigma_r1": "r1", "sigma_a": "a", "sigma_r_init": "r_init"}
_KNOWN = (
    "rows",
    "cols",
    "seed",
    "params",
    "sigma",
    "reset",
    "dtype",
    *_FLOAT_OPTIONS,
    *_SIGMA_OPTIONS,
)


def _parameter_file(path: Path) -> dict[str, Any]:
    """The JSON of a ``params=FILE`` parameter file, with errors that say what the file is."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"params={path}: no such parameter file (write one with 'memristor-hil fit RECORD')"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"params={path} is not a parameter file (JSON): {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"params={path} is not a parameter file: expected a JSON object")
    return data


def model_from_options(options: dict[str, Any]) -> PowerLaw:
    """A PowerLaw from URL-style options; ``params=FILE`` loads a parameter file first.

    The parameter file is JSON: ``{"model": {PowerLaw fields}}`` (as ``memristor-hil fit``
    writes) or the PowerLaw fields alone. Options given beside it override it.
    """
    fields: dict[str, Any] = {}
    if options.get("params"):
        data = _parameter_file(Path(options["params"]))
        fields.update(data.get("model", data))
    for name in _FLOAT_OPTIONS:
        if name in options:
            fields[name] = float(options[name])
    if "reset" in options:
        try:
            fields["reset"] = boolean(options["reset"])
        except ValueError as exc:
            raise ValueError(
                f"bad option reset={options['reset']!r} for emulator://: {exc}"
            ) from None
    if "dtype" in options:
        fields["dtype"] = str(options["dtype"])
    variability = fields.get("variability") or {}
    if isinstance(variability, Variability):
        variability = variability.__dict__
    variability = dict(variability)
    if "sigma" in options:
        variability = dict.fromkeys(("r0", "r1", "a", "r_init"), float(options["sigma"]))
    for option, name in _SIGMA_OPTIONS.items():
        if option in options:
            variability[name] = float(options[option])
    fields["variability"] = Variability(**variability)
    return PowerLaw.from_dict(fields)


def open_emulator(url: str, **overrides: Any) -> EmulatedCrossbar:
    """Open ``emulator://?rows=R&cols=C&seed=S&...``.

    Query parameters: ``rows``, ``cols`` (default 100 each), ``seed``; the PowerLaw parameters
    ``r0``, ``r1``, ``a``, ``v_ref``, ``a_slope``, ``r_init``, ``noise``, ``reset``, ``dtype``;
    variability as ``sigma`` (all parameters) or ``sigma_r0``, ``sigma_r1``, ``sigma_a``,
    ``sigma_r_init``; and ``params=FILE`` for a fitted parameter file. Keyword arguments
    override the query; the keyword ``model=PowerLaw(...)`` gives the whole device model
    instead of its fields.

    The array options (``wire``, ``row_wire``, ``col_wire``, ``row_end``, ``col_end``,
    ``read``, ``write``, ``group``, ``v_read``, ``threshold``, ``read_noise``, ``drift``,
    ``drift_sigma``, ``stuck``, ``adc_bits``, ``adc_range``, ``dac_step``, ``tick``; see
    ``docs/array.md``) open an :class:`~.ArrayCrossbar`; without them the
    crossbar is the ideal :class:`.EmulatedCrossbar`.
    """
    _, options = query_options(url)
    options.update(overrides)
    array = array_from_options(read_options("emulator", options, ARRAY_FIELDS, strict=False))
    model = options.pop("model", None)
    if model is not None:
        if not isinstance(model, PowerLaw):
            raise TypeError(f"model= takes a PowerLaw, got {type(model).__name__}")
        fields = sorted(set(options) - {"rows", "cols", "seed"})
        if fields:
            raise ValueError(f"give the device model as model= or as options {fields}, not both")
    unknown = sorted(set(options) - set(_KNOWN))
    if unknown:
        known = ", ".join((*_KNOWN, *ARRAY_FIELDS))
        raise ValueError(f"unknown emulator:// options {unknown}; known: {known}")
    try:
        rows = int(options.get("rows", 100))
        cols = int(options.get("cols", 100))
        seed = None if options.get("seed") in (None, "") else int(options["seed"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rows, cols and seed must be integers in {url!r}: {exc}") from None
    if model is None:
        model = model_from_options(options)
    if array is None:
        return EmulatedCrossbar(rows, cols, model, seed=seed)
    from .array.crossbar import ArrayCrossbar  # scipy.sparse: only for an array

    return ArrayCrossbar(rows, cols, model, seed=seed, array=array[0], effects=array[1])
