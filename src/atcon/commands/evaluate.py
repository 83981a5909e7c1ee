"""``atcon evaluate``: Tables 1-3 figures of a checkpoint (or two, compared) with CIs, files and a report.

Also the checkpoint helpers shared with ``atcon explain`` and the demo: :func:`load_model`
rebuilds a trained model from an atcon checkpoint, :func:`checkpoint_dataset` rebuilds the test
(or validation) set of the run it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from atcon.evaluate.localization import LocalizationProtocol
from atcon.evaluate.metrics import Task


@dataclass
class LoadedModel:
    """A model rebuilt from an atcon checkpoint.

    Attributes:
        model: the classifier, in eval mode on the CPU.
        checkpoint: the checkpoint dict (``config``, ``classes``, ``task``, ...).
        path: the checkpoint file.
        name: a label (the run folder's name).
        sha256: hash of the checkpoint file.
    """

    model: nn.Module
    checkpoint: dict[str, Any]
    path: Path
    name: str
    sha256: str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["classes"])

    @property
    def task(self) -> Task:
        task: Task = self.checkpoint["task"]
        return task

    @property
    def video(self) -> bool:
        return bool(self.checkpoint.get("video", False))

    @property
    def run_dir(self) -> Path:
        """The run folder (``RUN/checkpoints/best.pt`` -> ``RUN``)."""
        parent = self.path.resolve().parent
        return parent.parent if parent.name == "checkpoints" else parent

    @property
    def target_layer(self) -> str | None:
        from atcon.models import model_spec

        layer = self.checkpoint.get("config", {}).get("target_layer")
        return layer or model_spec(self.checkpoint["model_name"]).target_layer


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(path: str | Path, name: str | None = None) -> LoadedModel:
    """Rebuild the model of an atcon training checkpoint (weights-only loading).

    Args:
        path: ``checkpoints/best.pt`` or ``last.pt`` of a run.
        name: label for tables (default: the run folder's name).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an atcon training checkpoint.
    """
    from atcon.models import build_model
    from atcon.train.checkpoint import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    missing = [
        k for k in ("model", "model_name", "num_classes", "classes", "task", "config") if k not in ckpt
    ]
    if missing:
        raise ValueError(f"{path} is not an atcon training checkpoint (missing {', '.join(missing)})")
    model = build_model(ckpt["model_name"], int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    loaded = LoadedModel(model.eval(), ckpt, path, name or "", file_sha256(path))
    if not name:
        loaded.name = loaded.run_dir.name
    return loaded


def checkpoint_dataset(loaded: LoadedModel, split: str = "test", data: str | None = None) -> Dataset[Any]:
    """The evaluation items of a checkpoint.

    Without ``data``: the ``split`` (``test`` or ``val``) of the run's ``split.json`` (drawn
    again from the config when the file is missing). With ``data``: that source's own
    ``split`` list -- a built-in benchmark's split, a VOC folder's ``ImageSets/Main/<split>.txt``,
    or every clip of a video folder/manifest -- with the checkpoint's classes and input size.

    Args:
        loaded: the checkpoint.
        split: ``"test"`` or ``"val"``.
        data: another data source, or None for the run's own.
    """
    from atcon import data as D
    from atcon.train.config import TrainConfig
    from atcon.train.data import build_task_data

    cfg = TrainConfig(**loaded.checkpoint["config"])
    size = int(loaded.checkpoint.get("image_size") or 0) or None
    if data is None:
        split_file = loaded.run_dir / "split.json"
        task_data = build_task_data(cfg, D.Split.load(split_file) if split_file.is_file() else None)
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val' for a run's own data, got {split!r}")
        ds: Dataset[Any] = task_data.test if split == "test" else task_data.val
        return ds
    classes = list(loaded.classes)
    side = size or 128
    if data in D.BENCHMARKS:
        if loaded.video:
            return D.load_benchmark(  # type: ignore[no-any-return]
                data,
                split,
                seed=cfg.data_seed,
                size=cfg.data_size,
                transform=D.clip_eval_transform(),
                cache=True,
                frame_size=(side, side),
                classes=classes,
            )
        return D.load_benchmark(  # type: ignore[no-any-return]
            data,
            split,
            seed=cfg.data_seed,
            size=cfg.data_size,
            transform=D.image_eval_transform(side),
            classes=classes,
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data {data!r} is neither a built-in benchmark ({', '.join(D.BENCHMARKS)}) nor a path"
        )
    if loaded.video:
        return D.VideoClipDataset(
            path, classes=classes, transform=D.clip_eval_transform(), frame_size=(side, side), cache=True
        )
    return D.VOCDataset(path, split, classes=classes, transform=D.image_eval_transform(side))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="F1, mAP, Grad-CAM localization (and faithfulness) with bootstrap CIs; results files and report",
        description="Evaluate a trained checkpoint on its run's test set: per-class/macro/micro F1 and mAP, "
        "and Grad-CAM localization of true positives (IoU, pointing game, energy) when the data has boxes, "
        "each with a 95%% bootstrap CI. With --compare, the second checkpoint is the reference row and the "
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
        "--threshold", type=float, default=0.5, help="IoU threshold on the rescaled map (paper: 0.5)"
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


def label_text(scores: Tensor, task: Task, classes: tuple[str, ...], threshold: float = 0.5) -> list[str]:
    """Predicted labels as text: classes over the threshold (multi-label, ``"none"`` if none) or the argmax."""
    if task == "multiclass":
        return [classes[int(i)] for i in scores.argmax(dim=1)]
    hits = scores.float().sigmoid() > threshold
    return ["+".join(classes[c] for c in row.nonzero()[:, 0].tolist()) or "none" for row in hits]


def truth_text(target: dict[str, Any], task: Task, classes: tuple[str, ...]) -> list[str]:
    """Ground-truth labels of a collated batch as text."""
    if task == "multiclass":
        return [classes[int(i)] for i in torch.as_tensor(target["label"]).reshape(-1)]
    labels = torch.as_tensor(target["labels"]) > 0.5
    return ["+".join(classes[c] for c in row.nonzero()[:, 0].tolist()) or "none" for row in labels]


def run(args: argparse.Namespace) -> int:
    from atcon import report
    from atcon.evaluate.pipeline import (
        comparisons_against,
        evaluate_model,
        per_class_table,
        results_csv,
        results_table,
    )

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
    protocol = LocalizationProtocol(threshold=args.threshold, pointing_tolerance=args.tolerance)
    results = []
    for m in models:
        print(f"evaluating {m.name} ({m.path}) on {len(dataset)} {args.split} items, device {device} ...")  # type: ignore[arg-type]
        results.append(
            evaluate_model(
                m.model,
                dataset,
                m.task,
                device=device,
                batch_size=args.batch_size,
                target_layer=m.target_layer,
                protocol=protocol,
                n_resamples=args.resamples,
                seed=args.seed,
                faithfulness=args.faithfulness,
                classes=m.classes,
                name=m.name,
                num_workers=args.workers,
            )
        )
    reference = models[0].name if len(models) == 2 else None
    comparisons = comparisons_against(results, reference) if reference else {}
    table = results_table(results, reference=reference, comparisons=comparisons)
    level = f"{round(100 * results[0].confidence)}%"
    note = (
        f"Values in %, {level} bootstrap CIs ({args.resamples} resamples of the {results[0].n_items} "
        f"{args.split} items, seed {args.seed})"
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
        print(comp.to_markdown())

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
    (out / "results.json").write_text(json.dumps(_json_safe(info), indent=1, allow_nan=False) + "\n")
    markdown = [f"# Evaluation ({args.split})", "", table, "", note, ""]
    if has_loc:
        markdown += [str(protocol), ""]
    for comp in comparisons.values():
        markdown += [f"## {comp.name_a} vs. {comp.name_b}", "", comp.to_markdown(), ""]
    markdown += ["## Per-class F1", "", per_class_table(results), ""]
    (out / "results.md").write_text("\n".join(markdown))
    (out / "results.csv").write_text(results_csv(results, comparisons))
    for m, r in zip(models, results):
        r.save(out / f"evaluation-{_slug(m.name)}.pt")

    sections = [report.table(table, "Results", caption=note)]
    if has_loc:
        sections.append(report.protocol(protocol))
    for comp in comparisons.values():
        sections.append(
            report.table(comp.to_markdown(), f"{comp.name_a} vs. {comp.name_b} (paired bootstrap)")
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


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats (undefined metrics, p-values) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "model"


def attention_examples(models: list[LoadedModel], dataset: Dataset[Any], n: int) -> Any:
    """Comparison figure (paper Figures 1-2) of the first ``n`` items for one or two models."""
    from atcon.commands.explain import model_maps
    from atcon.data import collate
    from atcon.viz import comparison_figure

    n = min(n, len(dataset))  # type: ignore[arg-type]
    x, target = collate([dataset[i] for i in range(n)])
    first = models[0]
    truth = truth_text(target, first.task, first.classes)
    maps = [model_maps(m, x) for m in models]
    frame = x.shape[2] // 2 if x.ndim == 5 else None
    mean, std = display_stats(first)
    if frame is not None:
        x = x[:, :, frame]
        for mm in maps:
            mm.cams, mm.gbs = mm.cams[:, frame], mm.gbs[:, :, frame]
            mm.masks = None if mm.masks is None else mm.masks[:, frame]
    return comparison_figure(x, truth, maps, mean=mean, std=std)


def display_stats(loaded: LoadedModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean and std of the model's inputs (ImageNet for images, Kinetics for clips)."""
    from atcon.data import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD

    return (KINETICS_MEAN, KINETICS_STD) if loaded.video else (IMAGENET_MEAN, IMAGENET_STD)
