"""``atcon demo``: the whole pipeline on a built-in benchmark (see :mod:`atcon.demo`)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from atcon.commands._config import Group, add_settings, read_settings
from atcon.demo import PRESETS, DemoConfig


def _preset(args: argparse.Namespace) -> str:
    return ("full" if args.full else "small") + ("-video" if args.video else "")


def _group(preset: str) -> Group:
    return Group(DemoConfig, defaults=asdict(PRESETS[preset]))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="source pretraining, baseline, consistency fine-tuning, evaluation and report on built-in data",
        description="Build the built-in benchmark, source-pretrain, train a few-shot baseline, fine-tune it with "
        "the attention-consistency loss, evaluate both (F1, mAP, IoU with CIs and stars) and write a report. "
        "Presets: small (CPU, minutes), small-video (--video), full and full-video (--full: GPU). The defaults "
        "shown are the small preset's; --video and --full pick another preset's, and any setting below "
        "overrides the preset.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--video", action="store_true", help="the fashion-events clip benchmark instead of images")
    p.add_argument("--full", action="store_true", help="the paper-sized run (resnet50 / r3d_18), for a GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings(p, _group("small"), title="atcon demo settings (the small preset's defaults)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atcon.demo import run_demo

    (config,) = read_settings(args, _group(_preset(args)))
    summary = run_demo(config, args.out, progress=not args.no_progress)
    print()
    print(f"Results on the test set ({config.benchmark}, {config.model}, {config.per_class} per class):")
    print(summary["table"])
    print()
    print(summary["protocol"])
    print("Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))
    print(f"Report: {summary['report']}")
    return 0
