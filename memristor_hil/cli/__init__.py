"""The ``memristor-hil`` command. Each subcommand lives in its own module of this package.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``run=function(args) -> int`` as the parser's default. Modules are found by name, so adding a
subcommand means adding a module, nothing else; ``ORDER`` (an int, default 50) in a module
sets where its subcommand appears in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from memristor_hil.errors import CrossbarError

from ._help import HelpFormatter

__all__ = ["main"]


def _subcommand_modules() -> list:
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    modules = [m for m in modules if hasattr(m, "register")]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="memristor-hil",
        description="Memristor crossbars in the loop: emulate, drive and learn with them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _subcommand_modules():
        module.register(sub)
    _use_formatter(parser)
    return parser


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's help keeps its examples as written and shows every default."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _use_formatter(child)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"memristor-hil {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CrossbarError, ValueError, OSError) as exc:
        print(f"memristor-hil {args.command}: error: {exc}", file=sys.stderr)
        return 2
