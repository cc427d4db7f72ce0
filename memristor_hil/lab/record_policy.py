"""Where records go and when: the policy ``open_crossbar`` applies to hardware runs.

A measurement on hardware cannot be repeated, so ``open_crossbar`` records the schemes that
reach real devices by default (see :func:`memristor_hil.register_scheme`'s ``hardware``).
This module says where such a record is written and how a URL's ``record=`` option is read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from memristor_hil.url_options import boolean

__all__ = [
    "RECORDS_ENV",
    "RecordOption",
    "default_record_path",
    "format_size",
    "take_record_option",
]

#: Environment variable naming the folder for default records (default ``records`` under the
#: working directory), e.g. a lab-wide data folder.
RECORDS_ENV = "MEMRISTOR_HIL_RECORDS"

#: What ``record=`` may be: a path, True (default path), False (off) or None (the default).
RecordOption = bool | str | os.PathLike[str] | None


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


def format_size(nbytes: float) -> str:
    """``"12 kB"``, ``"3.4 MB"``: a size a reader can use (never ``"0.0 MB"``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{int(nbytes)} bytes"


def take_record_option(url: str, record: RecordOption) -> tuple[str, RecordOption]:
    """Remove ``record=...`` from a URL's query; the keyword, when given, wins over it.

    Returns
    -------
    url : str
        The URL without its ``record`` parameter.
    record : bool, path-like or None
        ``record`` if it was given, else what the URL said (``1``/``true``/``yes``/``on`` or
        empty: True; ``0``/``false``/``no``/``off``: False; anything else: a path).
    """
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
    if value == "":
        return url, True
    try:
        return url, boolean(value)
    except ValueError:
        return url, value  # a path
