"""Bootstrapped confidence intervals and the paired bootstrap test (Tables 1-3 brackets and stars).

A resample draws N test items with replacement; all resamples come from one seeded
``torch.Generator`` as an (R, N) index tensor, so a seed fixes every interval. A metric is any
callable ``metric(scores, targets) -> dict[str, Tensor]``; when it also has a
``resampled(scores, targets, weights)`` method (see :class:`ResampledMetric`), all resamples
are evaluated at once from the (R, N) multiplicity matrix instead of one call per resample.
Both paths use the same indices and give the same numbers (tested).

Intervals use the percentile method: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles (linear interpolation) of the R resampled values; resamples where a value is
undefined (``nan``, e.g. AP of a class with no positive item drawn) are left out of that
value's quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

# (scores, targets) -> named values; targets may be None for metrics that ignore them.
MetricFn = Callable[..., dict[str, Tensor]]


@runtime_checkable
class ResampledMetric(Protocol):
    """A metric with a vectorised form over item weightings.

    ``resampled(scores, targets, weights)`` must return, for weights (R, N) of item
    multiplicities, the values ``__call__`` would give on each resample, stacked on a leading
    dim (R, ...).
    """

    def __call__(self, scores: Tensor, targets: Any, /) -> dict[str, Tensor]: ...

    def resampled(self, scores: Tensor, targets: Any, weights: Tensor, /) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with its bootstrap percentile interval (tensors of the metric's shape)."""

    estimate: Tensor
    low: Tensor
    high: Tensor

    def __str__(self) -> str:
        return _format(self.estimate, self.low, self.high)


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Paired comparison of methods A and B on the same items.

    Attributes:
        estimate_a: metric of A on all items.
        estimate_b: metric of B on all items.
        difference: ``estimate_a - estimate_b``.
        low: lower percentile bound of the difference.
        high: upper percentile bound of the difference.
        p_value: two-sided bootstrap p-value of "no difference" (see :func:`paired_bootstrap_test`).
    """

    estimate_a: Tensor
    estimate_b: Tensor
    difference: Tensor
    low: Tensor
    high: Tensor
    p_value: Tensor

    def __str__(self) -> str:
        return f"diff {_format(self.difference, self.low, self.high)}, p={_scalar_str(self.p_value, '.4f')}"


def _scalar_str(t: Tensor, fmt: str) -> str:
    return format(float(t), fmt) if t.numel() == 1 else str(t.tolist())


def _format(estimate: Tensor, low: Tensor, high: Tensor) -> str:
    if estimate.numel() == 1:
        return f"{float(estimate):.4f} [{float(low):.4f}-{float(high):.4f}]"
    return f"{estimate.tolist()} [{low.tolist()}-{high.tolist()}]"


def star(p_value: Tensor | float, alpha: float = 0.05) -> str:
    """The significance mark of Tables 2-3: ``"*"`` when ``p_value < alpha``, else ``""``.

    Args:
        p_value: a p-value (a 1-element tensor or a float); ``nan`` gives ``""``.
        alpha: significance level.

    Returns:
        ``"*"`` or ``""``.
    """
    p = float(p_value)
    return "*" if p < alpha else ""


def resample_indices(
    n_items: int, n_resamples: int = 1000, *, seed: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """Bootstrap resamples as indices, drawn from a generator seeded with ``seed``.

    The generator lives on the CPU so a seed gives the same resamples on every device.

    Args:
        n_items: number of test items N.
        n_resamples: number of resamples R.
        seed: generator seed.
        device: where the returned indices live.

    Returns:
        Long tensor (R, N) of item indices.
    """
    if n_items < 1 or n_resamples < 1:
        raise ValueError(f"need n_items >= 1 and n_resamples >= 1, got {n_items}, {n_resamples}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n_items, (n_resamples, n_items), generator=g).to(device)


def _multiplicities(index: Tensor, n_items: int, dtype: torch.dtype) -> Tensor:
    counts = torch.zeros(index.shape[0], n_items, dtype=dtype, device=index.device)
    return counts.scatter_add_(1, index, torch.ones_like(index, dtype=dtype))


def _resampled_values(
    metric: MetricFn,
    scores: Tensor,
    targets: Tensor | None,
    index: Tensor,
    vectorized: bool | None,
    chunk_size: int,
) -> Iterator[dict[str, Tensor]]:
    """The metric on each resample, yielded in chunks of stacked (r, ...) values."""
    use_vectorized = isinstance(metric, ResampledMetric) if vectorized is None else vectorized
    if use_vectorized and not isinstance(metric, ResampledMetric):
        raise TypeError("vectorized=True needs a metric with a `resampled` method")
    n_items = scores.shape[0]
    for start in range(0, index.shape[0], chunk_size):
        idx = index[start : start + chunk_size]
        if use_vectorized:
            assert isinstance(metric, ResampledMetric)
            weights = _multiplicities(idx, n_items, torch.float32)
            yield metric.resampled(scores, targets, weights)
        else:
            values = [metric(scores[i], None if targets is None else targets[i]) for i in idx]
            yield {k: torch.stack([v[k] for v in values]) for k in values[0]}


def _collect(chunks: Iterator[dict[str, Tensor]]) -> dict[str, Tensor]:
    parts: dict[str, list[Tensor]] = {}
    for chunk in chunks:
        for k, v in chunk.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v).float() for k, v in parts.items()}


def _percentiles(values: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    alpha = 1.0 - confidence
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=values.dtype, device=values.device)
    low, high = torch.nanquantile(values, q, dim=0)
    return low, high


def _check(n_resamples: int, confidence: float, chunk_size: int) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def bootstrap_ci(
    metric: MetricFn,
    scores: Tensor,
    targets: Tensor | None,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool | None = None,
    chunk_size: int = 250,
) -> dict[str, BootstrapResult]:
    """Percentile bootstrap confidence intervals for every value a metric returns.

    Args:
        metric: ``metric(scores, targets) -> dict[str, Tensor]``, e.g.
            :class:`~atcon.evaluate.ClassificationMetrics` or :class:`MeanMetric`.
        scores: per-item model outputs; items along dim 0.
        targets: per-item targets; items along dim 0 (``None`` for metrics without targets).
        n_resamples: number of resamples R (the paper: 1000).
        confidence: interval coverage (0.95 for 95% intervals).
        seed: seed of the resampling generator.
        vectorized: use ``metric.resampled`` (True), one call per resample (False), or the
            former when available (None).
        chunk_size: resamples evaluated together; bounds memory at about
            ``chunk_size x N`` weights.

    Returns:
        For each key of the metric, a :class:`BootstrapResult` whose ``estimate`` is the metric
        on all items and ``low``/``high`` the percentile bounds, all of the value's shape.

    Shape:
        scores: (N, ...); targets: (N, ...).
    """
    _check(n_resamples, confidence, chunk_size)
    index = resample_indices(scores.shape[0], n_resamples, seed=seed, device=scores.device)
    point = metric(scores, targets)
    stats = _collect(_resampled_values(metric, scores, targets, index, vectorized, chunk_size))
    out = {}
    for k, est in point.items():
        low, high = _percentiles(stats[k], confidence)
        out[k] = BootstrapResult(est.float(), low, high)
    return out


def paired_bootstrap_test(
    metric: MetricFn,
    scores_a: Tensor,
    scores_b: Tensor,
    targets: Tensor | None,
    *,
    targets_b: Tensor | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool | None = None,
    chunk_size: int = 250,
) -> dict[str, PairedBootstrapResult]:
    """Paired bootstrap comparison of two methods evaluated on the same test items.

    Each resample draws the same items for both methods and gives the difference
    ``d_r = metric(A)_r - metric(B)_r``. The two-sided p-value of "no difference" is

        p = min(1, 2 * min(#{d_r <= 0} + 1, #{d_r >= 0} + 1) / (R' + 1)),

    where R' counts resamples in which ``d_r`` is defined: twice the share of resamples on the
    far side of zero from the majority (sign flips), with the +1 correction so that p is never
    exactly 0. p < alpha exactly when 0 lies outside (or on the edge of) the ``1 - alpha``
    percentile interval of the difference, give or take the +1. Ties ``d_r = 0`` count on both
    sides, so identical methods get p = 1.

    Args:
        metric: as for :func:`bootstrap_ci`.
        scores_a: outputs of method A.
        scores_b: outputs of method B on the same items (same N; other dims may differ).
        targets: targets of the items (for A, and for B unless ``targets_b`` is given).
        targets_b: targets for B when they differ in form from A's (same items).
        n_resamples: number of resamples R.
        confidence: coverage of the interval on the difference.
        seed: seed of the resampling generator.
        vectorized: as for :func:`bootstrap_ci`.
        chunk_size: as for :func:`bootstrap_ci`.

    Returns:
        For each key of the metric, a :class:`PairedBootstrapResult`.

    Shape:
        scores_a: (N, ...); scores_b: (N, ...); targets: (N, ...).
    """
    _check(n_resamples, confidence, chunk_size)
    if scores_a.shape[0] != scores_b.shape[0]:
        raise ValueError(
            f"methods must be evaluated on the same items: {scores_a.shape[0]} vs {scores_b.shape[0]}"
        )
    tb = targets if targets_b is None else targets_b
    index = resample_indices(scores_a.shape[0], n_resamples, seed=seed, device=scores_a.device)
    point_a, point_b = metric(scores_a, targets), metric(scores_b, tb)
    stats_a = _collect(_resampled_values(metric, scores_a, targets, index, vectorized, chunk_size))
    stats_b = _collect(_resampled_values(metric, scores_b, tb, index, vectorized, chunk_size))
    out = {}
    for k in point_a:
        diff = stats_a[k] - stats_b[k]
        low, high = _percentiles(diff, confidence)
        defined = ~diff.isnan()
        n = defined.sum(0).to(diff.dtype)
        below = ((diff <= 0) & defined).sum(0).to(diff.dtype)
        above = ((diff >= 0) & defined).sum(0).to(diff.dtype)
        p = (2 * torch.minimum(below + 1, above + 1) / (n + 1)).clamp(max=1.0)
        p = torch.where(n > 0, p, torch.full_like(p, math.nan))
        ea, eb = point_a[k].float(), point_b[k].float()
        out[k] = PairedBootstrapResult(ea, eb, ea - eb, low, high, p)
    return out


@dataclass(frozen=True)
class MeanMetric:
    """Mean of per-item values, ignoring ``nan`` entries; vectorised over resamples.

    For per-item quantities such as IoU, pointing-game hits or deletion AUCs. ``scores`` may
    be (N,) or (N, K) with several values per item (``nan``-padded, e.g. the IoUs of an image's
    true-positive classes from :func:`~atcon.evaluate.values_by_item`); the mean is then over all
    defined values of the drawn items, so items are the resampling unit. ``targets`` is unused
    (pass ``None`` or anything with N rows).
    """

    name: str = "mean"

    def __call__(self, scores: Tensor, targets: Tensor | None = None) -> dict[str, Tensor]:
        """Mean over defined values; ``nan`` when none."""
        return {self.name: scores.float().nanmean()}

    def resampled(self, scores: Tensor, targets: Tensor | None, weights: Tensor) -> dict[str, Tensor]:
        """Weighted mean per row of ``weights`` (R, N) -> (R,)."""
        v = scores.reshape(scores.shape[0], -1).to(weights.dtype)
        defined = ~v.isnan()
        sums = weights @ torch.where(defined, v, torch.zeros_like(v)).sum(1)
        counts = weights @ defined.to(weights.dtype).sum(1)
        mean = torch.where(counts > 0, sums / counts.clamp_min(1e-12), torch.full_like(sums, math.nan))
        return {self.name: mean}
