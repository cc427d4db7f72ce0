"""``open_crossbar(url)``: one string picks the backend, as pyserial's and VISA's URLs do.

Schemes map to ``"module:function"`` factories that take the parsed URL; they are imported only
when used, so opening an emulator never imports the hardware drivers.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .crossbar import Crossbar

__all__ = ["open_crossbar", "query_options", "register_scheme"]

_SCHEMES: dict[str, str] = {
    "emulator": "memristor_hil.emulator.url:open_emulator",
    "serial": "memristor_hil.drivers.serial:open_serial",
    "visa": "memristor_hil.drivers.visa:open_visa",
}


def register_scheme(scheme: str, factory: str) -> None:
    """Make ``open_crossbar`` accept ``scheme://...`` by calling ``factory`` (``"module:func"``)."""
    _SCHEMES[scheme] = factory


def open_crossbar(url: str, **options: Any) -> Crossbar:
    """Open the crossbar a URL names.

    Parameters
    ----------
    url : str
        ``emulator://?rows=..&cols=..&seed=..`` (more query options: see
        :func:`memristor_hil.emulator.url.open_emulator`), ``serial://<port or pyserial URL>``
        or ``visa://<VISA resource string>``.
    **options
        Backend options that override the URL's query parameters.

    Returns
    -------
    Crossbar
        An open crossbar; close it (or use ``with``) when done.

    Raises
    ------
    ValueError
        For an unknown scheme (the message names the known ones) or a bad option.
    """
    if not isinstance(url, str):
        raise TypeError(f"open_crossbar takes a URL string, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(
            f"{url!r} is not a crossbar URL: expected SCHEME://..., with SCHEME one "
            f"of {', '.join(sorted(_SCHEMES))}"
        )
    target = _SCHEMES.get(scheme.lower())
    if target is None:
        raise ValueError(
            f"unknown crossbar URL scheme {scheme!r} in {url!r}; known schemes: "
            f"{', '.join(sorted(_SCHEMES))}"
        )
    module_name, func_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    return factory(url, **options)


def query_options(url: str) -> tuple[SplitResult, dict[str, str]]:
    """Split a URL and return its query parameters as a dict (a repeated key is an error)."""
    parts = urlsplit(url)
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ValueError(f"query parameter {key!r} is given twice in {url!r}")
        options[key] = value
    return parts, options
