"""The paper's comparisons as experiments: classification (Tables 1-2), localization (Table 3),
training strategies (section 5) and the mask controls.

Each experiment is a list of :class:`~atcon.experiments.runner.Run` specs (methods x samples per
class x seeds x architectures) handed to a :class:`~atcon.experiments.runner.Store`, then tables
of seed-averaged figures (:mod:`atcon.experiments.aggregate`). Results go to
``DIR/results/<name>.{md,csv,json,html}`` (and ``<name>.png`` where there is a plot).

Methods (images):
    ``Baseline`` supervised, no augmentation; ``Baseline + Aug`` with the paper's augmentation;
    ``Baseline + Aug + Attention`` = unsupervised consistency fine-tuning of ``Baseline + Aug``
    on its own training images without labels.
Methods (clips, Table 1):
    ``Baseline`` supervised from random initialisation; ``B + Attention`` its consistency
    fine-tuning; ``SimCLR`` supervised from the SimCLR-pretrained source network;
    ``S + Attention`` its consistency fine-tuning.
Unless ``weights`` are given, image models start from the benchmark's source-pretrained network
(:func:`atcon.train.source.source_checkpoint`, the stand-in for ImageNet weights).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atcon.experiments.aggregate import Row, aggregate, cell, compare_rows
from atcon.experiments.runner import Run, Store
from atcon.models import model_spec
from atcon.train.checkpoint import atomic_write_text
from atcon.train.config import TrainConfig

CONTROLS: dict[str, dict[str, Any]] = {
    "(a) Guided Backprop mask (method)": {},
    "(b) GB of a re-initialised network": {"mask_source": "random_network"},
    "(c) Sobel edges of the input": {"mask_source": "sobel"},
    "(d) random smooth mask": {"mask_source": "random_smooth"},
    "(e) method, detach_mask": {"detach_mask": True},
}


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment varies (the training settings themselves are a :class:`TrainConfig`).

    Attributes:
        seeds: training seeds; seed ``s`` also draws the few-shot split (``split_seed = s``).
        per_class: samples per class of the classification experiment.
        at_per_class: the one samples-per-class value of localization, strategies and controls.
        models: architectures of the localization experiment (default: the config's model).
        finetune_epochs: epochs of consistency fine-tuning.
        finetune_lr: its learning rate (default: the paper's 5e-6).
        source_epochs: epochs of source pretraining when no weights are given (default 8, as
            in the CPU demos: supervised on single objects for images, SimCLR for clips).
        resamples: bootstrap resamples.
        device: evaluation device.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    per_class: tuple[int, ...] = (2, 4, 8, 12, 16)
    at_per_class: int = 4
    models: tuple[str, ...] = ()
    finetune_epochs: int = 10
    finetune_lr: float | None = None
    source_epochs: int | None = None
    resamples: int = 1000
    device: str = "auto"


def _video(cfg: TrainConfig) -> bool:
    return model_spec(cfg.model).video


def source_weights(cfg: TrainConfig, exp: ExperimentConfig, progress: bool) -> str | None:
    """The starting weights: ``cfg.weights`` or, for a built-in benchmark, its source network."""
    from atcon.data import BENCHMARKS
    from atcon.train.data import image_size_for
    from atcon.train.source import source_checkpoint

    if cfg.weights is not None or cfg.data not in BENCHMARKS:
        return cfg.weights
    epochs = exp.source_epochs or 8
    path = source_checkpoint(
        cfg.data,
        cfg.model,
        image_size=image_size_for(cfg),
        epochs=epochs,
        seed=cfg.data_seed,
        size=cfg.data_size,
        device=cfg.device,
        workers=cfg.workers,
        progress=progress,
    )
    return str(path)


def _finetune(cfg: TrainConfig, exp: ExperimentConfig, **changes: Any) -> TrainConfig:
    return cfg.replace(
        strategy="finetune", epochs=exp.finetune_epochs, lr=exp.finetune_lr, new_head=False, **changes
    )


def method_runs(
    base: TrainConfig,
    exp: ExperimentConfig,
    per_class: int,
    seed: int,
    weights: str | None,
    model: str | None = None,
) -> dict[str, Run]:
    """The runs of one (samples per class, seed[, model]) cell, by method name."""
    model = model or base.model
    cfg = base.replace(
        model=model, per_class=per_class, seed=seed, split_seed=seed, strategy="supervised", split=None
    )
    tags = {"per_class": per_class, "seed": seed, "model": model}
    if not _video(cfg):
        plain = Run(
            "Baseline", cfg.replace(augment=False, weights=weights, new_head=weights is not None), None, tags
        )
        aug = Run(
            "Baseline + Aug",
            cfg.replace(augment=True, weights=weights, new_head=weights is not None),
            None,
            tags,
        )
        att = Run("Baseline + Aug + Attention", _finetune(aug.cfg, exp), aug, tags)
        return {r.method: r for r in (plain, aug, att)}
    scratch = Run("Baseline", cfg.replace(weights=None, new_head=False), None, tags)
    runs = {
        "Baseline": scratch,
        "B + Attention": Run("B + Attention", _finetune(scratch.cfg, exp), scratch, tags),
    }
    if weights is not None:
        simclr = Run("SimCLR", cfg.replace(weights=weights, new_head=True), None, tags)
        runs["SimCLR"] = simclr
        runs["S + Attention"] = Run("S + Attention", _finetune(simclr.cfg, exp), simclr, tags)
    return runs


# Row -> the row it is tested against.
REFERENCES = {
    "Baseline + Aug": "Baseline",
    "Baseline + Aug + Attention": "Baseline + Aug",
    "B + Attention": "Baseline",
    "SimCLR": "Baseline",
    "S + Attention": "SimCLR",
}


@dataclass
class Outcome:
    """An experiment's tables and where they were written."""

    name: str
    markdown: str
    rows: list[dict[str, Any]]
    seconds: float
    files: list[Path]


