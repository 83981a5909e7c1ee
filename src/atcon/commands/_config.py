"""Config flags: one flag per :class:`~atcon.train.config.TrainConfig` field, helped by its docs.

Precedence: field defaults < the command's own defaults < ``--config`` TOML < flags given on the
command line < what the command forces (its strategy).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from atcon.train.config import TrainConfig, allowed_values, check_defaults, field_docs, field_types
from atcon.train.config_toml import read_toml, toml_reference

__all__ = ["add_config_arguments", "config_from_args", "count_or_fraction"]


def _default_text(value: Any) -> str:
    return "unset" if value is None else str(value)


class _PrintConfig(argparse.Action):
    """``--print-config``: print :func:`toml_reference` and exit, like ``--version``."""

    def __init__(
        self, option_strings: list[str], dest: str, defaults: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.defaults = defaults

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(toml_reference(self.defaults))
        parser.exit()


def add_config_arguments(
    parser: argparse.ArgumentParser,
    exclude: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add ``--config``, ``--print-config`` and one flag per config field (``--batch-size``,
    ``--augment/--no-augment``), each helped by the field's documentation and default.

    Args:
        parser: the command's parser.
        exclude: fields without a flag (the command sets them).
        defaults: the command's own defaults (pass the same to :func:`config_from_args`); shown
            in ``--help`` and ``--print-config``.
    """
    own = check_defaults(defaults)
    parser.add_argument("--config", type=Path, default=None, help="TOML file with config keys")
    parser.add_argument(
        "--print-config",
        action=_PrintConfig,
        defaults=own,
        help="print every config key with its documentation and default, as TOML, and exit",
    )
    hints, docs = field_types(), field_docs()
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        allowed = allowed_values(hints[f.name])
        literals = [v for a in allowed if isinstance(a, tuple) for v in a[1:]]
        base = [a for a in allowed if not isinstance(a, tuple) and a is not type(None)]
        # argparse %-formats help strings.
        default = own.get(f.name, f.default)
        help_text = f"{docs[f.name]} (default: {_default_text(default)})".replace("%", "%%")
        if base == [bool]:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif literals:
            parser.add_argument(flag, dest=f.name, choices=literals, default=None, help=help_text)
        else:
            kind: Any = count_or_fraction if set(base) == {int, float} else (base[0] if base else str)
            kind = three_numbers if kind is tuple else kind
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def count_or_fraction(text: str) -> int | float:
    """A flag value that is a count (``"100"``) or a fraction (``"0.2"``)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


count_or_fraction.__name__ = "count or fraction"  # argparse names the type in its error message


def three_numbers(text: str) -> tuple[float, float, float]:
    """A flag value of three comma-separated numbers (``"0.5,0.5,0.5"``)."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise ValueError(text)
    a, b, c = (float(p) for p in parts)
    return a, b, c


three_numbers.__name__ = "three comma-separated numbers"


def config_from_args(
    args: argparse.Namespace, defaults: Mapping[str, Any] | None = None, **forced: Any
) -> TrainConfig:
    """The config of a command line.

    Precedence: field defaults < ``defaults`` (the command's own, e.g. ``atcon finetune``'s) <
    ``--config`` TOML < flags given on the command line < ``forced``.

    Args:
        args: the parsed command line (flags not given are None).
        defaults: the command's own defaults.
        forced: values the command sets whatever the user says (e.g. its strategy).
    """
    values: dict[str, Any] = check_defaults(defaults)
    if getattr(args, "config", None) is not None:
        values.update(read_toml(args.config))
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    values.update(forced)
    return TrainConfig(**values)
