"""``atcon experiment NAME``: the paper's tables as resumable commands."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from atcon.commands._config import Group, add_settings, read_settings
from atcon.experiments.methods import ExperimentConfig
from atcon.experiments.registry import EXPERIMENTS, NAMES
from atcon.train.config import TrainConfig

TRAIN = Group(TrainConfig, exclude=("strategy", "seed", "split_seed", "per_class", "split"))
"""The training settings of every run (seed, split and samples per class are the experiment's)."""
EXPERIMENT = Group(ExperimentConfig, exclude=("device", "finetune"))


def register(sub: Any) -> None:
    listing = "; ".join(f"{e.name}: {e.summary}" for e in EXPERIMENTS)
    p = sub.add_parser(
        "experiment",
        help=f"run one of the experiments ({', '.join(NAMES)})",
        description=f"{listing}. Every method of a (samples per class, seed) cell trains on the same "
        "split file; finished runs in --out are reused, so a killed experiment resumes. Training flags and "
        "TOML keys as in `atcon train`.",
    )
    p.add_argument("name", choices=NAMES, help="the experiment")
    p.add_argument(
        "--out", type=Path, required=True, help="experiment folder (runs are shared between experiments)"
    )
    p.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        metavar="K/N",
        help="run as process K of N sharing --out (e.g. 0/2 and 1/2 on two cores, or N cluster nodes): each "
        "trains its share of the runs and waits for the others'; process 0 writes the tables (default 0/1)",
    )
    add_settings(p, TRAIN, EXPERIMENT, title="atcon experiment settings")
    p.set_defaults(func=run)


def shard(text: str) -> tuple[int, int]:
    """``"K/N"`` as ``(K, N)`` with ``0 <= K < N``."""
    k, sep, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index, count = -1, 0
    if not sep or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: write K/N with 0 <= K < N, e.g. 0/2 and 1/2")
    return index, count


def run(args: argparse.Namespace) -> int:
    cfg, exp = read_settings(args, TRAIN, EXPERIMENT)
    exp = dataclasses.replace(exp, device=cfg.device)
    if not exp.controls and args.name not in ("regimes", "shortcut"):
        raise ValueError("--no-controls applies to the regimes and shortcut experiments only")
    from atcon.experiments import suite

    outcome = suite.run_experiment(args.name, cfg, exp, args.out, shard=args.shard)
    if args.shard[0] != 0:
        print(f"shard {args.shard[0]}/{args.shard[1]}: done; shard 0 writes the tables")
        return 0
    print(outcome.markdown)
    print("\n".join(str(f) for f in outcome.files))
    return 0
