"""The ``memristor-hil`` command. Each subcommand lives in its own module of this package.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``run=function(args) -> int`` as the parser's default. Add new modules to ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from memristor_hil.errors import CrossbarError

__all__ = ["main"]

SUBCOMMANDS = ["demo"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="memristor-hil",
        description="Memristor crossbars in the loop: emulate, drive and learn with them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return parser


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
