import math

import pytest
import torch

from atcon.evaluate import (
    ClassificationMetrics,
    MeanMetric,
    bootstrap_ci,
    classification_metrics,
    paired_bootstrap_test,
    resample_indices,
    star,
)


def _data(n=300, c=5, signal=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=g) < 0.3).long()
    scores = torch.randn(n, c, generator=g) + signal * (2 * targets - 1)
    return scores, targets


def test_ci_contains_estimate_and_is_reproducible():
    scores, targets = _data()
    a = bootstrap_ci(ClassificationMetrics(), scores, targets, n_resamples=200, seed=1)
    b = bootstrap_ci(ClassificationMetrics(), scores, targets, n_resamples=200, seed=1)
    c = bootstrap_ci(ClassificationMetrics(), scores, targets, n_resamples=200, seed=2)
    for k in ("f1_macro", "f1_micro", "map", "f1_per_class", "ap_per_class"):
        r = a[k]
        assert torch.all(r.low <= r.estimate) and torch.all(r.estimate <= r.high), k
        assert torch.all(r.high - r.low > 0), k
        torch.testing.assert_close(r.low, b[k].low)
        torch.testing.assert_close(r.high, b[k].high)
    assert not torch.equal(a["map"].low, c["map"].low)
    torch.testing.assert_close(a["map"].estimate, classification_metrics(scores, targets)["map"])
    # A 95% interval is wider than a 50% one.
    narrow = bootstrap_ci(ClassificationMetrics(), scores, targets, n_resamples=200, seed=1, confidence=0.5)
    assert narrow["map"].high - narrow["map"].low < a["map"].high - a["map"].low


def _naive_percentiles(metric, scores, targets, n_resamples, seed, confidence=0.95):
    """Reference: one metric call per resample, then percentiles."""
    index = resample_indices(scores.shape[0], n_resamples, seed=seed)
    values = [metric(scores[i], None if targets is None else targets[i]) for i in index]
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2])
    return {k: torch.nanquantile(torch.stack([v[k] for v in values]).float(), q, dim=0) for k in values[0]}


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_vectorized_equals_naive_loop(task):
    scores, targets = _data(n=120, c=4, signal=0.7)
    if task == "multiclass":
        targets = targets.argmax(1)
    metric = ClassificationMetrics(task)
    fast = bootstrap_ci(metric, scores, targets, n_resamples=7, seed=3, chunk_size=3)
    ref = _naive_percentiles(metric, scores, targets, 7, seed=3)
    for k, (low, high) in ref.items():
        torch.testing.assert_close(fast[k].low, low, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast[k].high, high, atol=1e-5, rtol=1e-5)
    slow = bootstrap_ci(metric, scores, targets, n_resamples=7, seed=3, vectorized=False)
    torch.testing.assert_close(slow["map"].low, fast["map"].low, atol=1e-5, rtol=1e-5)


def test_mean_metric_vectorized_with_nan_padding():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(50, 3, generator=g)
    values[torch.rand(50, 3, generator=g) < 0.4] = math.nan
    values[7] = math.nan  # an item without any value
    fast = bootstrap_ci(MeanMetric("iou"), values, None, n_resamples=9, seed=5)
    ref = _naive_percentiles(MeanMetric("iou"), values, None, 9, seed=5)
    torch.testing.assert_close(fast["iou"].low, ref["iou"][0])
    torch.testing.assert_close(fast["iou"].high, ref["iou"][1])
    torch.testing.assert_close(fast["iou"].estimate, values.nanmean())


def test_undefined_resamples_are_left_out():
    # One positive item for class 0: resamples without it have no AP for that class.
    scores = torch.randn(20, 2)
    targets = torch.zeros(20, 2, dtype=torch.long)
    targets[0, 0] = 1
    targets[:10, 1] = 1
    r = bootstrap_ci(ClassificationMetrics(), scores, targets, n_resamples=100)
    assert torch.isfinite(r["ap_per_class"].low).all()
    assert torch.isfinite(r["map"].low)


def test_paired_test_detects_a_better_method():
    scores, targets = _data(n=400, signal=1.5)
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(9))
    res = paired_bootstrap_test(ClassificationMetrics(), scores, noise, targets, n_resamples=300)
    r = res["map"]
    assert float(r.difference) > 0.2
    assert float(r.p_value) < 0.01 and star(r.p_value) == "*"
    assert float(r.low) > 0
    torch.testing.assert_close(r.estimate_a, classification_metrics(scores, targets)["map"])
    # p-value is never exactly 0 (the +1 correction).
    assert float(r.p_value) == pytest.approx(2 / 301)


def test_paired_test_identical_methods():
    scores, targets = _data(n=200)
    r = paired_bootstrap_test(ClassificationMetrics(), scores, scores.clone(), targets, n_resamples=100)
    for v in r.values():
        assert torch.all(v.p_value == 1.0)
        assert torch.all(v.difference == 0)
    assert star(r["map"].p_value) == ""


def test_paired_test_similar_methods_not_significant():
    scores, targets = _data(n=200, signal=1.0)
    g = torch.Generator().manual_seed(4)
    a = scores + 0.3 * torch.randn(scores.shape, generator=g)
    b = scores + 0.3 * torch.randn(scores.shape, generator=g)
    r = paired_bootstrap_test(ClassificationMetrics(), a, b, targets, n_resamples=300)["map"]
    assert float(r.p_value) > 0.05
    assert float(r.low) < 0 < float(r.high)


def test_paired_vectorized_equals_naive_p_value():
    scores, targets = _data(n=80, c=3, signal=0.5)
    other = scores + torch.randn(scores.shape, generator=torch.Generator().manual_seed(1))
    fast = paired_bootstrap_test(ClassificationMetrics(), scores, other, targets, n_resamples=25)
    index = resample_indices(80, 25, seed=0)
    m = ClassificationMetrics()
    d = torch.stack(
        [m(scores[i], targets[i])["f1_macro"] - m(other[i], targets[i])["f1_macro"] for i in index]
    )
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    expected = min(1.0, 2 * min(below + 1, above + 1) / 26)
    assert float(fast["f1_macro"].p_value) == pytest.approx(expected)


def test_star_and_validation():
    assert star(0.049) == "*" and star(0.05) == "" and star(torch.tensor(0.01)) == "*"
    assert star(math.nan) == ""
    scores, targets = _data(n=10)
    with pytest.raises(ValueError):
        bootstrap_ci(ClassificationMetrics(), scores, targets, confidence=1.5)
    with pytest.raises(TypeError):
        bootstrap_ci(classification_metrics, scores, targets, n_resamples=2, vectorized=True)
    with pytest.raises(ValueError):
        paired_bootstrap_test(ClassificationMetrics(), scores, scores[:5], targets)
    r = bootstrap_ci(classification_metrics, scores, targets, n_resamples=3)  # plain function: loop
    assert "map" in r and str(r["map"]).count("[") == 1
