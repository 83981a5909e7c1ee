"""Several seeds of one method as one row: seed-averaged metrics with test-set bootstrap intervals.

Every seed of a method is evaluated on the same test items. The row's value is the mean over
seeds of each seed's metric; its interval resamples the *test items* (the same draw for every
seed), so it says how much the seed-averaged figure depends on the particular test images. Two
methods are compared with a paired bootstrap on those same resamples (:func:`compare_rows`).
The spread between seeds is reported separately (``seed_sd``): it is the variation due to the
few-shot draw and the training run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from atcon.evaluate import CLASSIFICATION_KEYS, GROUP_KEYS, PAIR_KEYS, PER_CLASS_KEYS, EvaluationResult
from atcon.evaluate.bootstrap import BootstrapResult, MeanMetric, bootstrap_ci, paired_bootstrap_test, star
from atcon.evaluate.metrics import ClassificationMetrics, Task
from atcon.evaluate.results import group_key, group_members


@dataclass(frozen=True)
class SeedMean:
    """A resampled metric averaged over seeds: scores ``(N, S, ...)`` hold S runs on the same N items."""

    metric: Any

    def __call__(self, scores: Tensor, targets: Any) -> dict[str, Tensor]:
        return _mean([self.metric(scores[:, s], targets) for s in range(scores.shape[1])])

    def resampled(self, scores: Tensor, targets: Any, weights: Tensor) -> dict[str, Tensor]:
        return _mean([self.metric.resampled(scores[:, s], targets, weights) for s in range(scores.shape[1])])


def _mean(values: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([v[k].float() for v in values]).nanmean(0) for k in values[0]}


def _stack_tables(tables: Sequence[Tensor]) -> Tensor:
    """Per-seed (N, K_s) item tables -> (N, S, max K), ``nan``-padded."""
    width = max(t.shape[1] for t in tables)
    padded = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=math.nan) for t in tables]
    return torch.stack(padded, dim=1)


@dataclass
class Row:
    """One method over its seeds.

    Attributes:
        name: the method (row label).
        task: classification task.
        classes: class names.
        logits: ``(N, S, C)`` test logits of the S seeds.
        labels: the items' labels (as in :class:`~atcon.evaluate.EvaluationResult`).
        tables: per pair-level metric, ``(N, S, K)`` per-item values.
        metrics: seed-averaged estimates with test-item bootstrap intervals.
        seed_values: each seed's own point estimate of every scalar metric.
        n_pairs: true-positive pairs per seed.
        groups: (N,) group index of every item (``-1``: none), or None; each group's
            classification metrics are in ``metrics`` under ``"<metric>@<group>"``.
        group_names: the names the indices refer to.
    """

    name: str
    task: Task
    classes: tuple[str, ...]
    logits: Tensor
    labels: Tensor
    tables: dict[str, Tensor]
    metrics: dict[str, BootstrapResult]
    seed_values: dict[str, list[float]]
    n_pairs: list[int]
    extra: dict[str, Any] = field(default_factory=dict)
    groups: Tensor | None = None
    group_names: tuple[str, ...] = ()

    def members(self) -> dict[str, Tensor]:
        """The item indices of each group."""
        return {} if self.groups is None else group_members(self.groups, self.group_names)

    @property
    def n_seeds(self) -> int:
        return int(self.logits.shape[1])

    def seed_sd(self, key: str) -> float:
        """Standard deviation of the metric between seeds (nan for one seed)."""
        v = self.seed_values.get(key, [])
        return float(torch.tensor(v).std()) if len(v) > 1 else math.nan

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "n_seeds": self.n_seeds,
            "n_pairs": self.n_pairs,
            **self.extra,
        }
        for k, m in self.metrics.items():
            out[k] = {"value": m.estimate.tolist(), "low": m.low.tolist(), "high": m.high.tolist()}
            if k in self.seed_values:
                out[k]["seeds"] = self.seed_values[k]
        return out


def aggregate(
    results: Sequence[EvaluationResult], name: str, *, n_resamples: int = 1000, seed: int = 0
) -> Row:
    """Combine the evaluations of one method's seeds (same test items) into a :class:`Row`."""
    if not results:
        raise ValueError(f"no results for {name!r}")
    first = results[0]
    for r in results[1:]:
        if r.n_items != first.n_items or not torch.equal(r.labels, first.labels):
            raise ValueError(f"the seeds of {name!r} were not evaluated on the same test items")
    logits = torch.stack([r.logits for r in results], dim=1)
    kw: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
    cls = bootstrap_ci(SeedMean(ClassificationMetrics(first.task)), logits, first.labels, **kw)
    metrics = {k: cls[k] for k in (*CLASSIFICATION_KEYS, *PER_CLASS_KEYS) if k in cls}
    tables = {
        k: _stack_tables([r.item_values[k] for r in results])
        for k in PAIR_KEYS
        if all(k in r.item_values for r in results)
    }
    for k, t in tables.items():
        metrics[k] = bootstrap_ci(SeedMean(MeanMetric(k)), t, None, **kw)[k]
    row = Row(
        name, first.task, first.classes, logits, first.labels, tables, metrics, {},
        [r.n_pairs for r in results], groups=first.groups, group_names=first.group_names,
    )  # fmt: skip
    for g, members in row.members().items():
        values = bootstrap_ci(
            SeedMean(ClassificationMetrics(first.task)), logits[members], first.labels[members], **kw
        )
        metrics.update({group_key(k, g): values[k] for k in GROUP_KEYS[first.task]})
    row.seed_values = {
        k: [float(r.metrics[k].estimate) for r in results]
        for k in metrics
        if metrics[k].estimate.numel() == 1 and all(k in r.metrics for r in results)
    }
    return row


def compare_rows(a: Row, b: Row, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap p-values of A's seed-averaged metrics against B's (same test resamples)."""
    if not torch.equal(a.labels, b.labels):
        raise ValueError(f"cannot compare {a.name!r} and {b.name!r}: different test items")
    kw: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
    tests = paired_bootstrap_test(SeedMean(ClassificationMetrics(a.task)), a.logits, b.logits, a.labels, **kw)
    p = {k: float(tests[k].p_value) for k in CLASSIFICATION_KEYS if k in tests}
    for k in a.tables.keys() & b.tables.keys():
        t = paired_bootstrap_test(SeedMean(MeanMetric(k)), a.tables[k], b.tables[k], None, **kw)[k]
        p[k] = float(t.p_value)
    metric = SeedMean(ClassificationMetrics(a.task))
    for g, members in a.members().items():
        tests = paired_bootstrap_test(metric, a.logits[members], b.logits[members], a.labels[members], **kw)
        p.update({group_key(k, g): float(tests[k].p_value) for k in GROUP_KEYS[a.task]})
    return p


def cell(row: Row, key: str, p_values: dict[str, float] | None = None, *, percent: bool = True) -> str:
    """``"mean [low-high]"`` (percent), with ``*`` when the paired test against the reference has p < 0.05."""
    m = row.metrics.get(key)
    if m is None or m.estimate.numel() != 1 or math.isnan(float(m.estimate)):
        return "n/a"
    s = 100.0 if percent else 1.0
    text = f"{s * float(m.estimate):.1f} [{s * float(m.low):.1f}-{s * float(m.high):.1f}]"
    return text + (star(p_values[key]) if p_values and key in p_values else "")
