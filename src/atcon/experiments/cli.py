"""``atcon experiment NAME``: the paper's tables as commands (so far: ``ablation``, Table 4)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "experiment",
        help="run one of the paper's experiments (ablation: Table 4)",
        description="ablation: supervised training; after every epoch the validation supervised loss and the "
        "4 x 3 consistency-loss variants; table of their Pearson correlations (Table 4) and the curves. "
        "Training flags and TOML keys as in `atcon train`. A finished experiment in --out is reused.",
    )
    p.add_argument("name", choices=["ablation"])
    p.add_argument("--out", type=Path, required=True, help="experiment folder")
    from atcon.train.config import add_config_arguments

    add_config_arguments(p, exclude=("strategy",))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atcon.experiments.ablation import run_ablation
    from atcon.train.config import config_from_args

    result = run_ablation(config_from_args(args), args.out, progress=True)
    print("Pearson correlation (%) between each consistency loss and the supervised validation loss:")
    print(result["table"])
    print(f"{args.out / 'ablation.json'}, {args.out / 'curves.png'} ({result['seconds']:.0f} s)")
    return 0
