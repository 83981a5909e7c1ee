"""Paired comparison of two methods evaluated on the same items (the stars of Tables 2-3)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from atcon.evaluate.bootstrap import MeanMetric, PairedBootstrapResult, paired_bootstrap_test, star
from atcon.evaluate.metrics import ClassificationMetrics
from atcon.evaluate.results import (
    CLASSIFICATION_KEYS,
    GROUP_KEYS,
    PAIR_KEYS,
    PER_CLASS_KEYS,
    EvaluationResult,
    group_key,
    group_members,
    result_rows,
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


def compare(
    a: EvaluationResult,
    b: EvaluationResult,
    *,
    n_resamples: int | None = None,
    seed: int | None = None,
    alpha: float = 0.05,
) -> Comparison:
    """Paired bootstrap tests of every scalar metric of A against B (same items, same resamples).

    Classification metrics resample the items' logits of both models together (per group, the
    items of the group); pair-level metrics (IoU, pointing, energy, energy in avoid regions,
    deletion, insertion) resample the items' per-item tables, so models with different
    true-positive pairs are still compared on the same images.

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
    tests = {k: cls[k] for k in (*CLASSIFICATION_KEYS, *PER_CLASS_KEYS) if k in cls}
    for key in PAIR_KEYS:
        if key in a.item_values and key in b.item_values:
            ta, tb = a.item_values[key], b.item_values[key]
            tests[key] = paired_bootstrap_test(MeanMetric(key), ta, tb, None, **kw)[key]
    if a.groups is not None and a.group_names:
        for g, members in group_members(a.groups, a.group_names).items():
            values = paired_bootstrap_test(
                metric, a.logits[members], b.logits[members], a.labels[members], **kw
            )
            tests.update({group_key(k, g): values[k] for k in GROUP_KEYS[a.task]})
    return Comparison(a.name, b.name, tests, alpha)


def comparisons_against(
    results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult], reference: str
) -> dict[str, Comparison]:
    """Paired tests of every row against the row named ``reference``."""
    rows = result_rows(results)
    ref = next((r for r in rows if r.name == reference), None)
    if ref is None:
        raise ValueError(f"reference {reference!r} is not one of {[r.name for r in rows]}")
    return {r.name: compare(r, ref) for r in rows if r.name != reference}
