"""The paper's comparisons as experiments: classification (Tables 1-2), localization (Table 3),
training strategies (section 5) and the mask controls.

Each experiment is a list of :class:`~atcon.experiments.runner.Run` specs (methods x samples per
class x seeds x architectures, :mod:`atcon.experiments.methods`) handed to a
:class:`~atcon.experiments.runner.Store`, then tables of seed-averaged figures
(:mod:`atcon.experiments.aggregate`, :mod:`atcon.experiments.tables`) written by
:mod:`atcon.experiments.output` to ``DIR/results/<name>.{md,csv,json,html}`` (and ``<name>.png``
where there is a plot).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from atcon.experiments.aggregate import Row, aggregate, compare_rows
from atcon.experiments.methods import (
    CONTROLS,
    REFERENCES,
    ExperimentConfig,
    finetune_config,
    is_video,
    method_runs,
    reference_method,
    source_weights,
)
from atcon.experiments.output import Outcome, run_meta, write_outcome
from atcon.experiments.runner import Run, Store
from atcon.experiments.tables import flat_rows, metric_table, per_class_table, pivot_table
from atcon.train.config import TrainConfig
from atcon.viz import metric_curves_figure

__all__ = [
    "CONTROLS",
    "REFERENCES",
    "ExperimentConfig",
    "Outcome",
    "method_runs",
    "run_classification",
    "run_controls",
    "run_experiment",
    "run_localization",
    "run_strategies",
    "source_weights",
]


def _rows(store: Store, runs_by_seed: dict[str, list[Run]], exp: ExperimentConfig) -> dict[str, Row]:
    rows = {}
    for method, runs in runs_by_seed.items():
        records = [store.get(r) for r in runs]
        rows[method] = aggregate([r.result for r in records], method, n_resamples=exp.resamples)
        rows[method].extra["best_epochs"] = [r.best_epoch for r in records]
    return rows


def _with_accuracy(groups: dict[str, dict[str, Row]], keys: list[str]) -> list[str]:
    """``keys`` with ``accuracy`` after ``f1_macro`` when the rows have it (single-label tasks)."""
    if not any("accuracy" in row.metrics for rows in groups.values() for row in rows.values()):
        return keys
    at = keys.index("f1_macro") + 1 if "f1_macro" in keys else len(keys)
    return [*keys[:at], "accuracy", *keys[at:]]


def _p_values(
    rows: dict[str, Row], refs: dict[str, str], exp: ExperimentConfig
) -> dict[str, dict[str, float]]:
    return {
        name: compare_rows(row, rows[refs[name]], n_resamples=exp.resamples)
        for name, row in rows.items()
        if refs.get(name) in rows
    }


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
    video = is_video(base)
    sections = []
    if video:
        for group, rows in groups.items():
            sections.append(
                (
                    f"F1 on the test clips, {group} clips per class (Table 1)",
                    per_class_table(rows, p_values[group]),
                )
            )
    sections.append(("F1 macro (Table 2)", pivot_table(groups, p_values, "f1_macro")))
    if _with_accuracy(groups, []):
        sections.append(("Accuracy", pivot_table(groups, p_values, "accuracy")))
    sections.append(("mAP (Table 2)", pivot_table(groups, p_values, "map")))
    keys = _with_accuracy(groups, ["f1_macro", "map", "iou", "pointing"])
    sections.append(("All metrics", metric_table(groups, p_values, keys, "samples/class")))
    seconds = time.perf_counter() - start
    return write_outcome(
        store,
        "classification",
        f"Classification: {base.data}, {base.model}, seeds {list(exp.seeds)}",
        sections,
        flat_rows(groups, p_values, REFERENCES),
        run_meta(base, exp, REFERENCES),
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
                if method != "Baseline" or is_video(cfg):
                    by_method.setdefault(method, []).append(run)
        groups[model] = _rows(store, by_method, exp)
        p_values[model] = _p_values(groups[model], REFERENCES, exp)
    sections = [
        (
            f"Localization of true positives at {exp.at_per_class} samples per class (Table 3)",
            metric_table(
                groups,
                p_values,
                _with_accuracy(groups, ["iou", "pointing", "f1_macro", "map"]),
                "architecture",
            ),
        )
    ]
    return write_outcome(
        store,
        "localization" + "".join(f"-{m}" for m in exp.models),
        f"Localization: {base.data}, seeds {list(exp.seeds)}",
        sections,
        flat_rows(groups, p_values, REFERENCES),
        run_meta(base, exp, REFERENCES),
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
        reference = reference_method(runs)
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
                "fine-tune (after supervised)", finetune_config(ref.cfg, exp), ref, tags
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
            metric_table(
                {group: rows},
                p_values,
                _with_accuracy({group: rows}, ["f1_macro", "map", "iou", "pointing"]),
                "samples/class",
            ),
        )
    ]
    return write_outcome(
        store, "strategies", f"Training strategies: {base.data}, {base.model}", sections,
        flat_rows({group: rows}, p_values, refs), run_meta(base, exp, refs), time.perf_counter() - start,
    )  # fmt: skip


def run_controls(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Does the gain come from the Guided Backprop mask, or from any mask? Five fine-tunings from one baseline."""
    start = time.perf_counter()

    def extra(ref: Run) -> dict[str, Run]:
        return {
            name: Run(name, finetune_config(ref.cfg, exp, **changes), ref, ref.tags)
            for name, changes in CONTROLS.items()
        }

    rows, reference = _single_cell(base, exp, store, extra)
    method = next(iter(CONTROLS))
    refs = {name: reference for name in rows if name != reference}
    against_method = {name: method for name in rows if name not in (reference, method)}
    group = f"{exp.at_per_class}"
    p_ref = {group: _p_values(rows, refs, exp)}
    p_method = {group: _p_values(rows, against_method, exp)}
    keys = _with_accuracy({group: rows}, ["f1_macro", "map", "iou", "pointing"])
    sections = [
        (
            f"Mask controls at {exp.at_per_class} samples per class; * vs {reference}",
            metric_table({group: rows}, p_ref, keys, "samples/class"),
        ),
        (f"The same rows; * vs {method}", metric_table({group: rows}, p_method, keys, "samples/class")),
    ]
    return write_outcome(
        store, "controls", f"Mask controls: {base.data}, {base.model}", sections,
        flat_rows({group: rows}, p_ref, refs), run_meta(base, exp, refs), time.perf_counter() - start,
    )  # fmt: skip


def run_experiment(
    name: str,
    base: TrainConfig,
    exp: ExperimentConfig,
    out: str | Path,
    *,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Outcome:
    """Run one experiment into ``out`` (finished runs there are reused); ``shard=(K, N)``: as
    process K of N sharing the folder (:class:`~atcon.experiments.runner.Store`). ``name``: one of
    :data:`atcon.experiments.registry.NAMES`."""
    from atcon.experiments.registry import experiment

    return experiment(name).run(base, exp, out, progress=progress, shard=shard)
