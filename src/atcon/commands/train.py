"""``atcon train``, ``atcon finetune`` and ``atcon pretrain``: thin wrappers over :func:`atcon.train.train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from atcon._json import to_json
from atcon.train.config import GUARDED_RECIPE

FINETUNE_DEFAULTS: dict[str, Any] = dict(GUARDED_RECIPE)
"""``atcon finetune``'s own defaults: above the config fields' defaults, below a ``--config``
TOML file and flags. The collapse guard (prediction anchor, lambda = 1) and label-free selection:
measured safe on images and clips (README, "Does it help?"). ``--anchor-weight 0 --select labels``
is the paper's recipe, which ``atcon train`` fields and ``atcon experiment`` keep as defaults."""

_DEFAULTS: dict[str, dict[str, Any]] = {"finetune": FINETUNE_DEFAULTS}


def _common(p: argparse.ArgumentParser, command: str) -> None:
    from atcon.commands._config import add_config_arguments

    p.add_argument(
        "--out", type=Path, required=False, default=None, help="run folder (default: runs/<strategy>)"
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR with its own config, from RUN_DIR/checkpoints/last.pt",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in the run folder (once the new run has been set up)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress (shown as a bar on a terminal, else as one line per epoch)",
    )
    add_config_arguments(
        p,
        exclude=("strategy",) if command in ("finetune", "pretrain") else (),
        defaults=_DEFAULTS.get(command),
    )


def register(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="supervised training (optionally combined/alternated with the consistency loss)",
        description="Supervised training on the labeled few-shot split; --strategy combined|alternated adds "
        "the attention-consistency loss. Flags and TOML keys are the same (see --config).",
    )
    _common(t, "train")
    t.set_defaults(func=lambda a: _run(a, None))
    f = sub.add_parser(
        "finetune",
        help="unsupervised attention-consistency fine-tuning of a trained checkpoint",
        description="Minimise the attention-consistency loss alone (no labels) on the training images or on "
        "--unlabeled FOLDER, starting from --init CHECKPOINT, with normalisation frozen. By default a "
        "prediction anchor keeps the outputs near the starting network's (--anchor-weight 1) and the model is "
        "selected without labels on a held-out slice of the unlabeled data (--select label-free); "
        "--anchor-weight 0 --select labels is the paper's recipe (selection on validation labels). Default lr 5e-6.",
    )
    f.add_argument(
        "--init",
        default=None,
        help="checkpoint to start from (same as --weights); an atcon checkpoint also gives the network, "
        "image size, normalisation and Grad-CAM layer unless flags say otherwise",
    )
    _common(f, "finetune")
    f.set_defaults(func=lambda a: _run(a, "finetune"))
    p = sub.add_parser(
        "pretrain",
        help="SimCLR self-supervised pretraining",
        description="SimCLR (NT-Xent on two augmented views) on the training samples or --unlabeled FOLDER. "
        "The checkpoint's model can then be trained with `atcon train --weights RUN/checkpoints/last.pt`.",
    )
    _common(p, "pretrain")
    p.set_defaults(func=lambda a: _run(a, "simclr"))


INHERITED = ("model", "image_size", "mean", "std", "interpolation", "target_layer")
"""What ``atcon finetune --init CKPT`` takes from an atcon checkpoint unless a flag or ``--config``
says otherwise: the network it holds, its input size, normalisation and Grad-CAM layer."""


def settings_of_checkpoint(path: str) -> dict[str, Any]:
    """The :data:`INHERITED` settings an atcon checkpoint records (none for other files, e.g. a
    torchvision weights name or a plain state dict: those need ``--model``)."""
    from atcon.train.training_state import load_checkpoint

    if not Path(path).is_file():
        return {}
    try:
        ckpt = load_checkpoint(path)
    except (ValueError, OSError, RuntimeError):
        return {}  # not an atcon checkpoint: loading it later says what is wrong
    if "model_name" not in ckpt:
        return {}
    config = ckpt.get("config") or {}
    found = {"model": ckpt["model_name"], "image_size": ckpt.get("image_size"), **{
        k: config.get(k) for k in ("mean", "std", "interpolation", "target_layer")
    }}  # fmt: skip
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in found.items() if v is not None}


def _given(args: argparse.Namespace, name: str) -> bool:
    """Whether the command line (a flag, or a key of its ``--config`` file) set field ``name``."""
    from atcon.train.config_toml import read_toml

    if getattr(args, name, None) is not None:
        return True
    return getattr(args, "config", None) is not None and name in read_toml(args.config)


def _run(args: argparse.Namespace, strategy: str | None) -> int:
    from dataclasses import fields

    from atcon.commands._config import config_from_args
    from atcon.train.config import TrainConfig
    from atcon.train.run import train

    forced: dict[str, Any] = {}
    if strategy is not None:
        forced["strategy"] = strategy
    defaults = dict(_DEFAULTS.get(args.command, {}))
    if getattr(args, "init", None):
        forced["weights"] = args.init
        defaults.update(settings_of_checkpoint(args.init))
    cfg = config_from_args(args, defaults, **forced)
    asked: dict[str, Any] = {}
    if args.resume is not None:
        run_dir, resume = args.resume, True
        # What the user set for this resume (flags, --config): checked against the run's own.
        asked = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig) if _given(args, f.name)}
    else:
        run_dir, resume = args.out or Path("runs") / cfg.strategy, False
    summary = train(
        cfg, run_dir, resume=resume, overwrite=args.overwrite, progress=not args.no_progress, asked=asked
    )
    print(to_json(summary))
    return 0
