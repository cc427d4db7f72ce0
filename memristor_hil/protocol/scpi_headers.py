"""SCPI header matching: short and long forms, optional nodes, any letter case.

A command is declared once in SCPI's own notation, the short form in capitals and optional
nodes in brackets: ``SYSTem:ERRor[:NEXT]?`` accepts ``SYST:ERR?``, ``system:error:next?``,
``SYSTEM:ERR:NEXT?`` and ``Syst:Error?``, and nothing else (``SYSTE:ERR?`` is neither form).
Common commands (``*IDN?``) match exactly, in any case. See SCPI-99, volume 1, section 6.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["HeaderPattern", "HeaderTable"]

_NODE = re.compile(r"(\[)?:?([A-Za-z][A-Za-z0-9]*)(\])?")
T = TypeVar("T")


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    optional: bool

    def accepts(self, mnemonic: str) -> bool:
        return mnemonic in (self.short, self.long)


class HeaderPattern:
    """One command header in SCPI notation, e.g. ``"SYSTem:ERRor[:NEXT]?"`` or ``"*ESE"``.

    Parameters
    ----------
    spec : str
        Capitals mark the short form; ``[:NODE]`` is an optional node; a trailing ``?`` makes
        it a query (a query pattern matches only queries, and the other way round).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.query = spec.endswith("?")
        body = spec.removesuffix("?")
        self.common = body.startswith("*")
        self._nodes: tuple[_Node, ...] = ()
        if self.common:
            self._common = body.upper()
            return
        nodes = []
        pos = 0
        while pos < len(body):
            match = _NODE.match(body, pos)
            if match is None or bool(match.group(1)) != bool(match.group(3)):
                raise ValueError(f"bad SCPI header pattern {spec!r} at {body[pos:]!r}")
            word = match.group(2)
            short = "".join(c for c in word if c.isupper() or c.isdigit()) or word.upper()
            nodes.append(_Node(short, word.upper(), bool(match.group(1))))
            pos = match.end()
        if not nodes:
            raise ValueError(f"empty SCPI header pattern {spec!r}")
        self._nodes = tuple(nodes)

    def matches(self, header: str) -> bool:
        """Whether ``header`` (a program header, any case, leading colon allowed) is this one."""
        header = header.strip().lstrip(":").upper()
        if header.endswith("?") != self.query:
            return False
        header = header.removesuffix("?")
        if self.common:
            return header == self._common
        if not header or header.startswith("*"):
            return False
        return _match(self._nodes, header.split(":"))

    def __repr__(self) -> str:
        return f"HeaderPattern({self.spec!r})"


def _match(nodes: tuple[_Node, ...], words: list[str]) -> bool:
    """Whether ``words`` name ``nodes`` in order, optional nodes allowed to be left out."""
    if not nodes:
        return not words
    node, rest = nodes[0], nodes[1:]
    if words and node.accepts(words[0]) and _match(rest, words[1:]):
        return True
    return node.optional and _match(rest, words)


class HeaderTable(Generic[T]):
    """Maps program headers to values (handlers) through :class:`HeaderPattern` entries.

    Examples
    --------
    >>> table = HeaderTable([("SYSTem:ERRor[:NEXT]?", "next error"), ("*IDN?", "identify")])
    >>> table.lookup("syst:error:next?"), table.lookup("*idn?"), table.lookup("SYSTE:ERR?")
    ('next error', 'identify', None)
    """

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._entries = [(HeaderPattern(spec), value) for spec, value in entries]

    def lookup(self, header: str) -> T | None:
        """The value of the first pattern that ``header`` matches, or None."""
        for pattern, value in self._entries:
            if pattern.matches(header):
                return value
        return None

    def resolve(self, header: str, path: str = "") -> T | None:
        """Like :meth:`lookup`, for a command of a compound message whose path is ``path``.

        SCPI resolves a header without a leading colon after ``;`` relative to the previous
        command's path (``SYST:ERR?;VERS?`` is ``SYST:VERS?``); the header as written is tried
        too, since many clients repeat the whole path.
        """
        if path and not header.startswith((":", "*")):
            found = self.lookup(f"{path}:{header}")
            if found is not None:
                return found
        return self.lookup(header)
