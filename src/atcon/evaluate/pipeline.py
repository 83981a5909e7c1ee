"""One-pass evaluation of a classifier: Tables 1-3 figures with bootstrap intervals.

:func:`evaluate_model` runs over a dataset once, batched on the device, and collects

* the logits of every item (classification metrics of Tables 1-2: per-class F1, macro/micro
  F1, mAP);
* the ReLU'd Grad-CAM of every true-positive (item, class) pair and its localization values
  against that class's boxes (Table 3: IoU; also pointing game and energy), see
  :class:`~atcon.evaluate.LocalizationProtocol`;
* optionally the deletion/insertion AUC of those maps.

Maps of several classes of one image come from a single forward pass: the backbone runs without
an autograd graph up to the Grad-CAM layer, whose output becomes a leaf; one small backward per
"round" (the r-th true-positive class of each image) goes through the head only. Nothing is
repeated per item in Python beyond collation.

Every figure gets a percentile bootstrap interval from the same seeded resamples of the items,
and pair-level values are arranged per item (:func:`~atcon.evaluate.values_by_item`), so two
models evaluated on the same items can be compared with :func:`compare` (paired bootstrap,
p-values, stars). :func:`results_table` renders the Markdown table the CLI, the demo and the
experiments print.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from atcon.attention.hooks import eval_mode, find_target_layer, resolve_layer, unwrap_model
from atcon.attention.maps import LayerSpec, as_logits, gradcam_from
from atcon.evaluate.bootstrap import (
    BootstrapResult,
    MeanMetric,
    PairedBootstrapResult,
    bootstrap_ci,
    paired_bootstrap_test,
    star,
)
from atcon.evaluate.faithfulness import deletion_insertion
from atcon.evaluate.localization import (
    LocalizationProtocol,
    LocalizationResult,
    boxes_for_pairs,
    localization_metrics,
    true_positive_pairs,
    values_by_item,
)
from atcon.evaluate.metrics import IGNORE, ClassificationMetrics, Task

CLASSIFICATION_KEYS = ("f1_macro", "f1_micro", "map")
PAIR_KEYS = ("iou", "pointing", "energy", "deletion", "insertion")
PER_CLASS_KEYS = ("f1_per_class", "ap_per_class")
LABELS = {
    "f1_macro": "F1 (macro)",
    "f1_micro": "F1 (micro)",
    "map": "mAP",
    "iou": "IoU",
    "pointing": "Pointing",
    "energy": "Energy",
    "deletion": "Deletion AUC",
    "insertion": "Insertion AUC",
}
"""Column titles of the metrics in tables."""
LOWER_IS_BETTER = frozenset({"deletion"})


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; tensors on the CPU.

    Attributes:
        name: label of the method (row name in tables).
        task: ``"multilabel"`` or ``"multiclass"``.
        classes: class names (or indices as strings).
        logits: (N, C) logits of every item.
        labels: (N, C) multi-hot with ``IGNORE`` entries, or (N,) class indices.
        pairs: (P, 2) true-positive ``(item, class)`` rows.
        localization: per-pair values, or None when the data has no boxes.
        faithfulness: per-pair ``deletion``/``insertion`` AUCs (P,), or None.
        item_values: per-item tables (N, K) of the pair values (``nan``-padded), the bootstrap
            unit of the pair-level metrics.
        metrics: point estimates with intervals: ``f1_macro``, ``f1_micro``, ``map``,
            ``f1_per_class``, ``ap_per_class`` and, when computed, ``iou``, ``pointing``,
            ``energy``, ``deletion``, ``insertion``.
        protocol: the localization protocol.
        layer: the Grad-CAM layer.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed (same resamples for every metric of the result).
        confidence: interval coverage.
        seconds: wall time of the pass over the data (bootstrap excluded).
    """

    name: str
    task: Task
    classes: tuple[str, ...]
    logits: Tensor
    labels: Tensor
    pairs: Tensor
    localization: LocalizationResult | None
    faithfulness: dict[str, Tensor] | None
    item_values: dict[str, Tensor]
    metrics: dict[str, BootstrapResult]
    protocol: LocalizationProtocol
    layer: str
    n_resamples: int
    seed: int
    confidence: float = 0.95
    threshold: float = 0.5
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.logits.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_degenerate(self) -> int:
        """True-positive maps that were constant, all-zero or non-finite (no localization value)."""
        return 0 if self.localization is None else self.localization.n_degenerate

    @property
    def n_unannotated(self) -> int:
        """True-positive pairs without any box of their class (no localization value)."""
        if self.localization is None:
            return 0
        return int((self.localization.annotated_frames == 0).sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, protocol and every metric as ``{value, low, high}``."""
        return {
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "n_items": self.n_items,
            "n_pairs": self.n_pairs,
            "n_degenerate": self.n_degenerate,
            "n_unannotated": self.n_unannotated,
            "layer": self.layer,
            "protocol": self.protocol.as_dict(),
            "protocol_text": str(self.protocol),
            "bootstrap": {"n_resamples": self.n_resamples, "seed": self.seed, "confidence": self.confidence},
            "threshold": self.threshold,
            "seconds": self.seconds,
            "metrics": {k: _interval_dict(v) for k, v in self.metrics.items()},
            **self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the raw tensors and settings (``torch.save``, weights-only readable) for later comparisons."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        loc = self.localization
        payload = {
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "logits": self.logits,
            "labels": self.labels,
            "pairs": self.pairs,
            "localization": None if loc is None else {k: getattr(loc, k) for k in _LOC_FIELDS},
            "faithfulness": self.faithfulness,
            "protocol": self.protocol.as_dict(),
            "layer": self.layer,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "seconds": self.seconds,
        }
        torch.save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        """Read a file written by :meth:`save` and recompute the intervals (same seed, same numbers)."""
        d = torch.load(Path(path), map_location="cpu", weights_only=True)
        loc = None if d["localization"] is None else LocalizationResult(**d["localization"])
        return summarize(
            d["logits"],
            d["labels"],
            d["pairs"],
            loc,
            d["faithfulness"],
            task=d["task"],
            classes=d["classes"],
            name=d["name"],
            protocol=LocalizationProtocol(**d["protocol"]),
            layer=d["layer"],
            n_resamples=d["n_resamples"],
            seed=d["seed"],
            confidence=d["confidence"],
            threshold=d["threshold"],
            seconds=d["seconds"],
        )


_LOC_FIELDS = ("iou", "pointing", "energy", "degenerate", "annotated_frames")


def _interval_dict(r: BootstrapResult) -> dict[str, Any]:
    def plain(t: Tensor) -> float | list[float | None] | None:
        if t.numel() == 1:
            v = float(t)
            return None if math.isnan(v) else v
        return [None if math.isnan(v) else v for v in t.tolist()]

    return {"value": plain(r.estimate), "low": plain(r.low), "high": plain(r.high)}


def item_labels(target: Mapping[str, Any], task: Task) -> Tensor:
    """Labels of a collated batch: (B, C) multi-hot with ``IGNORE`` at ignored entries, or (B,).

    Args:
        target: collated targets of :mod:`atcon.data` (``labels``/``ignore`` or ``label``).
        task: ``"multilabel"`` or ``"multiclass"``.
    """
    if task == "multiclass":
        return torch.as_tensor(target["label"]).long()
    labels = torch.as_tensor(target["labels"]).float()
    ignore = target.get("ignore")
    return labels.masked_fill(torch.as_tensor(ignore).bool(), IGNORE) if ignore is not None else labels


@contextlib.contextmanager
def _head_graph(model: nn.Module, layer: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Forward passes inside the block record an autograd graph from ``layer``'s output on only.

    The backbone runs under ``no_grad`` (no activations kept); the layer's output is replaced by
    a leaf that requires grad, and grad mode is switched on for the rest of the forward pass, so
    Grad-CAM gradients cost one backward through the head. Grad mode is restored on exit.
    """
    captured: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: object, out: object) -> Tensor:
        if not isinstance(out, Tensor):
            raise ValueError(f"the Grad-CAM layer returned {type(out).__name__}, not a tensor")
        torch.set_grad_enabled(True)
        leaf = out.detach().requires_grad_(True)
        captured["features"] = leaf
        return leaf.clone()  # downstream inplace ops must not modify the leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            yield captured
    finally:
        handle.remove()


