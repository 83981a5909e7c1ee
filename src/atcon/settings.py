"""Settings declared once: a dataclass field and its doc are a flag, a ``--help`` line, a TOML key
and a default, for every command.

A command's settings are the fields of one or more frozen dataclasses (:class:`~atcon.train.config.TrainConfig`,
:class:`~atcon.experiments.methods.ExperimentConfig`, :class:`~atcon.evaluate.EvalSpec`, ...).
:func:`settings_of` lists them as :class:`Setting` rows: a field whose type is itself a dataclass
contributes its own fields (``EvalSpec.protocol`` gives ``iou_threshold``, ``tolerance``, ...), and a
field's ``metadata={"key": "resamples"}`` names its key when the attribute name would not read
well on a command line. Each field's text is its entry in the ``Attributes:`` (or ``Args:``)
section of its class's docstring, the classes it inherits from included.

This module knows nothing of argparse: :mod:`atcon.commands._config` turns the rows into flags;
here they become TOML (:func:`read_toml`, :func:`toml_reference`) and instances (:func:`build`).

Precedence everywhere: field defaults < a command's own defaults < ``--config`` TOML < flags given
on the command line < what the command forces.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Setting",
    "TupleOf",
    "allowed_values",
    "build",
    "check_type",
    "check_values",
    "field_docs",
    "field_types",
    "read_toml",
    "settings_of",
    "toml_reference",
    "toml_value",
]


@dataclass(frozen=True)
class TupleOf:
    """A tuple type: ``tuple[X, ...]`` (``length`` None: one or more) or ``tuple[X, X, X]``."""

    items: tuple[Any, ...]  # allowed_values of the element type
    length: int | None

    @property
    def name(self) -> str:
        element = _expected(self.items)
        return f"{self.length} values ({element})" if self.length else f"a list of {element}"


@dataclass(frozen=True)
class Setting:
    """One setting of a command: where it lives in its dataclass and how it is written.

    Attributes:
        key: TOML key and flag name (``--`` + key with ``-`` for ``_``).
        path: attribute path from the root dataclass (``("protocol", "threshold")``).
        type: the field's resolved type.
        default: the field's default (a factory is called).
        doc: the field's documentation, one paragraph.
        owner: the dataclass that declares the field.
    """

    key: str
    path: tuple[str, ...]
    type: Any
    default: Any
    doc: str
    owner: type

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation, read from the ``Attributes:``/``Args:`` sections of ``cls``'s
    docstring and of the dataclasses it inherits from (its own text wins).

    Returns:
        ``{field name: one-paragraph text}`` in field order; an entry ``a, b: text`` documents
        both fields. Fields without a text are left out (:func:`settings_of` refuses them).
    """
    texts: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        texts.update(_docstring_fields(klass.__dict__.get("__doc__")))
    return {f.name: texts[f.name] for f in dataclasses.fields(cls) if f.name in texts}  # type: ignore[arg-type]


def _docstring_fields(doc: str | None) -> dict[str, str]:
    text = inspect.cleandoc(doc or "")
    found: dict[str, str] = {}
    for header in ("Attributes:\n", "Args:\n"):
        if header not in text:
            continue
        names: list[str] = []
        for line in text.split(header, 1)[1].splitlines():
            entry = re.match(r"^    (\w+(?:, \w+)*): (.*)$", line)
            if entry:
                names = entry.group(1).split(", ")
                for name in names:
                    found[name] = entry.group(2).strip()
            elif names and line.startswith("        "):
                for name in names:
                    found[name] += " " + line.strip()
            elif line.strip():
                break  # the section ended
    return found


@cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's type, resolved once (``get_type_hints`` is slow, and every config builds one)."""
    return typing.get_type_hints(cls)


def settings_of(cls: type, exclude: Iterable[str] = ()) -> tuple[Setting, ...]:
    """The settings of dataclass ``cls`` in field order, nested dataclass fields expanded.

    Args:
        cls: a dataclass whose every field is documented (see :func:`field_docs`).
        exclude: keys left out (a command sets them itself).

    Raises:
        TypeError: a field without documentation, or two settings with one key.
    """
    rows = _settings(cls, ())
    keys = [r.key for r in rows]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise TypeError(
            f"{cls.__name__}: settings share the key(s) {', '.join(twice)}; name one with metadata"
        )
    skip = set(exclude)
    return tuple(r for r in rows if r.key not in skip)


@cache
def _settings(cls: type, path: tuple[str, ...]) -> tuple[Setting, ...]:
    docs, hints = field_docs(cls), field_types(cls)
    rows: list[Setting] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += _settings(tp, (*path, f.name))  # type: ignore[arg-type]
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no documentation in the class docstring")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        key = str(f.metadata.get("key", f.name))
        rows.append(Setting(key, (*path, f.name), tp, default, docs[f.name], cls))
    return tuple(rows)


