"""``atcon evaluate``: Tables 1-3 figures of a checkpoint (or two, compared) with CIs, files and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atcon.commands._common import slug
from atcon.commands._config import Group, add_settings, given_keys, read_settings
from atcon.evaluate.results import EvalSpec

SPEC = Group(
    EvalSpec, exclude=("task", "classes", "target_layer", "localization", "device", "eps", "chunk_size")
)
"""The evaluation settings (the checkpoint gives the task, classes and Grad-CAM layer)."""


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
    # The IoU threshold's former name, kept working (it said nothing of which threshold it was).
    p.add_argument("--threshold", dest="old_threshold", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--figures", type=int, default=4, help="items shown in the report's attention figure (0: none)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    add_settings(p, SPEC, title="atcon evaluate settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One function on purpose: a linear script (load, evaluate, print, write the results files and
    the report) whose steps share the same few locals; the work is in :mod:`atcon.evaluate`.
    """
    from atcon import report
    from atcon.devices import resolve_device
    from atcon.evaluate import (
        comparison_table,
        comparisons_against,
        per_class_table,
        results_csv,
        results_table,
    )
    from atcon.explain import attention_examples
    from atcon.results_io import write_csv, write_json, write_markdown
    from atcon.trained_models import checkpoint_dataset, evaluate_checkpoint, load_model

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
    forced = {"device": device}
    if args.old_threshold is not None:
        print("atcon evaluate: --threshold is now --iou-threshold", file=sys.stderr)
        if "iou_threshold" not in given_keys(args, SPEC):
            forced["iou_threshold"] = args.old_threshold
    (spec,) = read_settings(args, SPEC, forced=forced)
    results = []
    for m in models:
        print(f"evaluating {m.name} ({m.path}) on {len(dataset)} {args.split} items, device {device} ...")  # type: ignore[arg-type]
        results.append(evaluate_checkpoint(m, dataset, spec))
    reference = models[0].name if len(models) == 2 else None
    comparisons = comparisons_against(results, reference) if reference else {}
    table = results_table(results, reference=reference, comparisons=comparisons)
    level = f"{round(100 * results[0].confidence)}%"
    note = (
        f"Values in %, {level} bootstrap CIs ({spec.n_resamples} resamples of the {results[0].n_items} "
        f"{args.split} items, seed {spec.seed})"
        + (f"; F1 at decision threshold {spec.threshold:g}" if main.task == "multilabel" else "")
        + (f"; * p < 0.05, paired bootstrap test vs. {reference}." if reference else ".")
    )
    has_loc = any(r.localization is not None for r in results)
    print()
    print(table)
    print(note)
    if has_loc:
        print(spec.protocol)
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
        markdown += [str(spec.protocol), ""]
    for comp in comparisons.values():
        markdown += [f"## {comp.name_a} vs. {comp.name_b}", "", comparison_table(comp), ""]
    markdown += ["## Per-class F1", "", per_class_table(results), ""]
    write_markdown(out / "results.md", "\n".join(markdown))
    write_csv(out / "results.csv", results_csv(results, comparisons))
    for m, r in zip(models, results):
        r.save(out / f"evaluation-{slug(m.name, 'model')}.pt")

    sections = [report.table(table, "Results", caption=note)]
    if has_loc:
        sections.append(report.protocol(spec.protocol))
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