def _rows(store: Store, runs_by_seed: dict[str, list[Run]], exp: ExperimentConfig) -> dict[str, Row]:
    rows = {}
    for method, runs in runs_by_seed.items():
        records = [store.get(r) for r in runs]
        rows[method] = aggregate([r.result for r in records], method, n_resamples=exp.resamples)
        rows[method].extra["best_epochs"] = [r.best_epoch for r in records]
    return rows


def _p_values(
    rows: dict[str, Row], refs: dict[str, str], exp: ExperimentConfig
) -> dict[str, dict[str, float]]:
    return {
        name: compare_rows(row, rows[refs[name]], n_resamples=exp.resamples)
        for name, row in rows.items()
        if refs.get(name) in rows
    }


def _metric_table(
    groups: dict[str, dict[str, Row]],
    p_values: dict[str, dict[str, dict[str, float]]],
    keys: Sequence[str],
    group_title: str,
) -> str:
    """Rows = (group, method); columns = metrics; cells ``mean [CI]`` with stars vs the reference."""
    from atcon.evaluate import LABELS

    head = [
        group_title,
        "method",
        *(LABELS.get(k, k) + " (%)" for k in keys),
        "seed sd (first metric)",
        "TP pairs",
        "selected epoch",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---" + "|---:" * (len(head) - 2) + "|"]
    for group, rows in groups.items():
        for name, row in rows.items():
            ps = p_values.get(group, {}).get(name)
            sd = row.seed_sd(keys[0])
            cells = [group, name, *(cell(row, k, ps) for k in keys)]
            cells += ["n/a" if math.isnan(sd) else f"{100 * sd:.1f}", "/".join(map(str, row.n_pairs))]
            cells.append("/".join(map(str, row.extra.get("best_epochs", []))))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pivot_table(
    groups: dict[str, dict[str, Row]], p_values: dict[str, dict[str, dict[str, float]]], key: str
) -> str:
    """Table 2 shape: rows = samples per class, columns = methods, one metric."""
    methods = list(next(iter(groups.values())))
    lines = ["| samples/class | " + " | ".join(methods) + " |", "|---" + "|---:" * len(methods) + "|"]
    for group, rows in groups.items():
        cells = [cell(rows[m], key, p_values.get(group, {}).get(m)) if m in rows else "n/a" for m in methods]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_class_table(rows: dict[str, Row], p_values: dict[str, dict[str, float]]) -> str:
    """Table 1 shape: rows = methods, columns = mean F1 then per-class F1 (seed means)."""
    first = next(iter(rows.values()))
    lines = [
        "| method | mean F1 (%) | " + " | ".join(first.classes) + " |",
        "|---|---:" + "|---:" * len(first.classes) + "|",
    ]
    for name, row in rows.items():
        per = row.metrics["f1_per_class"].estimate
        cells = [cell(row, "f1_macro", p_values.get(name)), *(f"{100 * float(v):.1f}" for v in per)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _flat(
    groups: dict[str, dict[str, Row]], p_values: dict[str, dict[str, dict[str, float]]], refs: dict[str, str]
) -> list[dict[str, Any]]:
    out = []
    for group, rows in groups.items():
        for name, row in rows.items():
            for key, m in row.metrics.items():
                if m.estimate.numel() != 1:
                    continue
                out.append(
                    {
                        "group": group,
                        "method": name,
                        "metric": key,
                        "value": float(m.estimate),
                        "low": float(m.low),
                        "high": float(m.high),
                        "seed_sd": row.seed_sd(key),
                        "seeds": row.seed_values.get(key, []),
                        "reference": refs.get(name, ""),
                        "p_value": p_values.get(group, {}).get(name, {}).get(key, math.nan),
                        "best_epochs": row.extra.get("best_epochs", []),
                    }
                )
    return out


def _write(
    store: Store,
    name: str,
    title: str,
    sections: list[tuple[str, str]],
    flat: list[dict[str, Any]],
    meta: dict[str, Any],
    seconds: float,
    figure: Any = None,
) -> Outcome:
    from atcon import report

    folder = store.out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    timing = store.timing_table()
    note = (
        "Cells: mean over seeds [95% bootstrap interval over test items, same resamples for every seed]; "
        "selected epoch: the validation-selected epoch of each seed (-1: fine-tuning kept its starting model); "
        "`*`: paired bootstrap p < 0.05 against the row's reference "
        f"({', '.join(f'{a} vs {b}' for a, b in meta.get('references', {}).items())})."
    )
    md = f"# {title}\n\n{note}\n\n" + "\n\n".join(f"## {t}\n\n{body}" for t, body in sections)
    md += f"\n\n## Runs (wall time)\n\n{timing}\n\nTotal: {seconds:.0f} s\n"
    files = [folder / f"{name}.md", folder / f"{name}.json", folder / f"{name}.csv", folder / f"{name}.html"]
    atomic_write_text(files[0], md)
    atomic_write_text(
        files[1], json.dumps({"meta": meta, "rows": flat, "seconds": seconds}, indent=1, default=str)
    )
    buf = io.StringIO()
    if flat:
        w = csv.DictWriter(buf, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows({**r, "seeds": " ".join(f"{v:.4f}" for v in r["seeds"])} for r in flat)
    atomic_write_text(files[2], buf.getvalue())
    parts = [report.text(note)] + [report.table(body, t) for t, body in sections]
    if figure is not None:
        png = folder / f"{name}.png"
        figure.savefig(png, dpi=100, bbox_inches="tight")
        files.append(png)
        parts.append(report.figure(figure, "Figure"))
    parts += [
        report.table(timing, "Runs (wall time)"),
        report.text(json.dumps(meta, indent=1, default=str), "Settings", preformatted=True),
    ]
    report.write_report(files[3], title, parts)
    return Outcome(name, md, flat, seconds, files)


def _meta(base: TrainConfig, exp: ExperimentConfig, refs: dict[str, str]) -> dict[str, Any]:
    return {"train_config": base.to_dict(), "experiment": asdict(exp), "references": refs}


def run_classification(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Tables 1-2: every method over samples per class and seeds."""
    start = time.perf_counter()
    weights = source_weights(base, exp, store.progress)
    groups: dict[str, dict[str, Row]] = {}
    p_values = {}
    for pc in exp.per_class:
        by_method: dict[str, list[Run]] = {}
        for seed in exp.seeds:
            for method, run in method_runs(base, exp, pc, seed, weights).items():
                by_method.setdefault(method, []).append(run)
        groups[str(pc)] = _rows(store, by_method, exp)
        p_values[str(pc)] = _p_values(groups[str(pc)], REFERENCES, exp)
    video = _video(base)
    sections = []
    if video:
        for group, rows in groups.items():
            sections.append(
                (
                    f"F1 on the test clips, {group} clips per class (Table 1)",
                    _per_class_table(rows, p_values[group]),
                )
            )
    sections += [
        ("F1 macro (Table 2)", _pivot_table(groups, p_values, "f1_macro")),
        ("mAP (Table 2)", _pivot_table(groups, p_values, "map")),
    ]
    sections.append(
        (
            "All metrics",
            _metric_table(groups, p_values, ["f1_macro", "map", "iou", "pointing"], "samples/class"),
        )
    )
    from atcon.viz import metric_curves_figure

    seconds = time.perf_counter() - start
    return _write(
        store,
        "classification",
        f"Classification: {base.data}, {base.model}, seeds {list(exp.seeds)}",
        sections,
        _flat(groups, p_values, REFERENCES),
        _meta(base, exp, REFERENCES),
        seconds,
        metric_curves_figure(groups, ["f1_macro", "map"]),
    )


def run_localization(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Table 3: Grad-CAM IoU and pointing game on true positives, per architecture."""
    start = time.perf_counter()
    groups: dict[str, dict[str, Row]] = {}
    p_values = {}
    for model in exp.models or (base.model,):
        cfg = base.replace(model=model)
        weights = source_weights(cfg, exp, store.progress)
        by_method: dict[str, list[Run]] = {}
        for seed in exp.seeds:
            runs = method_runs(cfg, exp, exp.at_per_class, seed, weights, model)
            for method, run in runs.items():
                if method != "Baseline" or _video(cfg):
                    by_method.setdefault(method, []).append(run)
        groups[model] = _rows(store, by_method, exp)
        p_values[model] = _p_values(groups[model], REFERENCES, exp)
    sections = [
        (
            f"Localization of true positives at {exp.at_per_class} samples per class (Table 3)",
            _metric_table(groups, p_values, ["iou", "pointing", "f1_macro", "map"], "architecture"),
        )
    ]
    return _write(
        store,
        "localization" + "".join(f"-{m}" for m in exp.models),
        f"Localization: {base.data}, seeds {list(exp.seeds)}",
        sections,
        _flat(groups, p_values, REFERENCES),
        _meta(base, exp, REFERENCES),
        time.perf_counter() - start,
    )


def _single_cell(
    base: TrainConfig, exp: ExperimentConfig, store: Store, extra: Callable[[Run], dict[str, Run]]
) -> tuple[dict[str, Row], str]:
    """Rows of one samples-per-class cell: the reference model and the runs ``extra(reference)`` adds.

    The reference is the best supervised model of the cell: ``Baseline + Aug`` for images,
    ``SimCLR`` for clips (``Baseline`` without source weights).
    """
    weights = source_weights(base, exp, store.progress)
    by_method: dict[str, list[Run]] = {}
    reference = ""
    for seed in exp.seeds:
        runs = method_runs(base, exp, exp.at_per_class, seed, weights)
        reference = next(m for m in ("Baseline + Aug", "SimCLR", "Baseline") if m in runs)
        for method, run in {reference: runs[reference], **extra(runs[reference])}.items():
            by_method.setdefault(method, []).append(run)
    return _rows(store, by_method, exp), reference


def run_strategies(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Section 5: consistency fine-tuning after supervised training vs the combined and alternated losses."""
    start = time.perf_counter()

    def extra(ref: Run) -> dict[str, Run]:
        tags = ref.tags
        return {
            "fine-tune (after supervised)": Run(
                "fine-tune (after supervised)", _finetune(ref.cfg, exp), ref, tags
            ),
            "combined (L + L_con)": Run(
                "combined (L + L_con)", ref.cfg.replace(strategy="combined"), None, tags
            ),
            "alternated": Run("alternated", ref.cfg.replace(strategy="alternated"), None, tags),
        }

    rows, reference = _single_cell(base, exp, store, extra)
    refs = {name: reference for name in rows if name != reference}
    group = f"{exp.at_per_class}"
    p_values = {group: _p_values(rows, refs, exp)}
    sections = [
        (
            f"Training strategies at {exp.at_per_class} samples per class",
            _metric_table({group: rows}, p_values, ["f1_macro", "map", "iou", "pointing"], "samples/class"),
        )
    ]
    return _write(
        store, "strategies", f"Training strategies: {base.data}, {base.model}", sections,
        _flat({group: rows}, p_values, refs), _meta(base, exp, refs), time.perf_counter() - start,
    )  # fmt: skip


def run_controls(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Does the gain come from the Guided Backprop mask, or from any mask? Five fine-tunings from one baseline."""
    start = time.perf_counter()

    def extra(ref: Run) -> dict[str, Run]:
        return {
            name: Run(name, _finetune(ref.cfg, exp, **changes), ref, ref.tags)
            for name, changes in CONTROLS.items()
        }

    rows, reference = _single_cell(base, exp, store, extra)
    method = next(iter(CONTROLS))
    refs = {name: reference for name in rows if name != reference}
    against_method = {name: method for name in rows if name not in (reference, method)}
    group = f"{exp.at_per_class}"
    p_ref = {group: _p_values(rows, refs, exp)}
    p_method = {group: _p_values(rows, against_method, exp)}
    keys = ["f1_macro", "map", "iou", "pointing"]
    sections = [
        (
            f"Mask controls at {exp.at_per_class} samples per class; * vs {reference}",
            _metric_table({group: rows}, p_ref, keys, "samples/class"),
        ),
        (f"The same rows; * vs {method}", _metric_table({group: rows}, p_method, keys, "samples/class")),
    ]
    return _write(
        store, "controls", f"Mask controls: {base.data}, {base.model}", sections,
        _flat({group: rows}, p_ref, refs), _meta(base, exp, refs), time.perf_counter() - start,
    )  # fmt: skip


RUNNERS: dict[str, Callable[[TrainConfig, ExperimentConfig, Store], Outcome]] = {
    "classification": run_classification,
    "localization": run_localization,
    "strategies": run_strategies,
    "controls": run_controls,
}


def run_experiment(
    name: str, base: TrainConfig, exp: ExperimentConfig, out: str | Path, *, progress: bool = True
) -> Outcome:
    """Run one experiment into ``out`` (finished runs there are reused)."""
    if name not in RUNNERS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(RUNNERS)} or ablation")
    store = Store(out, device=exp.device, n_resamples=exp.resamples, progress=progress)
    return RUNNERS[name](base, exp, store)
