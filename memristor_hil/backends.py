"""``open_crossbar(url)``: one string picks the backend, as pyserial's and VISA's URLs do.

This module is the scheme registry and nothing else. Each scheme names a ``"module:function"``
factory that takes the URL; the module is imported only when the scheme is used, so opening an
emulator never imports the hardware drivers. Backends do not import this module (they parse
their query with :mod:`memristor_hil.url_options`); they are named here, or by a package that
calls :func:`register_scheme`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .crossbar import Crossbar
from .lab.record_policy import RecordOption, default_record_path, take_record_option

__all__ = ["Scheme", "hardware_schemes", "open_crossbar", "register_scheme", "schemes"]


@dataclass(frozen=True)
class Scheme:
    """How ``open_crossbar`` opens one URL scheme.

    Attributes
    ----------
    factory : str
        ``"module:function"``; the function takes the URL and keyword options and returns an
        open :class:`~memristor_hil.Crossbar`.
    hardware : bool
        The scheme reaches real devices: ``open_crossbar`` records it by default, because a
        measurement on hardware cannot be repeated.
    sized : bool
        The backend takes ``rows`` and ``cols`` options (an emulator, whose shape is the
        caller's choice); ``open_crossbar(..., default_shape=...)`` fills them in when the URL
        names neither.
    """

    factory: str
    hardware: bool = False
    sized: bool = False


_SCHEMES: dict[str, Scheme] = {
    "emulator": Scheme("memristor_hil.emulator.url:open_emulator", sized=True),
    "serial": Scheme("memristor_hil.drivers.serial:open_serial", hardware=True),
    "visa": Scheme("memristor_hil.drivers.visa:open_visa", hardware=True),
    "arc1": Scheme("memristor_hil.drivers.arc1:open_arc1", hardware=True),
    "arc2": Scheme("memristor_hil.drivers.arc2:open_arc2", hardware=True),
    "smu": Scheme("memristor_hil.drivers.smu:open_smu", hardware=True),
}


def register_scheme(
    scheme: str, factory: str, *, hardware: bool = False, sized: bool = False
) -> None:
    """Make ``open_crossbar`` accept ``scheme://...`` by calling ``factory``.

    Parameters
    ----------
    scheme : str
        The URL scheme (case-insensitive).
    factory : str
        ``"module:function"``, imported when the scheme is first opened.
    hardware, sized : bool
        See :class:`.Scheme`.
    """
    _SCHEMES[scheme.lower()] = Scheme(factory, hardware=hardware, sized=sized)


def schemes() -> dict[str, Scheme]:
    """The registered schemes (a copy)."""
    return dict(_SCHEMES)


def hardware_schemes() -> frozenset[str]:
    """The schemes ``open_crossbar`` records by default."""
    return frozenset(name for name, scheme in _SCHEMES.items() if scheme.hardware)


def open_crossbar(
    url: str,
    *,
    record: RecordOption = None,
    default_shape: tuple[int, int] | None = None,
    **options: Any,
) -> Crossbar:
    """Open the crossbar a URL names, recording it when asked (and for hardware by default).

    Parameters
    ----------
    url : str
        ``emulator://?rows=..&cols=..&seed=..`` (more query options: see
        :func:`memristor_hil.emulator.url.open_emulator`), ``serial://<port or pyserial URL>``
        or ``visa://<VISA resource string>``. A ``record=PATH`` query parameter is taken
        out of the URL and works like the ``record`` keyword (the keyword wins).
    record : bool or path-like, optional
        Record every batch and read (:class:`~memristor_hil.lab.recording.RecordingCrossbar`):
        a path names a new record file; ``True`` uses
        ``memristor_hil.lab.record_policy.default_record_path``; ``False`` turns
        recording off. The default (None) records the hardware schemes
        (:func:`.hardware_schemes`) to the default path and nothing else.
    default_shape : tuple of int, optional
        ``(rows, cols)`` for a backend whose shape is the caller's choice (an emulator) when
        the URL gives neither; a device whose shape is fixed ignores it.
    **options
        Backend options that override the URL's query parameters.

    Returns
    -------
    Crossbar
        An open crossbar; close it (or use ``with``) when done. When recording, a
        ``RecordingCrossbar`` whose ``record.path`` says where the record is.

    Raises
    ------
    ValueError
        For an unknown scheme (the message names the known ones) or a bad option.
    """
    if not isinstance(url, str):
        raise TypeError(f"open_crossbar takes a URL string, got {type(url).__name__}")
    name, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(
            f"{url!r} is not a crossbar URL: expected SCHEME://..., with SCHEME one "
            f"of {', '.join(sorted(_SCHEMES))}"
        )
    scheme = _SCHEMES.get(name.lower())
    if scheme is None:
        raise ValueError(
            f"unknown crossbar URL scheme {name!r} in {url!r}; known schemes: "
            f"{', '.join(sorted(_SCHEMES))}"
        )
    url, record = take_record_option(url, record)
    defaulted = record is None  # nobody asked: say where it goes (RecordingCrossbar announce)
    if record is None:
        record = scheme.hardware
    path = default_record_path(name) if record is True else record
    if scheme.sized and default_shape is not None:
        options = {**_shape_options(url, default_shape), **options}
    module_name, func_name = scheme.factory.split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    crossbar = factory(url, **options)
    if path is False or path is None:
        return crossbar
    from .lab.recording import RecordingCrossbar

    try:
        parameters = {key: _plain(value) for key, value in options.items()}
        return RecordingCrossbar(crossbar, path, url=url, parameters=parameters, announce=defaulted)
    except BaseException:
        crossbar.close()
        raise


def _shape_options(url: str, shape: tuple[int, int]) -> dict[str, int]:
    """``rows``/``cols`` from ``shape`` unless the URL's query names either."""
    from .url_options import query_options

    _, query = query_options(url)
    if "rows" in query or "cols" in query:
        return {}
    return {"rows": int(shape[0]), "cols": int(shape[1])}


def _plain(value: Any) -> Any:
    """A value as JSON can store it (anything else as its repr)."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
