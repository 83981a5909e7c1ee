"""``atcon evaluate``: Tables 1-3 figures of a checkpoint (or two, compared) with CIs, files and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atcon.commands._common import slug


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="F1, mAP, Grad-CAM localization (and faithfulness) with bootstrap CIs; results files and report",
        description="Evaluate a trained checkpoint on its run's test set: per-class/macro/micro F1 and mAP, "
        "and Grad-CAM localization of true positives (IoU, pointing game, energy) when the data has boxes, "
        "each with a 95% bootstrap CI. With --compare, the second checkpoint is the reference row and the "
        "first is starred where a paired bootstrap test gives p < 0.05. Writes results.json, results.md, "
        "results.csv, per-method raw tensors and report.html to --out.",
    )
    p.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint to evaluate (e.g. RUN/checkpoints/best.pt)"
    )
    p.add_argument(
        "--compare", type=Path, default=None, help="reference checkpoint evaluated on the same items"
    )
    p.add_argument("--split", choices=("test", "val"), default="test", help="which items (default: test)")
    p.add_argument(
        "--data", default=None, help="evaluate on this data source's --split list instead of the run's"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/evaluation-SPLIT)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--iou-threshold",
        type=float,
        default=None,
        help="localization: a pixel of the rescaled map is in the IoU mask at or above it (default 0.5, "
        "the paper's)",
    )
    # The IoU threshold's former name, kept working (it said nothing of which threshold it was).
    p.add_argument("--threshold", dest="old_threshold", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--decision-threshold",
        type=float,
        default=0.5,
        help="multi-label F1: a class is predicted when its probability is above it; also decides "
        "which (item, class) pairs are true positives for localization (default 0.5)",
    )
    p.add_argument(
        "--measure-at",
        choices=("input", "original"),
        default="input",
        help="image size localization is measured at: input (the network's input size, boxes resized "
        "with the image) or original (each image's own size, boxes as annotated) (default: input)",
    )
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels")
    p.add_argument("--faithfulness", action="store_true", help="also deletion/insertion AUC of the maps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data-loading workers")
    p.add_argument(
        "--figures", type=int, default=4, help="items shown in the report's attention figure (0: none)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atcon import report
    from atcon.devices import resolve_device
    from atcon.evaluate import (
        EvalSpec,
        LocalizationProtocol,
        comparison_table,
        comparisons_against,
        per_class_table,
        results_csv,
        results_table,
    )
    from atcon.explain import attention_examples
    from atcon.results_io import write_csv, write_json, write_markdown
    from atcon.trained_models import checkpoint_dataset, evaluate_checkpoint, load_model

    if args.resamples < 1:
        raise ValueError(f"--resamples must be >= 1, got {args.resamples}")
    device = resolve_device(args.device)
    main = load_model(args.checkpoint)
    models = [main]
    if args.compare is not None:
        ref = load_model(args.compare)
        if ref.classes != main.classes or ref.task != main.task or ref.video != main.video:
            raise ValueError(f"{args.compare} has other classes or another task than {args.checkpoint}")
        if ref.name == main.name:
            main.name, ref.name = f"{main.name} (A)", f"{ref.name} (B)"
        models = [ref, main]
    dataset = checkpoint_dataset(main, args.split, args.data)
    iou_threshold = args.iou_threshold
    if args.old_threshold is not None:
        print("atcon evaluate: --threshold is now --iou-threshold", file=sys.stderr)
        iou_threshold = args.old_threshold if iou_threshold is None else iou_threshold
    protocol = LocalizationProtocol(
        threshold=0.5 if iou_threshold is None else iou_threshold,
        pointing_tolerance=args.tolerance,
        measure_at=args.measure_at,
    )
    spec = EvalSpec(
        threshold=args.decision_threshold,
        protocol=protocol,
        faithfulness=args.faithfulness,
        n_resamples=args.resamples,
        seed=args.seed,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    results = []
    for m in models:
        print(f"evaluating {m.name} ({m.path}) on {len(dataset)} {args.split} items, device {device} ...")  # type: ignore[arg-type]
        results.append(evaluate_checkpoint(m, dataset, spec))
    reference = models[0].name if len(models) == 2 else None
    comparisons = comparisons_against(results, reference) if reference else {}
    table = results_table(results, reference=reference, comparisons=comparisons)
    level = f"{round(100 * results[0].confidence)}%"
    note = (
        f"Values in %, {level} bootstrap CIs ({args.resamples} resamples of the {results[0].n_items} "
        f"{args.split} items, seed {args.seed})"
        + (f"; F1 at decision threshold {spec.threshold:g}" if main.task == "multilabel" else "")
        + (f"; * p < 0.05, paired bootstrap test vs. {reference}." if reference else ".")
    )
    has_loc = any(r.localization is not None for r in results)
    print()
    print(table)
    print(note)
    if has_loc:
        print(protocol)
    else:
        print("No boxes in the data: localization not evaluated.")
    for comp in comparisons.values():
        print()
        print(f"{comp.name_a} vs. {comp.name_b}:")
        print(comparison_table(comp))

    out: Path = args.out or (main.run_dir / f"evaluation-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "split": args.split,
        "data": args.data,
        "checkpoints": {m.name: {"path": str(m.path), "sha256": m.sha256} for m in models},
        "reference": reference,
        "results": [r.to_dict() for r in results],
        "comparisons": {
            name: {
                k: {"p_value": c.p_value(k), "star": c.star(k)}
                for k in c.tests
                if c.tests[k].p_value.numel() == 1
            }
            for name, c in comparisons.items()
        },
    }
    write_json(out / "results.json", info, newline=True)
    markdown = [f"# Evaluation ({args.split})", "", table, "", note, ""]
    if has_loc:
        markdown += [str(protocol), ""]
    for comp in comparisons.values():
        markdown += [f"## {comp.name_a} vs. {comp.name_b}", "", comparison_table(comp), ""]
    markdown += ["## Per-class F1", "", per_class_table(results), ""]
    write_markdown(out / "results.md", "\n".join(markdown))
    write_csv(out / "results.csv", results_csv(results, comparisons))
    for m, r in zip(models, results):
        r.save(out / f"evaluation-{slug(m.name, 'model')}.pt")

    sections = [report.table(table, "Results", caption=note)]
    if has_loc:
        sections.append(report.protocol(protocol))
    for comp in comparisons.values():
        sections.append(
            report.table(comparison_table(comp), f"{comp.name_a} vs. {comp.name_b} (paired bootstrap)")
        )
    sections.append(report.table(per_class_table(results), "Per-class F1 (%)"))
    if args.figures > 0:
        sections.append(
            report.figure(
                attention_examples(models, dataset, args.figures),
                "Attention maps",
                caption="First test items; maps of each model's top-1 class.",
            )
        )
    curves = {m.name: m.run_dir / "metrics.csv" for m in models if (m.run_dir / "metrics.csv").is_file()}
    if curves:
        sections.append(report.training_curves(curves))
    sections.append(
        report.text(
            "\n\n".join(f"`{m.name}`: `{m.path}` (sha256 `{m.sha256[:16]}...`)" for m in models),
            "Checkpoints",
        )
    )
    html = report.write_report(
        out / "report.html",
        f"atcon evaluation: {' vs. '.join(m.name for m in models)}",
        sections,
        subtitle=f"{results[0].n_items} {args.split} items",
    )
    print(f"\nresults: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.csv'}\nreport:  {html}")
    return 0
