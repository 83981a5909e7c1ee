"""The outcome of an evaluation: its settings, its per-item values and their bootstrap summary.

:class:`EvalSpec` says how a model is evaluated; :func:`summarize` turns per-item logits and
per-pair localization/faithfulness values into point estimates with percentile bootstrap
intervals; :class:`EvaluationResult` holds both, and saves and reloads them (the intervals are
recomputed from the same seed, so they come back identical).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atcon.attention.maps import LayerSpec
from atcon.evaluate.bootstrap import BootstrapResult, MeanMetric, bootstrap_ci
from atcon.evaluate.localization import LocalizationProtocol, LocalizationResult, values_by_item
from atcon.evaluate.metrics import ClassificationMetrics, Task

CLASSIFICATION_KEYS = ("f1_macro", "f1_micro", "map", "accuracy")  # accuracy: multi-class only
PAIR_KEYS = ("iou", "pointing", "energy", "energy_avoid", "deletion", "insertion")
GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "f1_macro"),
    "multilabel": ("f1_macro", "map"),
}
"""Classification metrics also reported per item group (``accuracy@conflicting``) where the data
give groups, by task."""
PER_CLASS_KEYS = ("f1_per_class", "ap_per_class")
LABELS = {
    "f1_macro": "F1 (macro)",
    "f1_micro": "F1 (micro)",
    "map": "mAP",
    "accuracy": "Accuracy",
    "iou": "IoU",
    "pointing": "Pointing",
    "energy": "Energy",
    "energy_avoid": "Energy in avoid regions",
    "deletion": "Deletion AUC",
    "insertion": "Insertion AUC",
}
"""Column titles of the metrics in tables."""
LOWER_IS_BETTER = frozenset({"deletion", "energy_avoid"})


def group_key(metric: str, group: str) -> str:
    """The metrics key of ``metric`` on the items of ``group``: ``"accuracy@conflicting"``."""
    return f"{metric}@{group}"


def metric_label(key: str) -> str:
    """Column title of a metrics key: ``LABELS[key]``, ``"Accuracy (conflicting)"`` for a group's."""
    metric, _, group = key.partition("@")
    title = LABELS.get(metric, metric)
    return f"{title} ({group})" if group else title


def item_groups(names: Sequence[str | None]) -> tuple[Tensor, tuple[str, ...]]:
    """Per-item group index (N,) long (``-1``: none) and the group names, sorted, from per-item
    names (``""`` or ``None``: no group)."""
    groups = tuple(sorted({g for g in names if g}))
    index = {g: i for i, g in enumerate(groups)}
    return torch.tensor([index.get(g or "", -1) for g in names], dtype=torch.long), groups


