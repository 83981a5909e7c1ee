"""The ``atcon`` console script: one entry point, one subcommand per task.

Each subcommand is a module of :mod:`atcon.commands` exposing ``register(subparsers)``; that
function adds its parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace``
and returning an exit code). The CLI is the top layer: commands are thin wrappers over library
functions, and nothing in the library imports them. Modules are imported only when the CLI
starts, so ``import atcon`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules providing ``register(subparsers)``; order is the order shown in ``atcon --help``.
_COMMAND_MODULES: tuple[str, ...] = (
    "atcon.commands.maps",
    "atcon.commands.data",
    "atcon.commands.train",
    "atcon.commands.evaluate",
    "atcon.commands.explain",
    "atcon.commands.sanity",
    "atcon.commands.demo",
    "atcon.commands.experiment",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="atcon",
        description="Attention-map consistency: maps, fine-tuning and evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class UsageError(Exception):
    """An error caused by the user's input; printed without a traceback."""


_USER_ERRORS = (UsageError, FileNotFoundError, FileExistsError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        # Errors about the user's input or data print one line; anything else is a bug: traceback.
        if not isinstance(err, _USER_ERRORS) and not getattr(err, "user_error", False):
            raise
        print(f"atcon {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
