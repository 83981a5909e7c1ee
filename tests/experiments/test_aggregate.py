"""Seed-averaged rows: estimates, intervals and paired tests against naive computations."""

from __future__ import annotations

import math

import pytest
import torch

from atcon.evaluate import EvalSpec, summarize
from atcon.evaluate.bootstrap import MeanMetric, bootstrap_ci, paired_bootstrap_test
from atcon.evaluate.metrics import ClassificationMetrics
from atcon.experiments.aggregate import SeedMean, _stack_tables, aggregate, cell, compare_rows


def _result(logits: torch.Tensor, labels: torch.Tensor, name: str = "m"):  # type: ignore[no-untyped-def]
    pairs = torch.zeros(0, 2, dtype=torch.long)
    spec = EvalSpec("multiclass", classes=("a", "b", "c"), n_resamples=200)
    return summarize(logits, labels, pairs, None, None, spec, name=name)


def test_seed_average_equals_the_mean_of_the_seeds_and_one_seed_is_plain() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (120,), generator=g)
    a = _result(torch.randn(120, 3, generator=g) + 2 * torch.nn.functional.one_hot(labels, 3), labels)
    b = _result(torch.randn(120, 3, generator=g), labels)
    one = aggregate([a], "m", n_resamples=200)
    for key in ("f1_macro", "map"):
        assert float(one.metrics[key].estimate) == pytest.approx(float(a.metrics[key].estimate))
        # Same resamples (seed 0) as the single evaluation: the same interval.
        assert float(one.metrics[key].low) == pytest.approx(float(a.metrics[key].low), abs=1e-6)
    both = aggregate([a, b], "m", n_resamples=200)
    mean = (float(a.metrics["f1_macro"].estimate) + float(b.metrics["f1_macro"].estimate)) / 2
    assert float(both.metrics["f1_macro"].estimate) == pytest.approx(mean)
    assert both.n_seeds == 2 and both.seed_sd("f1_macro") > 0 and math.isnan(one.seed_sd("f1_macro"))
    assert cell(both, "f1_macro").startswith(f"{100 * mean:.1f} [")


def test_paired_comparison_of_rows_detects_a_real_difference_only() -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(3, (200,), generator=g)
    good = [_result(torch.randn(200, 3, generator=g) + 3 * torch.nn.functional.one_hot(labels, 3), labels)
            for _ in range(2)]  # fmt: skip
    bad = [_result(torch.randn(200, 3, generator=g), labels) for _ in range(2)]
    rg, rb = aggregate(good, "good", n_resamples=200), aggregate(bad, "bad", n_resamples=200)
    p = compare_rows(rg, rb, n_resamples=200)
    assert p["f1_macro"] < 0.05 and p["map"] < 0.05
    assert compare_rows(rg, rg, n_resamples=200)["f1_macro"] == 1.0
    assert cell(rg, "f1_macro", p).endswith("*")
    other = aggregate([_result(torch.randn(200, 3), torch.randint(3, (200,)))], "x", n_resamples=50)
    with pytest.raises(ValueError, match="different test items"):
        compare_rows(rg, other)


def _with_pairs(logits: torch.Tensor, labels: torch.Tensor, values: torch.Tensor, name: str = "m"):  # type: ignore[no-untyped-def]
    """An evaluation with one pair-level value (a deletion AUC) per item."""
    n = logits.shape[0]
    pairs = torch.stack([torch.arange(n), labels], dim=1)
    faith = {"deletion": values, "insertion": 1 - values}
    spec = EvalSpec("multiclass", classes=("a", "b", "c"), n_resamples=300)
    return summarize(logits, labels, pairs, None, faith, spec, name=name)


def test_seed_mean_resampled_equals_the_metric_on_each_materialised_resample() -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(3, (30,), generator=g)
    scores = torch.randn(30, 2, 3, generator=g)  # (N, S, C): two seeds
    weights = torch.stack(
        [torch.bincount(torch.randint(30, (30,), generator=g), minlength=30) for _ in range(6)]
    )
    metric = SeedMean(ClassificationMetrics("multiclass"))
    fast = metric.resampled(scores, labels, weights.float())
    for r in range(6):
        idx = torch.repeat_interleave(torch.arange(30), weights[r])
        per_seed = [ClassificationMetrics("multiclass")(scores[idx, s], labels[idx]) for s in range(2)]
        for key in ("f1_macro", "map"):
            naive = (float(per_seed[0][key]) + float(per_seed[1][key])) / 2
            assert float(fast[key][r]) == pytest.approx(naive, abs=1e-5), (key, r)


def test_pair_metric_row_is_the_bootstrap_of_the_seed_averaged_item_values() -> None:
    # The seed mean of per-item means is linear: with one value per item, the row's resampled
    # values are the resampled means of the item values averaged over seeds.
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(3, (40,), generator=g)
    values = [torch.rand(40, generator=g) for _ in range(3)]
    results = [_with_pairs(torch.randn(40, 3, generator=g), labels, v) for v in values]
    row = aggregate(results, "m", n_resamples=300, seed=4)
    mean = torch.stack(values).mean(0)[:, None]
    naive = bootstrap_ci(MeanMetric("deletion"), mean, None, n_resamples=300, seed=4)["deletion"]
    for part in ("estimate", "low", "high"):
        assert float(getattr(row.metrics["deletion"], part)) == pytest.approx(
            float(getattr(naive, part)), abs=1e-6
        )
    assert row.seed_values["deletion"] == pytest.approx([float(v.mean()) for v in values], abs=1e-6)
    assert row.tables["deletion"].shape == (40, 3, 1)
    # The paired test of two rows is the paired test of their seed-averaged item values.
    other = [_with_pairs(torch.randn(40, 3, generator=g), labels, v.sqrt()) for v in values]
    row_b = aggregate(other, "b", n_resamples=300, seed=4)
    p = compare_rows(row, row_b, n_resamples=300, seed=4)
    mean_b = torch.stack([v.sqrt() for v in values]).mean(0)[:, None]
    naive_p = paired_bootstrap_test(MeanMetric("deletion"), mean, mean_b, None, n_resamples=300, seed=4)
    assert p["deletion"] == pytest.approx(float(naive_p["deletion"].p_value))
    assert p["deletion"] < 0.05 and set(p) >= {"f1_macro", "f1_micro", "map", "deletion", "insertion"}


def test_tables_of_different_widths_are_nan_padded() -> None:
    a, b = torch.ones(4, 1), torch.full((4, 3), 2.0)
    t = _stack_tables([a, b])
    assert t.shape == (4, 2, 3)
    assert torch.equal(t[:, 1], b) and torch.equal(t[:, 0, :1], a) and t[:, 0, 1:].isnan().all()


def test_aggregate_needs_the_same_test_items() -> None:
    with pytest.raises(ValueError, match="no results"):
        aggregate([], "m")
    g = torch.Generator().manual_seed(0)
    a = _result(torch.randn(20, 3, generator=g), torch.randint(3, (20,), generator=g))
    b = _result(torch.randn(20, 3, generator=g), torch.randint(3, (20,), generator=g))
    with pytest.raises(ValueError, match="not evaluated on the same test items"):
        aggregate([a, b], "m", n_resamples=50)
    row = aggregate([a], "m", n_resamples=50)
    d = row.to_dict()
    assert d["n_seeds"] == 1 and d["f1_macro"]["seeds"] == [float(a.metrics["f1_macro"].estimate)]
    assert cell(row, "no-such-metric") == "n/a"