def allowed_values(tp: Any) -> tuple[Any, ...]:
    """``tp`` flattened: ``X | None`` into its members, ``Literal`` into ``("literal", v)`` pairs,
    tuples into a :class:`TupleOf`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arg in get_args(tp) for a in allowed_values(arg))
    if origin is Literal:
        return tuple(("literal", v) for v in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return (TupleOf(allowed_values(args[0]), None),)
        return (TupleOf(allowed_values(args[0]), len(args)),)
    return (tp,)


def literals(allowed: tuple[Any, ...]) -> list[Any]:
    """The literal values among :func:`allowed_values`."""
    return [v for a in allowed if isinstance(a, tuple) for v in a[1:]]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SCALARS: dict[Any, Any] = {
    float: _number,
    int: lambda v: _number(v) and isinstance(v, int),
    Path: lambda v: isinstance(v, (str, Path)),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    Any: lambda v: True,
}
"""How a TOML value is checked against each scalar type (a TOML int is also a float)."""


def _matches(value: Any, allowed: tuple[Any, ...]) -> bool:
    if value in literals(allowed):
        return True
    for t in allowed:
        if isinstance(t, tuple):
            continue
        if t is type(None) and value is None:
            return True
        if isinstance(t, TupleOf):
            if (
                isinstance(value, (list, tuple))
                and len(value) >= 1
                and (t.length is None or len(value) == t.length)
                and all(_matches(v, t.items) for v in value)
            ):
                return True
        elif t in _SCALARS and _SCALARS[t](value):
            return True
    return False


def _expected(allowed: tuple[Any, ...]) -> str:
    names = [
        t.name if isinstance(t, TupleOf) else getattr(t, "__name__", str(t))
        for t in allowed
        if not isinstance(t, tuple)
    ]
    return " | ".join([*(repr(v) for v in literals(allowed)), *names])


def check_type(name: str, value: Any, tp: Any) -> None:
    """Raise ValueError naming ``name`` when ``value`` is not of type ``tp`` (TOML's view: a list
    is a tuple, an int is a float)."""
    allowed = allowed_values(tp)
    if not _matches(value, allowed):
        raise ValueError(f"config key {name!r} must be {_expected(allowed)}; got {value!r}")


def check_values(settings: Iterable[Setting], values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against ``settings``: unknown keys and wrong types are errors that
    name the key and ``where`` they came from."""
    by_key = {s.key: s for s in settings}
    unknown = sorted(set(values) - set(by_key))
    if unknown:
        raise ValueError(
            f"{where}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(by_key))}"
        )
    for key, value in values.items():
        try:
            check_type(key, value, by_key[key].type)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return dict(values)


def build(cls: type, settings: Iterable[Setting], values: Mapping[str, Any], **fixed: Any) -> Any:
    """An instance of ``cls`` from setting ``values`` (keyed by :attr:`Setting.key`; missing ones
    keep their defaults) and ``fixed`` attributes of the root that are no settings."""
    nested: dict[tuple[str, ...], dict[str, Any]] = {(): dict(fixed)}
    for s in settings:
        if s.key in values:
            value = values[s.key]
            if isinstance(value, list):
                value = tuple(value)  # TOML arrays
            nested.setdefault(s.path[:-1], {})[s.path[-1]] = value
    return _assemble(cls, (), nested)


def _assemble(cls: type, path: tuple[str, ...], nested: dict[tuple[str, ...], dict[str, Any]]) -> Any:
    kwargs = dict(nested.get(path, {}))
    hints = field_types(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = (*path, f.name)
        if dataclasses.is_dataclass(hints[f.name]) and any(p[: len(sub)] == sub for p in nested):
            kwargs[f.name] = _assemble(hints[f.name], sub, nested)
    return cls(**kwargs)


def read_toml(path: str | Path, settings: Iterable[Setting]) -> dict[str, Any]:
    """Read a TOML file of settings; unknown keys and values of the wrong type are errors.

    Every value is checked here, also one that a flag will override: a mistake in the file is
    reported when it is made, not when the flag is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
    return check_values(settings, data, str(path))


def toml_reference(
    settings: Iterable[Setting], defaults: Mapping[str, Any] | None = None, title: str = ""
) -> str:
    """A TOML file documenting every setting, each set to its default (unset ones commented out).

    The result parses (``tomllib``) to the defaults, so it is a starting point for ``--config``.

    Args:
        settings: the command's settings.
        defaults: the command's own defaults, shown instead of the fields'.
        title: the first comment line (which command's keys these are).
    """
    own = dict(defaults or {})
    lines = [
        f"# {title or 'atcon settings'}: every key is optional; flags given on the command line win.",
    ]
    for s in settings:
        lines.append("")
        lines += [f"# {line}" for line in textwrap.wrap(s.doc, 96) or [""]]
        allowed = literals(allowed_values(s.type))
        if allowed:
            lines.append("# one of: " + ", ".join(map(str, allowed)))
        default = own.get(s.key, s.default)
        if default is None or default == ():
            lines.append(f"# {s.key} =")
        else:
            lines.append(f"{s.key} = {toml_value(default)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """``value`` written as TOML."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