def _pair_rounds(pairs: Tensor, batch: int) -> tuple[Tensor, int]:
    """Rank of each pair among its item's pairs (pairs sorted by item), and the largest count."""
    if pairs.numel() == 0:
        return pairs.new_zeros(0), 0
    counts = torch.bincount(pairs[:, 0], minlength=batch)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(pairs.shape[0], device=pairs.device) - starts[pairs[:, 0]]
    return rank, int(counts.max())


def batch_gradcams(
    model: nn.Module, x: Tensor, layer: nn.Module, pairs_fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of a batch and the ReLU'd Grad-CAM of chosen (item, class) pairs, one forward pass.

    Args:
        model: classifier in eval mode.
        x: input batch.
        layer: the Grad-CAM layer (module).
        pairs_fn: maps the batch logits (B, C) to the ``(item, class)`` rows (P, 2) whose maps
            are wanted, sorted by item (e.g. the true positives).

    Returns:
        ``(logits, pairs, maps)``: (B, C) detached logits, the (P, 2) pairs and (P, *layer
        spatial) ReLU'd Grad-CAMs (paper Eq. 3-4).

    Shape:
        x: (B, C, H, W) or (B, C, T, H, W).
    """
    with _head_graph(model, layer) as cap:
        logits = as_logits(model(x), x.shape[0])
        if "features" not in cap:
            raise ValueError("the Grad-CAM layer did not run during the forward pass")
        features = cap["features"]
        pairs = pairs_fn(logits.detach())
        rank, rounds = _pair_rounds(pairs, x.shape[0])
        maps = features.new_zeros(pairs.shape[0], *features.shape[2:])
        for r in range(rounds):
            # Items are independent in eval mode, so one backward serves the r-th class of all.
            sel = rank == r
            items, classes = pairs[sel, 0], pairs[sel, 1]
            targets = torch.zeros(x.shape[0], dtype=torch.long, device=logits.device)
            targets[items] = classes
            score = logits.gather(1, targets[:, None])[items].sum()
            (grad,) = torch.autograd.grad(score, features, retain_graph=r < rounds - 1)
            maps[sel] = gradcam_from(features[items].detach(), grad[items], relu=True)
    return logits.detach(), pairs, maps


def _pair_boxes(target: Mapping[str, Any], pairs: Tensor, clips: bool, device: torch.device) -> Tensor | None:
    """The boxes of each pair's class: (P, K, 4) for images, (P, T, 1, 4) for clips; None if unannotated."""
    boxes = target.get("boxes")
    if boxes is None:
        return None
    if clips:
        if isinstance(boxes, list):  # some clips without boxes: nan frames
            boxes = torch.stack([torch.as_tensor(b).as_subclass(Tensor) for b in boxes])
        b = torch.as_tensor(boxes).as_subclass(Tensor).float().to(device)
        return b[pairs[:, 0]].unsqueeze(2)
    box_list = [torch.as_tensor(b).as_subclass(Tensor).reshape(-1, 4) for b in boxes]
    label_list = [torch.as_tensor(lb).reshape(-1) for lb in target["box_labels"]]
    return boxes_for_pairs(box_list, label_list, pairs)


def evaluate_model(
    model: nn.Module,
    dataset: Dataset[Any] | Sequence[Any],
    task: Task,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    target_layer: LayerSpec = None,
    protocol: LocalizationProtocol | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
    localization: bool = True,
    faithfulness: bool = False,
    faithfulness_steps: int = 16,
    classes: Sequence[str] | None = None,
    name: str = "model",
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a classifier on a labelled dataset in one batched pass (Tables 1-3).

    Args:
        model: classifier returning (B, C) logits; moved to ``device`` and run in eval mode
            (its train/eval flags are restored afterwards).
        dataset: items ``(x, target)`` of :mod:`atcon.data`: images with ``labels``/``ignore``
            (multi-label) and ``boxes``/``box_labels`` in pixels of ``x``; or clips with
            ``label`` and per-frame ``boxes`` (T, 4) (``nan`` where absent).
        task: ``"multilabel"`` (sigmoid > threshold) or ``"multiclass"`` (argmax).
        device: where the model and batches run.
        batch_size: items per forward pass.
        target_layer: Grad-CAM layer (dotted name, module, or None to discover it).
        protocol: localization protocol (default: the paper's).
        n_resamples: bootstrap resamples (the paper: 1000).
        seed: bootstrap seed.
        confidence: interval coverage.
        threshold: multi-label decision threshold on the probability.
        localization: compute Grad-CAM localization when the data has boxes.
        faithfulness: also compute deletion/insertion AUCs of the true-positive maps.
        faithfulness_steps: steps of the deletion/insertion curves.
        classes: class names (default: ``dataset.classes`` or indices).
        name: method name for tables.
        num_workers: DataLoader workers.
        collate_fn: batch collation (default :func:`atcon.data.collate`).
        progress: show a progress bar.

    Returns:
        An :class:`EvaluationResult` with point estimates and bootstrap intervals.
    """
    if collate_fn is None:
        from atcon.data import collate as collate_fn
    protocol = protocol or LocalizationProtocol()
    device = torch.device(device)
    model = model.to(device)
    inner = unwrap_model(model)
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    logits_parts: list[Tensor] = []
    label_parts: list[Tensor] = []
    pair_parts: list[Tensor] = []
    loc_parts: list[LocalizationResult] = []
    faith_parts: dict[str, list[Tensor]] = {"deletion": [], "insertion": []}
    has_boxes = localization
    layer_name, layer_module = "", None
    offset = 0
    start = time.perf_counter()
    batches: Any = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=f"evaluate {name}", leave=False)
    with eval_mode(model):
        for x, target in batches:
            x = x.to(device, non_blocking=True)
            labels = item_labels(target, task).to(device)
            if layer_module is None:
                spec = find_target_layer(inner, x) if target_layer is None else target_layer
                layer_name, layer_module = resolve_layer(inner, spec)
            clips = x.ndim == 5

            def tp(logits: Tensor, labels: Tensor = labels) -> Tensor:
                return true_positive_pairs(logits, labels, task, threshold=threshold)

            logits, pairs, maps = batch_gradcams(model, x, layer_module, tp)
            logits_parts.append(logits.float().cpu())
            label_parts.append(labels.cpu())
            pair_parts.append(pairs.cpu() + torch.tensor([offset, 0]))
            if has_boxes:
                boxes = _pair_boxes(target, pairs, clips, device)
                if boxes is None:
                    has_boxes = False
                else:
                    loc = localization_metrics(maps, boxes, tuple(x.shape[2:]), protocol)  # type: ignore[arg-type]
                    loc_parts.append(
                        LocalizationResult(
                            *(
                                t.cpu()
                                for t in (
                                    loc.iou,
                                    loc.pointing,
                                    loc.energy,
                                    loc.degenerate,
                                    loc.annotated_frames,
                                )
                            )
                        )
                    )
            if faithfulness and pairs.shape[0] > 0:
                di = deletion_insertion(
                    model,
                    x[pairs[:, 0]],
                    maps,
                    pairs[:, 1],
                    steps=faithfulness_steps,
                    batch_size=batch_size,
                    prob="sigmoid" if task == "multilabel" else "softmax",
                    eps=protocol.eps,
                )
                faith_parts["deletion"].append(di["deletion"].cpu())
                faith_parts["insertion"].append(di["insertion"].cpu())
            offset += x.shape[0]
    if offset == 0:
        raise ValueError("the dataset is empty")
    seconds = time.perf_counter() - start
    faith = None
    if faithfulness:
        faith = {k: torch.cat(v) if v else torch.zeros(0) for k, v in faith_parts.items()}
    names = classes if classes is not None else getattr(dataset, "classes", None)
    num_classes = logits_parts[0].shape[1]
    return summarize(
        torch.cat(logits_parts),
        torch.cat(label_parts),
        torch.cat(pair_parts).long(),
        LocalizationResult.cat(loc_parts) if has_boxes and loc_parts else None,
        faith,
        task=task,
        classes=tuple(names) if names is not None else tuple(str(c) for c in range(num_classes)),
        name=name,
        protocol=protocol,
        layer=layer_name,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        threshold=threshold,
        seconds=seconds,
    )


def summarize(
    logits: Tensor,
    labels: Tensor,
    pairs: Tensor,
    localization: LocalizationResult | None,
    faithfulness: dict[str, Tensor] | None,
    *,
    task: Task,
    classes: Sequence[str],
    name: str = "model",
    protocol: LocalizationProtocol | None = None,
    layer: str = "",
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
    seconds: float = 0.0,
) -> EvaluationResult:
    """Point estimates and bootstrap intervals from per-item logits and per-pair values.

    Args:
        logits: (N, C) logits.
        labels: (N, C) multi-hot (``IGNORE`` allowed) or (N,) class indices.
        pairs: (P, 2) ``(item, class)`` rows the pair values belong to.
        localization: per-pair localization values, or None.
        faithfulness: per-pair ``deletion``/``insertion`` AUCs, or None.
        task: ``"multilabel"`` or ``"multiclass"``.
        classes: class names.
        name: method name.
        protocol: the localization protocol the values were computed with.
        layer: Grad-CAM layer name.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.
        confidence: interval coverage.
        threshold: multi-label decision threshold.
        seconds: time of the pass, for the record.

    Returns:
        The :class:`EvaluationResult`.
    """
    n = logits.shape[0]
    kw: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    cls = bootstrap_ci(ClassificationMetrics(task, threshold=threshold), logits, labels, **kw)
    metrics = {k: cls[k] for k in (*CLASSIFICATION_KEYS, *PER_CLASS_KEYS)}
    per_pair: dict[str, Tensor] = {}
    if localization is not None:
        per_pair.update(iou=localization.iou, pointing=localization.pointing, energy=localization.energy)
    if faithfulness is not None:
        per_pair.update(deletion=faithfulness["deletion"], insertion=faithfulness["insertion"])
    items = pairs[:, 0]
    item_values = {k: values_by_item(v.float(), items, n) for k, v in per_pair.items()}
    for k, table in item_values.items():
        metrics[k] = bootstrap_ci(MeanMetric(k), table, None, **kw)[k]
    return EvaluationResult(
        name=name,
        task=task,
        classes=tuple(classes),
        logits=logits,
        labels=labels,
        pairs=pairs,
        localization=localization,
        faithfulness=faithfulness,
        item_values=item_values,
        metrics=metrics,
        protocol=protocol or LocalizationProtocol(),
        layer=layer,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        threshold=threshold,
        seconds=seconds,
    )


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap tests of method A against method B on the same items.

    Attributes:
        name_a: method A (the row tested).
        name_b: method B (the reference).
        tests: per metric key, the :class:`~atcon.evaluate.PairedBootstrapResult` of A - B.
        alpha: significance level of the stars.
    """

    name_a: str
    name_b: str
    tests: dict[str, PairedBootstrapResult]
    alpha: float = 0.05

    def p_value(self, key: str) -> float:
        t = self.tests.get(key)
        return math.nan if t is None or t.p_value.numel() != 1 else float(t.p_value)

    def star(self, key: str) -> str:
        return star(self.p_value(key), self.alpha)

    def to_markdown(self, percent: bool = True) -> str:
        """Table: metric, A, B, difference [CI], p-value, star."""
        scale = 100.0 if percent else 1.0
        unit = " (%)" if percent else ""
        lines = [
            f"| metric{unit} | {self.name_a} | {self.name_b} | difference [{self._level()}] | p | |",
            "|---|---:|---:|---:|---:|:-:|",
        ]
        for key, t in self.tests.items():
            if t.estimate_a.numel() != 1:
                continue
            lines.append(
                f"| {LABELS.get(key, key)} | {_num(t.estimate_a, scale)} | {_num(t.estimate_b, scale)} | "
                f"{_num(t.difference, scale)} [{_num(t.low, scale)}, {_num(t.high, scale)}] | "
                f"{_p(self.p_value(key))} | {self.star(key)} |"
            )
        return "\n".join(lines)

    def _level(self) -> str:
        return "CI"


def compare(
    a: EvaluationResult,
    b: EvaluationResult,
    *,
    n_resamples: int | None = None,
    seed: int | None = None,
    alpha: float = 0.05,
) -> Comparison:
    """Paired bootstrap tests of every scalar metric of A against B (same items, same resamples).

    Classification metrics resample the items' logits of both models together; pair-level
    metrics (IoU, pointing, energy, deletion, insertion) resample the items' per-item tables,
    so models with different true-positive pairs are still compared on the same images.

    Args:
        a: the method tested.
        b: the reference, evaluated on the same items in the same order.
        n_resamples: resamples (default: ``a.n_resamples``).
        seed: seed (default: ``a.seed``).
        alpha: significance level of the stars.

    Returns:
        A :class:`Comparison` with a p-value per metric.

    Raises:
        ValueError: the results are not on the same items (count or labels differ).
    """
    if a.n_items != b.n_items or a.task != b.task or not torch.equal(a.labels, b.labels):
        raise ValueError(
            f"cannot compare {a.name!r} and {b.name!r}: they were not evaluated on the same items "
            f"({a.n_items} vs {b.n_items} items, or different labels)"
        )
    kw: dict[str, Any] = {
        "n_resamples": a.n_resamples if n_resamples is None else n_resamples,
        "seed": a.seed if seed is None else seed,
        "confidence": a.confidence,
    }
    metric = ClassificationMetrics(a.task, threshold=a.threshold)
    cls = paired_bootstrap_test(metric, a.logits, b.logits, a.labels, **kw)
    tests = {k: cls[k] for k in (*CLASSIFICATION_KEYS, *PER_CLASS_KEYS)}
    for key in PAIR_KEYS:
        if key in a.item_values and key in b.item_values:
            ta, tb = a.item_values[key], b.item_values[key]
            tests[key] = paired_bootstrap_test(MeanMetric(key), ta, tb, None, **kw)[key]
    return Comparison(a.name, b.name, tests, alpha)


def _num(t: Tensor | float, scale: float, digits: int = 1) -> str:
    v = float(t) * scale
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def format_interval(r: BootstrapResult, *, percent: bool = True, digits: int = 1) -> str:
    """``"value [low-high]"`` of a scalar result (percent by default)."""
    scale = 100.0 if percent else 1.0
    if math.isnan(float(r.estimate)):
        return "n/a"
    return f"{_num(r.estimate, scale, digits)} [{_num(r.low, scale, digits)}-{_num(r.high, scale, digits)}]"


def table_columns(results: Sequence[EvaluationResult]) -> list[str]:
    """The scalar metrics present in every result, in the canonical order."""
    keys = [*CLASSIFICATION_KEYS, *PAIR_KEYS]
    return [k for k in keys if all(k in r.metrics for r in results)]


def _as_list(results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult]) -> list[EvaluationResult]:
    if isinstance(results, Mapping):
        out = []
        for row, r in results.items():
            if r.name != row:
                r = _renamed(r, row)
            out.append(r)
        return out
    return list(results)


def _renamed(r: EvaluationResult, name: str) -> EvaluationResult:
    from dataclasses import replace

    return replace(r, name=name)


def comparisons_against(
    results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult], reference: str
) -> dict[str, Comparison]:
    """Paired tests of every row against the row named ``reference``."""
    rows = _as_list(results)
    ref = next((r for r in rows if r.name == reference), None)
    if ref is None:
        raise ValueError(f"reference {reference!r} is not one of {[r.name for r in rows]}")
    return {r.name: compare(r, ref) for r in rows if r.name != reference}


def results_table(
    results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult],
    *,
    reference: str | None = None,
    comparisons: Mapping[str, Comparison] | None = None,
    columns: Sequence[str] | None = None,
    percent: bool = True,
    counts: bool = True,
) -> str:
    """Markdown table: one row per method, ``"value [low-high]"`` per metric, ``*`` when p < alpha vs the reference.

    Args:
        results: the methods (rows), by name or as results carrying their ``name``.
        reference: name of the row the others are tested against (paired bootstrap); no stars
            when None.
        comparisons: precomputed tests by row name (from :func:`compare`), to avoid recomputing.
        columns: metric keys (default: every scalar metric all rows have).
        percent: show values in percent.
        counts: add the true-positive pair and degenerate-map counts.

    Returns:
        The table as Markdown text (header, alignment row, one line per method).
    """
    rows = _as_list(results)
    if not rows:
        raise ValueError("no results to tabulate")
    cols = list(columns) if columns is not None else table_columns(rows)
    tests: dict[str, Comparison] = dict(comparisons or {})
    if reference is not None:
        missing = {r.name: r for r in rows if r.name != reference and r.name not in tests}
        if missing:
            tests.update({k: v for k, v in comparisons_against(rows, reference).items() if k in missing})
    unit = " (%)" if percent else ""
    head = ["method", *(LABELS.get(c, c) + unit for c in cols)]
    if counts:
        head.append("TP pairs (degenerate)")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r.name + (" (ref.)" if r.name == reference else "")]
        for c in cols:
            text = format_interval(r.metrics[c], percent=percent) if c in r.metrics else "n/a"
            if r.name in tests and r.name != reference:
                text += tests[r.name].star(c)
            cells.append(text)
        if counts:
            cells.append(f"{r.n_pairs} ({r.n_degenerate})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(
    results: Sequence[EvaluationResult], key: str = "f1_per_class", percent: bool = True
) -> str:
    """Markdown table of a per-class metric: one row per class, one column per method."""
    rows = list(results)
    scale = 100.0 if percent else 1.0
    head = ["class", *(r.name for r in rows)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(rows) + "|"]
    for c, cname in enumerate(rows[0].classes):
        cells = [cname]
        for r in rows:
            m = r.metrics[key]
            est, lo, hi = (float(t[c]) for t in (m.estimate, m.low, m.high))
            cells.append(
                "n/a" if math.isnan(est) else f"{_num(est, scale)} [{_num(lo, scale)}-{_num(hi, scale)}]"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_csv(
    results: Sequence[EvaluationResult], comparisons: Mapping[str, Comparison] | None = None
) -> str:
    """CSV text with one row per (method, metric, class): value, low, high, p-value vs the reference."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "metric", "class", "value", "low", "high", "p_value"])
    for r in results:
        comp = (comparisons or {}).get(r.name)
        for key, m in r.metrics.items():
            if m.estimate.numel() == 1:
                p = comp.p_value(key) if comp is not None else math.nan
                w.writerow([r.name, key, "", float(m.estimate), float(m.low), float(m.high), p])
                continue
            test = comp.tests.get(key) if comp is not None else None
            for c, cname in enumerate(r.classes):
                p = float(test.p_value[c]) if test is not None else math.nan
                w.writerow([r.name, key, cname, float(m.estimate[c]), float(m.low[c]), float(m.high[c]), p])
    return buf.getvalue()
