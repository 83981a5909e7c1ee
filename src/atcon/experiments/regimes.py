"""Where does consistency fine-tuning help? (``atcon experiment regimes``)

One factor at a time around a base cell (``at_per_class`` samples per class, the pool, the guard,
label-free selection, the experiment's source network): source-network strength (source epochs),
samples per class, few images instead of a pool, guard off, image size, architecture. Each cell
compares ``Baseline + Aug`` with its fine-tuning ``+ Attention`` over the seeds (paired tests on
the same test items); in the cells where ``+ Attention`` lifts F1 or IoU significantly, the mask
controls are run as well and the method is tested against the best of them. The safety
experiment lives in :mod:`atcon.experiments.safety` (re-exported here for old imports).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atcon.experiments.aggregate import Row, compare_rows
from atcon.experiments.methods import (
    CONTROLS,
    GUARDED,
    ExperimentConfig,
    finetune_config,
    method_runs,
    source_weights,
)
from atcon.experiments.output import Outcome, run_meta, write_outcome
from atcon.experiments.runner import Record, Run, Store
from atcon.experiments.safety import (
    FLOORS,
    FLOORS_TITLE,
    KEYS,
    SAFETY,
    _floor_table,
    _rows,
    floor_regrets,
    run_safety,
    selection_regret,
)
from atcon.experiments.tables import flat_rows, metric_table
from atcon.train.config import TrainConfig

__all__ = [
    "FACTORS",
    "FLOORS",
    "SAFETY",
    "Cell",
    "floor_regrets",
    "regime_cells",
    "run_regimes",
    "run_safety",
    "selection_regret",
]

METHOD = "+ Attention"
REFERENCE = "Baseline + Aug"


@dataclass(frozen=True)
class Cell:
    """One regime: what differs from the base cell.

    Attributes:
        factor: the factor varied (``"base"`` for the base cell).
        value: its value in this cell, as shown in tables.
        train: changes to the supervised parent's config (model, image size, samples per class).
        source_epochs: source-pretraining epochs of the starting network.
        pool: unlabeled pool size (0: the labeled training images without labels).
        finetune: the fine-tuning's settings (guard, selection).
        finetune_epochs: fine-tuning epochs when they differ from the experiment's (a few labeled
            images make far shorter epochs than a pool).
        eval_every: evaluate the fine-tuning every this many steps, when it differs.
    """

    factor: str
    value: str
    train: dict[str, Any] = field(default_factory=dict)
    source_epochs: int = 24
    pool: int = 1000
    finetune: tuple[tuple[str, Any], ...] = GUARDED
    finetune_epochs: int | None = None
    eval_every: int | None = None

    @property
    def label(self) -> str:
        return "base" if self.factor == "base" else f"{self.factor} = {self.value}"


FACTORS = ("source", "per_class", "data", "guard", "image_size", "model")


def regime_cells(base: TrainConfig, exp: ExperimentConfig, factors: Sequence[str] = FACTORS) -> list[Cell]:
    """The base cell and one cell per (factor, other value), one factor at a time.

    Base: ``base``'s model and image size, ``exp.at_per_class`` samples per class,
    ``exp.source_epochs`` (default 24) source epochs, a pool of ``exp.pool`` (default 1000), the
    guard and label-free selection. Other values: source 4 and 12 epochs (weak, medium);
    2 and 16 samples per class; few images (no pool); guard off (label-free selection kept);
    image size 128 (64 when the base is larger); resnet18 (small when the base is another model).
    """
    unknown = sorted(set(factors) - set(FACTORS))
    if unknown:
        raise ValueError(f"unknown factor(s) {', '.join(unknown)}; choose from {', '.join(FACTORS)}")
    src = exp.source_epochs or 24
    pool = exp.pool or 1000
    root = Cell("base", "", {}, src, pool)
    cells = [root]
    size = base.image_size or 64
    options: dict[str, list[Cell]] = {
        "source": [
            dataclasses.replace(root, factor="source epochs", value=str(e), source_epochs=e)
            for e in (4, 12)
            if e != src
        ],
        "per_class": [
            dataclasses.replace(root, factor="samples/class", value=str(n), train={"per_class": n})
            for n in (2, 16)
            if n != exp.at_per_class
        ],
        "data": [dataclasses.replace(root, factor="unlabeled data", value="the labeled images only", pool=0)],
        "guard": [
            dataclasses.replace(root, factor="guard", value="off", finetune=(("select", "label-free"),))
        ],
        "image_size": [
            dataclasses.replace(root, factor="image size", value=str(s), train={"image_size": s})
            for s in ((128,) if size < 128 else (64,))
        ],
        "model": [
            dataclasses.replace(root, factor="model", value=m, train={"model": m})
            for m in (("resnet18",) if base.model != "resnet18" else ("small",))
        ],
    }
    for f in factors:
        cells += options[f]
    return cells


def _lift(
    p: dict[str, float], method: Row, reference: Row, keys: Sequence[str] = ("f1_macro", "iou")
) -> list[str]:
    """Metrics on which ``method`` is significantly above ``reference``."""
    out = []
    for k in keys:
        if k in method.metrics and k in reference.metrics and k in p:
            diff = float(method.metrics[k].estimate) - float(reference.metrics[k].estimate)
            if diff > 0 and p[k] < 0.05:
                out.append(k)
    return out


def run_regimes(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """One factor at a time around the base cell (see the module docstring); ``exp.factors``
    chooses the factors (default: all of :data:`FACTORS`).

    One function on purpose: the cells' runs, their tests and the tables built from them, in the
    order the results file shows them.
    """
    start = time.perf_counter()
    factors = exp.factors or FACTORS
    base = base.replace(image_size=base.image_size or 64)
    groups: dict[str, dict[str, Row]] = {}
    p_values: dict[str, dict[str, dict[str, float]]] = {}
    regrets: dict[str, list[Record]] = {}
    controls: dict[str, dict[str, Row]] = {}
    p_controls: dict[str, dict[str, dict[str, float]]] = {}
    lifts: dict[str, list[str]] = {}
    for cell in regime_cells(base, exp, factors):
        cfg = base.replace(**cell.train)
        cell_exp = dataclasses.replace(
            exp,
            source_epochs=cell.source_epochs,
            pool=cell.pool,
            finetune=cell.finetune,
            guarded=False,
            finetune_epochs=cell.finetune_epochs or exp.finetune_epochs,
            finetune_eval_every=exp.finetune_eval_every if cell.eval_every is None else cell.eval_every,
        )
        weights = source_weights(cfg, cell_exp, store.progress)
        pc = int(cell.train.get("per_class", exp.at_per_class))
        by_method: dict[str, list[Run]] = {}
        for seed in exp.seeds:
            ref = method_runs(cfg, cell_exp, pc, seed, weights)[REFERENCE]
            by_method.setdefault(REFERENCE, []).append(ref)
            by_method.setdefault(METHOD, []).append(
                Run(METHOD, finetune_config(ref.cfg, cell_exp), ref, ref.tags)
            )
        rows, records = _rows(store, by_method, exp)
        groups[cell.label] = rows
        p = compare_rows(rows[METHOD], rows[REFERENCE], n_resamples=exp.resamples)
        p_values[cell.label] = {METHOD: p}
        regrets[cell.label] = records[METHOD]
        lift = _lift(p, rows[METHOD], rows[REFERENCE])
        if lift:
            lifts[cell.label] = lift
        if lift and exp.controls:
            extra: dict[str, list[Run]] = {}
            for name, changes in list(CONTROLS.items())[1:]:
                for ref in by_method[REFERENCE]:
                    extra.setdefault(name, []).append(
                        Run(name, finetune_config(ref.cfg, cell_exp, **changes), ref, ref.tags)
                    )
            crow, _ = _rows(store, extra, exp)
            controls[cell.label] = {METHOD: rows[METHOD], **crow}
            p_controls[cell.label] = {}
            for k in lift:
                best = max(crow, key=lambda n: float(crow[n].metrics[k].estimate))
                p_controls[cell.label][f"{METHOD} vs {best} ({k})"] = compare_rows(
                    rows[METHOD], crow[best], n_resamples=exp.resamples
                )
    regret_lines = [
        "| regime | start (%) | label-free choice (%) | best evaluated (%) | regret (points) | per seed |",
        "|---|---:|---:|---:|---:|---|",
    ]
    regret_flat = []
    for label, recs in regrets.items():
        found = [r for r in (selection_regret(x) for x in recs) if r is not None]
        if not found:
            continue
        mean = {
            k: sum(float(r[k]) for r in found) / len(found) for k in ("start", "selected", "best", "regret")
        }
        regret_lines.append(
            f"| {label} | {mean['start']:.1f} | {mean['selected']:.1f} | {mean['best']:.1f} | {mean['regret']:.2f} | "
            + "/".join(f"{r['regret']:.1f}" for r in found)
            + " |"
        )
        regret_flat.append({"regime": label, "metric": found[0]["metric"], **mean})
    skipped = [label for label in lifts if label not in controls]  # lifts whose controls did not run
    lift_lines = ["| regime | metrics where + Attention > + Aug (p < 0.05) |", "|---|---|"]
    lift_lines += [
        f"| {label} | {', '.join(lifts.get(label, [])) or 'none'}"
        + (" (mask controls not run)" if label in skipped else "")
        + " |"
        for label in groups
    ]
    lift_text = "\n".join(lift_lines)
    sections = [
        (
            "+ Attention vs Baseline + Aug, one factor at a time; * p < 0.05 vs Baseline + Aug",
            metric_table(groups, p_values, KEYS, "regime"),
        ),
        ("Cells with a significant lift", lift_text),
        (
            "Selection regret of the label-free choice (validation metric, labels used only to measure it)",
            "\n".join(regret_lines),
        ),
    ]
    floors, floors_flat = _floor_table(regrets)
    if floors:
        sections.append((FLOORS_TITLE, floors))
    for label, rows in controls.items():
        sections.append(
            (
                f"Mask controls in '{label}'; p of the method vs the best control",
                metric_table({label: rows}, {label: {}}, KEYS, "regime"),
            )
        )
        lines = ["| comparison | metric | p |", "|---|---|---:|"]
        lines += [
            f"| {k} | {m} | {v:.3f} |"
            for k, ps in p_controls[label].items()
            for m, v in ps.items()
            if not math.isnan(v)
        ]
        sections.append(("p-values of the method vs the best control", "\n".join(lines)))
    meta = run_meta(base, exp, {METHOD: REFERENCE})
    meta.update(
        factors=list(factors),
        cells=[dataclasses.asdict(c) for c in regime_cells(base, exp, factors)],
        regret=regret_flat,
        lifts=lifts,
        controls_not_run=skipped,
        floors=floors_flat,
    )
    return write_outcome(
        store, "regimes", f"Where does consistency fine-tuning help? {base.data}, base {base.model}", sections,
        flat_rows(groups, p_values, {METHOD: REFERENCE}), meta, time.perf_counter() - start,
    )  # fmt: skip