@dataclass(frozen=True)
class EvalSpec:
    """How a model is evaluated: what is measured, how intervals are drawn, where the pass runs.

    One spec travels unchanged from the caller through :func:`~atcon.evaluate.evaluate_model`
    to :func:`summarize`, whose result records the fields that shape its numbers (task,
    classes, threshold, protocol, bootstrap settings).

    Its documented fields are also ``atcon evaluate``'s flags (``threshold`` as
    ``--decision-threshold``, ``n_resamples`` as ``--resamples``, ``num_workers`` as ``--workers``).

    Attributes:
        task: ``"multilabel"`` (sigmoid > ``threshold``) or ``"multiclass"`` (argmax).
        classes: class names (default: the dataset's ``classes``, else indices).
        target_layer: Grad-CAM layer (dotted name, module, or None to discover it).
        threshold: Multi-label decision threshold: a class is predicted when its probability
            is above it (F1, and which (item, class) pairs are true positives for
            localization). Not the localization IoU threshold (protocol.threshold).
        protocol: localization protocol (default: the paper's).
        localization: compute Grad-CAM localization when the data has boxes.
        faithfulness: Also compute deletion/insertion AUCs of the true-positive maps.
        faithfulness_steps: Steps of the deletion/insertion curves.
        n_resamples: Bootstrap resamples (the paper: 1000).
        seed: Bootstrap seed (the same resamples for every metric).
        confidence: Interval coverage.
        device: where the model and batches run (``"auto"``: CUDA when available).
        batch_size: Items per forward pass.
        num_workers: DataLoader worker processes.

    Raises:
        ValueError: an unknown task or an out-of-range setting.
    """

    task: Task = "multilabel"
    classes: tuple[str, ...] | None = None
    target_layer: LayerSpec = None
    threshold: float = field(default=0.5, metadata={"key": "decision_threshold"})
    protocol: LocalizationProtocol = field(default_factory=LocalizationProtocol)
    localization: bool = True
    faithfulness: bool = False
    faithfulness_steps: int = 16
    n_resamples: int = field(default=1000, metadata={"key": "resamples"})
    seed: int = 0
    confidence: float = 0.95
    device: str | torch.device = "cpu"
    batch_size: int = 64
    num_workers: int = field(default=0, metadata={"key": "workers"})

    def __post_init__(self) -> None:
        if self.task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {self.task!r}")
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples (--resamples) must be >= 1, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.batch_size < 1 or self.num_workers < 0 or self.faithfulness_steps < 1:
            raise ValueError(
                f"batch_size and faithfulness_steps must be >= 1 and num_workers >= 0, got "
                f"{self.batch_size}, {self.faithfulness_steps}, {self.num_workers}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the decision threshold must be in [0, 1], got {self.threshold}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))


def as_spec(spec: EvalSpec | Task) -> EvalSpec:
    """``spec`` itself, or the default spec of a task name."""
    return spec if isinstance(spec, EvalSpec) else EvalSpec(task=spec)


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
        groups: (N,) group index of every item (``-1``: none), or None when the data give none;
            the classification metrics of each group are in ``metrics`` (:func:`group_key`).
        group_names: the names the indices refer to.
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
    groups: Tensor | None = None
    group_names: tuple[str, ...] = ()

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
        """JSON-ready summary: counts, protocol and every metric as ``{value, low, high}``.

        The two thresholds are named apart: ``decision_threshold`` (multi-label F1: a class is
        predicted above it) and ``protocol.iou_threshold`` (the localization mask).
        """
        protocol = self.protocol.as_dict()
        protocol["iou_threshold"] = protocol.pop("threshold")
        return {
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "n_items": self.n_items,
            "n_pairs": self.n_pairs,
            "n_degenerate": self.n_degenerate,
            "n_unannotated": self.n_unannotated,
            "layer": self.layer,
            "protocol": protocol,
            "protocol_text": str(self.protocol),
            "bootstrap": {"n_resamples": self.n_resamples, "seed": self.seed, "confidence": self.confidence},
            "decision_threshold": self.threshold,
            "seconds": self.seconds,
            "metrics": {k: _interval_dict(v) for k, v in self.metrics.items()},
            **({"groups": self.group_counts()} if self.group_names else {}),
            **self.extra,
        }

    def group_counts(self) -> dict[str, int]:
        """Items per group."""
        if self.groups is None:
            return {}
        return {g: int((self.groups == i).sum()) for i, g in enumerate(self.group_names)}

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
            "localization": None if loc is None else {f.name: getattr(loc, f.name) for f in fields(loc)},
            "faithfulness": self.faithfulness,
            "protocol": self.protocol.as_dict(),
            "layer": self.layer,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "seconds": self.seconds,
            "groups": self.groups,
            "group_names": list(self.group_names),
        }
        from atcon.results_io import atomic_open

        with atomic_open(path, "wb") as f:  # another process reading the file never sees half of it
            torch.save(payload, f)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        """Read a file written by :meth:`save` and recompute the intervals (same seed, same numbers)."""
        d = torch.load(Path(path), map_location="cpu", weights_only=True)
        loc = None if d["localization"] is None else LocalizationResult(**d["localization"])
        spec = EvalSpec(
            task=d["task"],
            classes=tuple(d["classes"]),
            threshold=d["threshold"],
            protocol=LocalizationProtocol(**d["protocol"]),
            n_resamples=d["n_resamples"],
            seed=d["seed"],
            confidence=d["confidence"],
        )
        return summarize(
            d["logits"],
            d["labels"],
            d["pairs"],
            loc,
            d["faithfulness"],
            spec,
            name=d["name"],
            layer=d["layer"],
            seconds=d["seconds"],
            groups=d.get("groups"),
            group_names=tuple(d.get("group_names", ())),
        )


def _interval_dict(r: BootstrapResult) -> dict[str, Any]:
    def plain(t: Tensor) -> float | list[float | None] | None:
        if t.numel() == 1:
            v = float(t)
            return None if math.isnan(v) else v
        return [None if math.isnan(v) else v for v in t.tolist()]

    return {"value": plain(r.estimate), "low": plain(r.low), "high": plain(r.high)}


