"""Reading a crossbar URL's query: the one helper every backend's URL parser shares.

Backends import this module, never :mod:`memristor_hil.backends` (the dispatcher that names
them), so the scheme registry stays at the top of the import graph.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, urlsplit

__all__ = ["query_options"]


def query_options(url: str) -> tuple[SplitResult, dict[str, str]]:
    """Split a URL and return its query parameters as a dict.

    Raises
    ------
    ValueError
        If a parameter is given twice.
    """
    parts = urlsplit(url)
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ValueError(f"query parameter {key!r} is given twice in {url!r}")
        options[key] = value
    return parts, options
