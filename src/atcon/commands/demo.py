"""``atcon demo``: the whole pipeline on a built-in benchmark (see :mod:`atcon.demo`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="source pretraining, baseline, consistency fine-tuning, evaluation and report on built-in data",
        description="Build the built-in benchmark, source-pretrain, train a few-shot baseline, fine-tune it with "
        "the attention-consistency loss, evaluate both (F1, mAP, IoU with CIs and stars) and write a report. "
        "Presets: small (CPU, minutes), small-video, full and full-video (GPU).",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--video", action="store_true", help="the fashion-events clip benchmark instead of images")
    p.add_argument("--full", action="store_true", help="the paper-sized run (resnet50 / r3d_18), for a GPU")
    p.add_argument("--per-class", type=int, default=None, help="training samples per class")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atcon.demo import PRESETS, run_demo

    name = ("full" if args.full else "small") + ("-video" if args.video else "")
    config = PRESETS[name]
    changes = {
        k: v
        for k, v in (("per_class", args.per_class), ("device", args.device), ("seed", args.seed))
        if v is not None
    }
    config = replace(config, **changes)
    summary = run_demo(config, args.out, progress=not args.no_progress)
    print()
    print(f"Results on the test set ({config.benchmark}, {config.model}, {config.per_class} per class):")
    print(summary["table"])
    print()
    print(summary["protocol"])
    print("Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))
    print(f"Report: {summary['report']}")
    return 0
