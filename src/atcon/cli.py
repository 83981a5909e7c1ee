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
import os
import sys
import traceback
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


DEBUG_ENV = "ATCON_DEBUG"
"""Environment variable that, set to 1, shows the traceback of every error (like ``--debug``)."""


def _version() -> str:
    """``atcon X (torch Y, Python Z)``: what a bug report needs first."""
    import platform

    from atcon import __version__

    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # a source tree without torch's metadata
        torch_version = "unknown"
    return f"atcon {__version__} (torch {torch_version}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="atcon",
        description="Attention-map consistency: maps, fine-tuning and evaluation.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of any error (also: {DEBUG_ENV}=1)",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_debug_everywhere(sub)
    return parser


def _add_debug_everywhere(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Accept ``--debug`` after the subcommand too (``atcon train ... --debug``), at every level."""
    for parser in set(sub.choices.values()):
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_everywhere(action)


class UsageError(Exception):
    """An error caused by the user's input; printed without a traceback."""


# Errors about the user's input, data, files or machine: one line, exit 2. An exception class
# elsewhere joins them with a class attribute ``user_error = True``.
_USER_ERRORS = (UsageError, OSError, ValueError)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is about the user's input or environment (not a defect of atcon)."""
    return isinstance(err, _USER_ERRORS) or bool(getattr(err, "user_error", False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Exit codes: 0 success; 2 an error in the input (one message, no traceback); 1 an internal
    error (a short message and a hint; the traceback with ``--debug`` or ``ATCON_DEBUG=1``);
    130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    prefix = f"atcon {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        if is_user_error(err):
            print(f"{prefix}: error: {_text(err)}", file=sys.stderr)
            return 2
        print(
            f"{prefix}: internal error: {type(err).__name__}: {_text(err)}\n"
            f"This is probably a bug in atcon. Run the command again with --debug (or {DEBUG_ENV}=1) "
            "to see where it happened, and include that output when you report it.",
            file=sys.stderr,
        )
        return 1


def _text(err: BaseException) -> str:
    """The error's message; OSErrors raised by Python itself read "[Errno 2] ...: 'path'"."""
    if isinstance(err, OSError) and err.strerror and err.filename and type(err).__str__ is OSError.__str__:
        return f"{err.strerror}: {err.filename}"
    return str(err) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
