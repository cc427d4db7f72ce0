"""Reading a crossbar URL's query: the one option parser every backend shares.

A backend declares its options once, as a mapping from name to :class:`Option` (how to read
the text, and the default), and reads them with :func:`read_options`. That gives every scheme
the same behaviour, in the style of pyserial's URL handlers:

- one boolean vocabulary (:func:`boolean`): ``1/true/yes/on`` and ``0/false/no/off``, in any
  case; any other word is refused, never silently taken for False;
- an option given twice in the query, an unknown option, or a value that does not read as its
  type is refused with a :class:`ValueError` that names the scheme and the option;
- keyword overrides (``open_crossbar(url, timeout=2.0)``) win over the query and may be Python
  objects already (a bool, a float, a ``SafetyLimits``): those pass through unconverted.

Backends import this module, never :mod:`memristor_hil.backends` (the dispatcher that names
them), so the scheme registry stays at the top of the import graph.

Examples
--------
>>> fields = {"timeout": Option(float, 1.0), "monitor": Option(boolean, False)}
>>> _, query = query_options("serial:///dev/ttyACM0?monitor=on")
>>> read_options("serial", query, fields)
{'timeout': 1.0, 'monitor': True}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .pulses import SafetyLimits

__all__ = [
    "LIMIT_OPTIONS",
    "Option",
    "REQUIRED",
    "boolean",
    "keyword_only",
    "query_options",
    "read_options",
    "read_options_and_limits",
]

T = TypeVar("T")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class _Required:
    """The default of an option that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def boolean(text: str | bool) -> bool:
    """Read a boolean option: ``1/true/yes/on`` or ``0/false/no/off``, in any case.

    Raises
    ------
    ValueError
        For any other word (``monitor=enabled`` is refused, not read as False).
    """
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(
        f"{text!r} is not a boolean: use one of {sorted(TRUE_WORDS)} or {sorted(FALSE_WORDS)}"
    )


def keyword_only(text: str) -> Any:
    """The parse of an option that only a keyword argument can give (a Python object).

    Raises
    ------
    ValueError
        Always: the option's text came from a URL.
    """
    raise ValueError("it is given as a keyword argument (a Python object), not in the URL")


@dataclass(frozen=True)
class Option(Generic[T]):
    """One URL option: how its text reads, and its value when it is not given.

    Parameters
    ----------
    parse : callable
        Turns the query's text into the value (``int``, ``float``, :func:`boolean`, ``str``,
        or any function that raises ``ValueError``/``TypeError`` on bad text).
    default : object
        The value when the option is absent; :data:`REQUIRED` makes it mandatory. ``None``
        leaves the choice to the backend.
    """

    parse: Callable[[Any], T]
    default: T | None | Any = None

    def read(self, value: Any) -> T:
        """The option's value from query text; Python objects that are not strings pass."""
        if isinstance(value, str) or self.parse is boolean:
            return self.parse(value)
        return value


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


def read_options(
    scheme: str,
    options: MutableMapping[str, Any],
    fields: Mapping[str, Option[Any]],
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Take the declared ``fields`` out of ``options`` and read each as its type.

    Parameters
    ----------
    scheme : str
        The URL scheme, for error messages (``"serial"``).
    options : dict
        Query text and keyword overrides, merged; the fields read are removed from it.
    fields : mapping of str to Option
        The options this scheme knows.
    strict : bool
        If True (the default), anything left in ``options`` afterwards is refused; pass False
        where the rest belongs to someone else (pyserial's own URL options).

    Returns
    -------
    dict
        Every field's value: read from ``options`` where given, else its default.

    Raises
    ------
    ValueError
        Naming the scheme and the option: an unknown option (when ``strict``), a missing
        required one, or text that does not read as the option's type.
    """
    values: dict[str, Any] = {}
    for name, option in fields.items():
        if name not in options:
            if option.default is REQUIRED:
                raise ValueError(f"{scheme}:// needs the option {name!r}")
            values[name] = option.default
            continue
        raw = options.pop(name)
        try:
            values[name] = option.read(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad option {name}={raw!r} for {scheme}://: {exc}") from None
    if strict and options:
        raise ValueError(
            f"unknown {scheme}:// options {sorted(options)}; known: {', '.join(sorted(fields))}"
        )
    return values


#: The safety-limit options an instrument backend reads from its URL, each narrowing one field
#: of its :class:`~memristor_hil.pulses.SafetyLimits` (the limits refuse a batch before it
#: reaches the device)
LIMIT_OPTIONS: dict[str, Option[Any]] = {
    "v_min": Option(float),
    "v_max": Option(float),
    "width_min": Option(float),
    "width_max": Option(float),
    "max_pulses": Option(int),
}


def read_options_and_limits(
    scheme: str,
    options: MutableMapping[str, Any],
    fields: Mapping[str, Option[Any]],
    default: SafetyLimits,
) -> dict[str, Any]:
    """The keyword arguments of a driver from URL options, its safety limits included.

    ``fields`` are read with :func:`read_options` (those not given are left out, so the
    driver's own defaults hold); ``limits`` is ``default`` with any of the
    :data:`LIMIT_OPTIONS` given replaced, unless a ``limits`` keyword gives the whole object.

    Raises
    ------
    ValueError
        Naming the scheme and the option, as :func:`read_options`; or naming the limits when
        together they are not valid (``v_min`` above ``v_max``).
    """
    values = read_options(scheme, options, {**fields, **LIMIT_OPTIONS})
    changes = {key: values.pop(key) for key in LIMIT_OPTIONS}
    kwargs = {key: value for key, value in values.items() if value is not None}
    if "limits" not in kwargs:
        given = {key: value for key, value in changes.items() if value is not None}
        try:
            kwargs["limits"] = dataclasses.replace(default, **given) if given else default
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad {scheme}:// safety-limit options {given}: {exc}") from None
    return kwargs
