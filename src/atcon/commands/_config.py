"""Settings as flags: one flag per setting of a command's dataclasses (:mod:`atcon.settings`),
helped by the field's documentation and default, plus ``--config FILE.toml`` and ``--print-config``.

Precedence: field defaults < the command's own defaults < ``--config`` TOML < flags given on the
command line < what the command forces.

A command declares its settings as :class:`Group` rows (a dataclass, the keys it sets itself, its
own defaults); :func:`add_settings` adds their flags, :func:`read_settings` builds the instances.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atcon import settings
from atcon.settings import Setting, TupleOf, allowed_values, literals
from atcon.train.config import TrainConfig

__all__ = [
    "Group",
    "add_config_arguments",
    "add_settings",
    "config_from_args",
    "count_or_fraction",
    "given_keys",
    "read_settings",
]


@dataclass(frozen=True)
class Group:
    """One dataclass of a command's settings.

    Attributes:
        cls: the dataclass.
        exclude: keys without a flag or TOML key (the command sets them).
        defaults: the command's own defaults (between the fields' and ``--config``'s).
    """

    cls: type
    exclude: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> tuple[Setting, ...]:
        return settings.settings_of(self.cls, self.exclude)


def _all(groups: Sequence[Group]) -> tuple[Setting, ...]:
    rows = tuple(s for g in groups for s in g.settings)
    keys = [s.key for s in rows]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise TypeError(f"a command's settings share the key(s) {', '.join(twice)}")
    return rows


def _defaults(groups: Sequence[Group]) -> dict[str, Any]:
    own: dict[str, Any] = {}
    for g in groups:
        own.update(settings.check_values(g.settings, g.defaults, "command defaults"))
    return own


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    return "unset" if value is None else str(value)


class _PrintConfig(argparse.Action):
    """``--print-config``: print the TOML reference of the command's settings and exit."""

    def __init__(self, option_strings: list[str], dest: str, text: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.text = text

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(self.text)
        parser.exit()


def add_settings(parser: argparse.ArgumentParser, *groups: Group, title: str = "") -> None:
    """Add ``--config``, ``--print-config`` and one flag per setting of ``groups`` (``--batch-size``,
    ``--augment/--no-augment``, ``--seeds 0 1 2``), each helped by the field's documentation and
    the default the command uses."""
    rows, own = _all(groups), _defaults(groups)
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML file with settings (keys as the flags, with _ for -)"
    )
    parser.add_argument(
        "--print-config",
        action=_PrintConfig,
        text=settings.toml_reference(rows, own, title or f"{parser.prog} settings"),
        help="print every setting with its documentation and default, as TOML, and exit",
    )
    for s in rows:
        default = own.get(s.key, s.default)
        # argparse %-formats help strings.
        help_text = f"{s.doc} (default: {_default_text(default)})".replace("%", "%%")
        parser.add_argument(s.flag, dest=s.key, default=None, help=help_text, **_flag_kind(s.type))


def _flag_kind(tp: Any) -> dict[str, Any]:
    """argparse's ``action``/``type``/``choices``/``nargs`` for a setting of type ``tp``."""
    return _kind(allowed_values(tp))


def _kind(allowed: tuple[Any, ...]) -> dict[str, Any]:
    base = [a for a in allowed if not isinstance(a, tuple) and a is not type(None)]
    if base == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if literals(allowed):
        return {"choices": literals(allowed)}
    if len(base) == 1 and isinstance(base[0], TupleOf):
        seq = base[0]
        if seq.length is not None:
            return {"type": _comma_numbers(seq.length), "metavar": ",".join(["N"] * seq.length)}
        kind = _kind(seq.items)
        return {**kind, "nargs": "+"}
    if set(base) == {int, float}:
        return {"type": count_or_fraction}
    if base and base[0] in (int, float, Path):
        return {"type": base[0]}
    return {}


def _comma_numbers(n: int) -> Any:
    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in text.replace(" ", "").split(",") if p]
        if len(parts) != n:
            raise ValueError(text)
        return tuple(float(p) for p in parts)

    parse.__name__ = f"{n} comma-separated numbers"  # argparse names the type in its error message
    return parse


def count_or_fraction(text: str) -> int | float:
    """A flag value that is a count (``"100"``) or a fraction (``"0.2"``)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


count_or_fraction.__name__ = "count or fraction"


def given_keys(args: argparse.Namespace, *groups: Group) -> dict[str, Any]:
    """The settings the command line gave: ``--config`` keys, then flags over them."""
    rows = _all(groups)
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(settings.read_toml(args.config, rows))
    for s in rows:
        v = getattr(args, s.key, None)
        if v is not None:
            values[s.key] = v
    return values


def read_settings(
    args: argparse.Namespace, *groups: Group, forced: Mapping[str, Any] | None = None
) -> list[Any]:
    """One instance per group from a parsed command line.

    Precedence: field defaults < each group's ``defaults`` < ``--config`` TOML < flags given on
    the command line < ``forced`` (keys of any group; also attributes no setting names).
    """
    values = {**_defaults(groups), **given_keys(args, *groups), **(forced or {})}
    built = []
    for g in groups:
        keys = {s.key for s in g.settings}
        # Forced attributes of the class that are not (or not here) settings, e.g. an excluded strategy.
        fixed = {k: v for k, v in (forced or {}).items() if k not in keys and k in _init_names(g.cls)}
        built.append(settings.build(g.cls, g.settings, values, **fixed))
    return built


def _init_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]


# --- the training config (atcon train/finetune/pretrain, atcon experiment) ---------------------


def add_config_arguments(
    parser: argparse.ArgumentParser,
    exclude: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """:func:`add_settings` for :class:`~atcon.train.config.TrainConfig` alone."""
    add_settings(parser, Group(TrainConfig, exclude, defaults or {}), title="atcon training config")


def config_from_args(
    args: argparse.Namespace, defaults: Mapping[str, Any] | None = None, **forced: Any
) -> TrainConfig:
    """The training config of a command line (:func:`read_settings` with one group).

    Args:
        args: the parsed command line (flags not given are None).
        defaults: the command's own defaults.
        forced: values the command sets whatever the user says (e.g. its strategy).
    """
    (cfg,) = read_settings(args, Group(TrainConfig, (), defaults or {}), forced=forced)
    return cfg  # type: ignore[no-any-return]
