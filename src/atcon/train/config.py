"""The training configuration: one frozen dataclass, settable from a TOML file and from flags.

Precedence: defaults < TOML file (``--config``) < command-line flags. Unknown keys and values of
the wrong type are errors that name the key. The resolved config is written into the run folder
(``config.toml``) and into every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Strategy = Literal["supervised", "finetune", "combined", "alternated", "simclr"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

_DEFAULT_LR = {"finetune": 5e-6}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Field docs double as ``--help`` text.

    Attributes:
        data: built-in benchmark (``cluttered-fashion``, ``fashion-events``), a VOC-layout
            folder, a clip manifest CSV, or a folder-per-class tree of videos.
        split: split JSON file (train/val/test ids); default: drawn with ``per_class`` and
            ``split_seed`` and saved in the run folder.
    """

    # data
    data: str = "cluttered-fashion"
    split: str | None = None
    per_class: int = 4
    split_seed: int = 0
    data_seed: int = 0
    data_size: float = 1.0
    unlabeled: str | None = None
    image_size: int | None = None
    augment: bool = True
    # model
    model: str = "small"
    weights: str | None = None
    new_head: bool = False
    # optimisation
    strategy: Strategy = "supervised"
    epochs: int = 20
    batch_size: int = 4
    lr: float | None = None
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine"] = "none"
    clip_grad: float = 0.0
    consistency_weight: float = 1.0
    alternate_alpha: float = 1.0
    resolution: Literal["gb_mask", "gradcam_mask", "gradcam_upsample", "gb_pool"] = "gb_mask"
    similarity: Literal["pearson", "cross_correlation", "ssim"] = "pearson"
    detach_mask: bool = False
    mask_source: Literal["guided_backprop", "random_network", "sobel", "random_smooth"] = "guided_backprop"
    target_layer: str | None = None
    temperature: float = 0.5
    # selection
    eval_every: int = 0
    patience: int = 0
    # runtime
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
        positive = ("epochs", "batch_size", "per_class", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "patience", "workers", "checkpoint_every", "clip_grad", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the strategy's default: 1e-3 (paper), 5e-6 for consistency fine-tuning."""
        return self.lr if self.lr is not None else _DEFAULT_LR.get(self.strategy, 1e-3)

    @property
    def uses_consistency(self) -> bool:
        return self.strategy in ("finetune", "combined", "alternated")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML (None values are omitted: they mean "default")."""
        lines = []
        for key, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            else:
                text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _allowed(tp: Any) -> tuple[Any, ...]:
    """Flatten ``X | None`` and Literal into the tuple of accepted types/values."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arg in get_args(tp) for a in _allowed(arg))
    if origin is Literal:
        return tuple(("literal", v) for v in get_args(tp))
    return (tp,)


def _check_type(name: str, value: Any, tp: Any) -> None:
    allowed = _allowed(tp)
    literals = [v for a in allowed if isinstance(a, tuple) for v in a[1:]]
    types_ = [a for a in allowed if not isinstance(a, tuple)]
    if literals and value in literals:
        return
    for t in types_:
        if t is type(None) and value is None:
            return
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t in (str, bool) and isinstance(value, t):
            return
    expected = " | ".join([*(repr(v) for v in literals), *(getattr(t, "__name__", str(t)) for t in types_)])
    raise ValueError(f"config key {name!r} must be {expected}; got {value!r}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{path}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    return data


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add ``--config`` and one flag per config field (``--batch-size``, ``--augment/--no-augment``)."""
    parser.add_argument("--config", type=Path, default=None, help="TOML file with config keys")
    hints = _field_types()
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        allowed = _allowed(hints[f.name])
        literals = [v for a in allowed if isinstance(a, tuple) for v in a[1:]]
        base = [a for a in allowed if not isinstance(a, tuple) and a is not type(None)]
        help_text = f"(default: {f.default})"
        if base == [bool]:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif literals:
            parser.add_argument(flag, dest=f.name, choices=literals, default=None, help=help_text)
        else:
            kind = base[0] if base else str
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace, **forced: Any) -> TrainConfig:
    """Defaults < ``--config`` TOML < flags given on the command line < ``forced``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(read_toml(args.config))
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    values.update(forced)
    return TrainConfig(**values)
