"""``open_crossbar(url)``: one string picks the backend, as pyserial's and VISA's URLs do.

Schemes map to ``"module:function"`` factories that take the parsed URL; they are imported only
when used, so opening an emulator never imports the hardware drivers.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from .crossbar import Crossbar

__all__ = [
    "HARDWARE_SCHEMES",
    "RECORDS_ENV",
    "default_record_path",
    "open_crossbar",
    "query_options",
    "register_scheme",
]

#: Schemes that reach real devices: ``open_crossbar`` records them by default, because a
#: measurement on hardware cannot be repeated. ``record=False`` turns that off.
HARDWARE_SCHEMES = frozenset({"serial", "visa"})

#: Environment variable naming the folder for default records (default ``records`` under the
#: working directory), e.g. a lab-wide data folder.
RECORDS_ENV = "MEMRISTOR_HIL_RECORDS"

_SCHEMES: dict[str, str] = {
    "emulator": "memristor_hil.emulator.url:open_emulator",
    "serial": "memristor_hil.drivers.serial:open_serial",
    "visa": "memristor_hil.drivers.visa:open_visa",
}


def register_scheme(scheme: str, factory: str) -> None:
    """Make ``open_crossbar`` accept ``scheme://...`` by calling ``factory`` (``"module:func"``)."""
    _SCHEMES[scheme] = factory


def open_crossbar(
    url: str, *, record: bool | str | os.PathLike[str] | None = None, **options: Any
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
        Record every batch and read (:class:`~memristor_hil.recording.RecordingCrossbar`):
        a path names a new record file; ``True`` uses :func:`default_record_path`; ``False``
        turns recording off. The default (None) records the hardware schemes
        (:data:`HARDWARE_SCHEMES`) to :func:`default_record_path` and nothing else.
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
    url, record = _take_record_option(url, record)
    if record is None:
        record = scheme.lower() in HARDWARE_SCHEMES
    path = default_record_path(scheme) if record is True else record
    module_name, func_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    crossbar = factory(url, **options)
    if path is False or path is None:
        return crossbar
    from .recording import RecordingCrossbar

    try:
        parameters = {key: _plain(value) for key, value in options.items()}
        return RecordingCrossbar(crossbar, path, url=url, parameters=parameters)
    except BaseException:
        crossbar.close()
        raise


def _plain(value: Any) -> Any:
    """A value as JSON can store it (anything else as its repr)."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def default_record_path(scheme: str) -> Path:
    """A new record path: ``<folder>/<UTC time>-<scheme>.sqlite``, not yet existing.

    The folder is ``$MEMRISTOR_HIL_RECORDS`` if set, else ``records`` under the working
    directory.
    """
    folder = Path(os.environ.get(RECORDS_ENV) or "records")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}-{scheme.lower()}.sqlite"
    counter = 2
    while path.exists():
        path = folder / f"{stamp}-{scheme.lower()}-{counter}.sqlite"
        counter += 1
    return path


def _take_record_option(
    url: str, record: bool | str | os.PathLike[str] | None
) -> tuple[str, bool | str | os.PathLike[str] | None]:
    """Remove ``record=...`` from the URL's query; the keyword, when given, wins over it."""
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    values = [value for key, value in pairs if key == "record"]
    if not values:
        return url, record
    if len(values) > 1:
        raise ValueError(f"query parameter 'record' is given twice in {url!r}")
    rest = urlencode([(key, value) for key, value in pairs if key != "record"])
    url = f"{base}?{rest}" if rest else base
    if record is not None:
        return url, record
    value = values[0]
    if value.lower() in ("", "1", "true", "yes", "on"):
        return url, True
    if value.lower() in ("0", "false", "no", "off"):
        return url, False
    return url, value


def query_options(url: str) -> tuple[SplitResult, dict[str, str]]:
    """Split a URL and return its query parameters as a dict (a repeated key is an error)."""
    parts = urlsplit(url)
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ValueError(f"query parameter {key!r} is given twice in {url!r}")
        options[key] = value
    return parts, options
