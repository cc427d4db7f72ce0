"""The ``memristor-hil`` command. Each subcommand lives in its own module of this package.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``run=function(args) -> int`` as the parser's default. Modules are found by name, so adding a
subcommand means adding a module, nothing else; ``ORDER`` (an int, default 50) in a module
sets where its subcommand appears in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


#: Said after a refused connection: the commonest cause is a service started a moment ago.
STARTING_HINT = (
    "hint: nothing accepted the connection. If you started the service just now (memristor-hil "
    "emulate ... &), it may still be starting: wait for its address line (or pass emulate "
    "--ready-file PATH and wait for PATH), then try again"
)


def _refused(exc: BaseException) -> bool:
    """Whether a connection was refused somewhere in ``exc``'s chain of causes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reader_gone() -> int:
    """stdout's reader left (``memristor-hil record show R | head``): stop quietly, as a
    command that SIGPIPE ends does. stdout goes to /dev/null so that the interpreter's last
    flush at exit does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what the shell reports for a command SIGPIPE ended


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # here, where a reader that left is caught, not at exit
        return status
    except KeyboardInterrupt:
        print(f"memristor-hil {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except (CrossbarError, ValueError, OSError) as exc:
        print(f"memristor-hil {args.command}: error: {exc}", file=sys.stderr)
        if _refused(exc):
            print(STARTING_HINT, file=sys.stderr)
        return 2
