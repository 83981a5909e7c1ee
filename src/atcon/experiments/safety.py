"""Is consistency fine-tuning on an unlabeled pool safe without labels? (``atcon experiment safety``)

One cell (``at_per_class`` samples per class, an unlabeled pool of ``pool`` items): the
starting network, then consistency fine-tuning on the pool without and with the collapse guard
(:data:`~atcon.experiments.methods.GUARDED`), each kept at its final model, selected on
validation labels (unguarded only: the paper's selection) or selected without labels
(:mod:`atcon.train.labelfree`). Stars: paired test against the starting network. A second table
gives the *regret* of label-free selection: the validation metric of the label-free choice
against the best validation metric among the checkpoints the same run evaluated. The regret and
floor tables are shared with :mod:`atcon.experiments.regimes`.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from atcon.experiments.aggregate import Row, aggregate, compare_rows
from atcon.experiments.methods import (
    GUARDED,
    ExperimentConfig,
    finetune_config,
    method_runs,
    reference_method,
    source_weights,
)
from atcon.experiments.output import Outcome, run_meta, write_outcome
from atcon.experiments.runner import Record, Run, Store
from atcon.experiments.tables import flat_rows, metric_table
from atcon.train.config import TrainConfig
from atcon.train.labelfree import LabelFreeSelection
from atcon.train.selection import replayed_choice, selection_metric

KEYS = ["f1_macro", "map", "iou", "pointing"]


def _rows(
    store: Store, by_method: dict[str, list[Run]], exp: ExperimentConfig
) -> tuple[dict[str, Row], dict[str, list[Record]]]:
    rows, records = {}, {}
    for method, runs in by_method.items():
        records[method] = [store.get(r) for r in runs]
        rows[method] = aggregate([r.result for r in records[method]], method, n_resamples=exp.resamples)
        rows[method].extra["best_epochs"] = [r.best_epoch for r in records[method]]
    return rows, records


def _validation_rows(record: Record) -> tuple[str, list[dict[str, str]]] | None:
    """``(key, rows)``: the run's ``metrics.csv`` rows that carry its selection metric's
    validation value under ``key`` (``val_map`` for multi-label tasks, ``val_f1_macro`` for
    single-label ones); None when the run wrote no such row."""
    path = record.dir / "metrics.csv"
    if not path.is_file():
        return None
    key = "val_" + selection_metric(record.result.task)
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(key, "") != ""]
    return (key, rows) if rows else None


def selection_regret(record: Record) -> dict[str, Any] | None:
    """Validation metric of the checkpoint a run selected vs the best it evaluated (in points).

    Read from the run's ``metrics.csv``: the selected row is the last one flagged ``best``;
    ``regret = max(val metric) - val metric of the selected row``. None for runs without
    validation rows.
    """
    logged = _validation_rows(record)
    if logged is None:
        return None
    key, rows = logged
    chosen = [r for r in rows if r.get("best") == "True"]
    if not chosen:
        return None
    values = [float(r[key]) for r in rows]
    picked = float(chosen[-1][key])
    best = max(values)
    return {
        "metric": key.removeprefix("val_"),
        "selected": 100 * picked,
        "best": 100 * best,
        "regret": 100 * (best - picked),
        "start": 100 * values[0],
        "selected_epoch": int(chosen[-1]["epoch"]),
    }


def _regret_table(records: dict[str, list[Record]]) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        "| method | metric | start (%) | selected (%) | best evaluated (%) | regret (points), mean | per seed |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    flat = []
    for method, recs in records.items():
        regrets = [selection_regret(r) for r in recs]
        found = [r for r in regrets if r is not None]
        if not found:
            continue
        mean = {
            k: sum(float(r[k]) for r in found) / len(found) for k in ("start", "selected", "best", "regret")
        }
        per_seed = "/".join(f"{r['regret']:.1f}" for r in found)
        lines.append(
            f"| {method} | val {found[0]['metric']} | {mean['start']:.1f} | {mean['selected']:.1f} | "
            f"{mean['best']:.1f} | {mean['regret']:.2f} | {per_seed} |"
        )
        flat.append({"method": method, **mean, "per_seed": [r["regret"] for r in found]})
    return "\n".join(lines), flat


FLOORS: tuple[tuple[float, float], ...] = (
    (0.8, 0.95), (0.85, 0.95), (0.9, 0.95), (0.95, 0.95), (1.0, 0.95), (0.9, 0.9), (0.9, 0.98),
)  # fmt: skip
"""``(min_agreement, min_entropy_ratio)`` pairs the floors table replays (defaults: 0.9, 0.95)."""


def floor_regrets(record: Record, floors: Sequence[tuple[float, float]] = FLOORS) -> list[float] | None:
    """Validation regret (points) of label-free selection under other floors, one per pair.

    Replays the run's logged signals (``metrics.csv``) with :class:`LabelFreeSelection` at each
    ``(min_agreement, min_entropy_ratio)`` and the run's own plateau and patience; no training.
    A rule that would stop later than the run did only sees the rows the run made. None for
    runs without label-free selection.
    """
    cfg = record.run.cfg
    logged = _validation_rows(record) if cfg.select == "label-free" else None
    if logged is None:
        return None
    key, rows = logged
    best = max(float(r[key]) for r in rows)
    out = []
    for agreement, entropy in floors:
        rule = LabelFreeSelection(agreement, entropy, cfg.plateau_delta, cfg.patience)
        out.append(100 * (best - float(rows[replayed_choice(rule, rows)][key])))
    return out


def _floor_table(records: dict[str, list[Record]]) -> tuple[str, list[dict[str, Any]]]:
    """Mean replayed regret per label (rows) and floor pair (columns); empty without label-free runs."""
    head = " | ".join(f"agr >= {a}, ent >= {e}" for a, e in FLOORS)
    lines = [f"| runs | {head} |", "|---|" + "---:|" * len(FLOORS)]
    flat = []
    for label, recs in records.items():
        found = [r for r in (floor_regrets(x) for x in recs) if r is not None]
        if not found:
            continue
        means = [sum(col) / len(found) for col in zip(*found, strict=True)]
        lines.append(f"| {label} ({len(found)}) | " + " | ".join(f"{m:.2f}" for m in means) + " |")
        flat.append({"runs": label, "n": len(found), "floors": [list(f) for f in FLOORS], "regret": means})
    return ("\n".join(lines) if flat else ""), flat


FLOORS_TITLE = (
    "Regret of label-free selection under other floors (validation points against the best checkpoint "
    "the run logged, replayed from the logged signals; agreement floor, class-entropy floor)"
)


# --- safety ------------------------------------------------------------------------------

SAFETY: dict[str, dict[str, Any]] = {
    "unguarded, final model": {"select": "last"},
    "unguarded, selected on labels": {"select": "labels"},
    "unguarded, label-free selection": {"select": "label-free"},
    "guarded, final model": {**dict(GUARDED), "select": "last"},
    "guarded, label-free selection": dict(GUARDED),
}


def run_safety(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Pool fine-tuning with and without the guard, with and without label-free selection."""
    start = time.perf_counter()
    if not exp.pool:
        raise ValueError("the safety experiment fine-tunes on an unlabeled pool: give --pool N (e.g. 1000)")
    unknown = sorted(set(exp.methods) - set(SAFETY))
    if unknown:
        raise ValueError(f"unknown safety method(s) {unknown}; choose from {sorted(SAFETY)}")
    variants = {k: v for k, v in SAFETY.items() if not exp.methods or k in exp.methods}
    plain = dataclasses.replace(exp, finetune=(), guarded=False)
    weights = source_weights(base, exp, store.progress)
    by_method: dict[str, list[Run]] = {}
    reference = ""
    for seed in exp.seeds:
        runs = method_runs(base, plain, exp.at_per_class, seed, weights)
        reference = reference_method(runs)
        ref = runs[reference]
        by_method.setdefault(reference, []).append(ref)
        for name, changes in variants.items():
            by_method.setdefault(name, []).append(
                Run(name, finetune_config(ref.cfg, plain, **changes), ref, ref.tags)
            )
    rows, records = _rows(store, by_method, exp)
    refs = {name: reference for name in rows if name != reference}
    group = f"{exp.at_per_class}/class, pool {exp.pool}"
    p_values = {
        group: {
            n: compare_rows(r, rows[reference], n_resamples=exp.resamples)
            for n, r in rows.items()
            if n != reference
        }
    }
    regret, regret_flat = _regret_table({k: v for k, v in records.items() if k != reference})
    sections = [
        (
            f"Pool fine-tuning; * p < 0.05 vs {reference} (the starting network)",
            metric_table({group: rows}, p_values, KEYS, "cell"),
        ),
        ("Selection regret on the validation set (labels used only to measure it)", regret),
    ]
    floors, floors_flat = _floor_table({k: v for k, v in records.items() if k != reference})
    if floors:
        sections.append((FLOORS_TITLE, floors))
    meta = run_meta(base, exp, refs)
    meta.update(regret=regret_flat, floors=floors_flat)
    return write_outcome(
        store, "safety", f"Safety of pool fine-tuning: {base.data}, {base.model}", sections,
        flat_rows({group: rows}, p_values, refs), meta, time.perf_counter() - start,
    )  # fmt: skip