def result_rows(
    results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult],
) -> list[EvaluationResult]:
    """Results as a list; a mapping's keys become the results' names (table rows)."""
    if isinstance(results, Mapping):
        return [r if r.name == row else replace(r, name=row) for row, r in results.items()]
    return list(results)


def summarize(
    logits: Tensor,
    labels: Tensor,
    pairs: Tensor,
    localization: LocalizationResult | None,
    faithfulness: dict[str, Tensor] | None,
    spec: EvalSpec | Task,
    *,
    name: str = "model",
    layer: str = "",
    seconds: float = 0.0,
    groups: Tensor | None = None,
    group_names: Sequence[str] = (),
) -> EvaluationResult:
    """Point estimates and bootstrap intervals from per-item logits and per-pair values.

    Classification metrics resample the items' logits; pair-level metrics (IoU, pointing game,
    energy, energy in avoid regions, deletion, insertion) resample the items' per-item tables of
    their pairs' values (:func:`~atcon.evaluate.values_by_item`), all with the same seeded
    resamples. With groups, each group's classification metrics (:data:`GROUP_KEYS`) resample
    the items of that group.

    Args:
        logits: (N, C) logits.
        labels: (N, C) multi-hot (``IGNORE`` allowed) or (N,) class indices.
        pairs: (P, 2) ``(item, class)`` rows the pair values belong to.
        localization: per-pair localization values, or None.
        faithfulness: per-pair ``deletion``/``insertion`` AUCs, or None.
        spec: task, class names (default: indices), decision threshold, localization protocol
            and bootstrap settings; a task name for the defaults.
        name: method name.
        layer: Grad-CAM layer name.
        seconds: time of the pass, for the record.
        groups: (N,) group index per item (``-1``: none), see :func:`item_groups`.
        group_names: the groups' names.

    Returns:
        The :class:`EvaluationResult`.
    """
    spec = as_spec(spec)
    n = logits.shape[0]
    kw: dict[str, Any] = {"n_resamples": spec.n_resamples, "seed": spec.seed, "confidence": spec.confidence}
    cls = bootstrap_ci(ClassificationMetrics(spec.task, threshold=spec.threshold), logits, labels, **kw)
    metrics = {k: cls[k] for k in (*CLASSIFICATION_KEYS, *PER_CLASS_KEYS) if k in cls}
    per_pair: dict[str, Tensor] = {}
    if localization is not None:
        per_pair.update(iou=localization.iou, pointing=localization.pointing, energy=localization.energy)
        if not localization.energy_avoid.isnan().all():
            per_pair["energy_avoid"] = localization.energy_avoid
    if faithfulness is not None:
        per_pair.update(deletion=faithfulness["deletion"], insertion=faithfulness["insertion"])
    items = pairs[:, 0]
    item_values = {k: values_by_item(v.float(), items, n) for k, v in per_pair.items()}
    for k, table in item_values.items():
        metrics[k] = bootstrap_ci(MeanMetric(k), table, None, **kw)[k]
    names = tuple(group_names)
    if groups is not None and names:
        metrics.update(_group_metrics(logits, labels, groups, names, spec, kw))
    classes = spec.classes if spec.classes is not None else tuple(str(c) for c in range(logits.shape[1]))
    return EvaluationResult(
        name=name,
        task=spec.task,
        classes=classes,
        logits=logits,
        labels=labels,
        pairs=pairs,
        localization=localization,
        faithfulness=faithfulness,
        item_values=item_values,
        metrics=metrics,
        protocol=spec.protocol,
        layer=layer,
        n_resamples=spec.n_resamples,
        seed=spec.seed,
        confidence=spec.confidence,
        threshold=spec.threshold,
        seconds=seconds,
        groups=groups if names else None,
        group_names=names,
    )


def group_members(groups: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """The item indices of each named group (groups without items are left out)."""
    out = {}
    for i, g in enumerate(names):
        members = (groups == i).nonzero()[:, 0]
        if members.numel():
            out[g] = members
    return out


def _group_metrics(
    logits: Tensor, labels: Tensor, groups: Tensor, names: Sequence[str], spec: EvalSpec, kw: dict[str, Any]
) -> dict[str, BootstrapResult]:
    metric = ClassificationMetrics(spec.task, threshold=spec.threshold)
    out = {}
    for g, members in group_members(groups, names).items():
        values = bootstrap_ci(metric, logits[members], labels[members], **kw)
        out.update({group_key(k, g): values[k] for k in GROUP_KEYS[spec.task]})
    return out
