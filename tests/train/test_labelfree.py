"""Label-free signals and the label-free selection rule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import entropy

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.train.labelfree import LabelFreeSelection, label_free_signals, marginal_entropy
from tests.conftest import TinyCNN, randomize_bn


def test_marginal_entropy_against_scipy() -> None:
    top1 = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    counts = torch.bincount(top1, minlength=5).double().numpy()
    assert math.isclose(float(marginal_entropy(top1, 5)), entropy(counts) / math.log(5), rel_tol=1e-6)
    assert float(marginal_entropy(torch.arange(4), 4)) == pytest.approx(1.0)
    assert float(marginal_entropy(torch.zeros(9, dtype=torch.long), 4)) == pytest.approx(0.0, abs=1e-7)


def test_signals_of_the_starting_model_and_of_a_changed_one() -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(classes=4)).eval()
    batches = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    cfg = ConsistencyConfig()
    same = label_free_signals(model, copy.deepcopy(model), batches, cfg, "multilabel")
    assert same["agreement"] == 1.0
    assert same["kl_to_start"] == pytest.approx(0.0, abs=1e-6)
    direct = torch.cat([attention_consistency(model, x, cfg).loss.detach() for x in batches]).mean()
    assert same["consistency"] == pytest.approx(float(direct), abs=1e-6)
    other = randomize_bn(TinyCNN(classes=4), seed=3).eval()
    changed = label_free_signals(other, model, batches, cfg, "multiclass")
    assert changed["kl_to_start"] > 0
    assert 0.0 <= changed["agreement"] <= 1.0
    assert 0.0 <= changed["class_entropy"] <= 1.0


def _row(cons: float, agree: float = 1.0, ent: float = 0.9) -> dict[str, float]:
    return {"consistency": cons, "agreement": agree, "class_entropy": ent, "kl_to_start": 0.0}


def test_selection_keeps_the_best_admissible_and_stops_on_plateau() -> None:
    rule = LabelFreeSelection(min_agreement=0.9, min_entropy_ratio=0.95, min_delta=0.01, patience=2)
    assert rule.update(_row(-0.5)).best  # the start
    assert rule.update(_row(-0.6)).best
    d = rule.update(_row(-0.9, agree=0.5))  # more consistent but predictions drifted: rejected
    assert not d.best and "inadmissible" in d.reason and not d.stop
    d = rule.update(_row(-0.95, ent=0.5))  # collapsing class distribution: rejected, 2nd stale -> stop
    assert not d.best and d.stop
    assert rule.best_consistency == pytest.approx(-0.6)


def test_selection_plateau_counts_small_improvements_as_stale() -> None:
    rule = LabelFreeSelection(min_delta=0.05, patience=2)
    rule.update(_row(-0.5))
    d1 = rule.update(_row(-0.51))
    assert d1.best and not d1.stop  # better, but within min_delta: stale 1
    d2 = rule.update(_row(-0.52))
    assert d2.best and d2.stop
    state = rule.state_dict()
    again = LabelFreeSelection(min_delta=0.05, patience=2)
    again.load_state_dict(state)
    assert again.update(_row(-0.7)).best


def test_selection_needs_the_signals() -> None:
    with pytest.raises(KeyError, match="agreement"):
        LabelFreeSelection().update({"consistency": 0.0})
