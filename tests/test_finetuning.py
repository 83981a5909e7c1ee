"""The public guarded loss and the label-free selector, in a loop of one's own."""

from __future__ import annotations

import copy

import pytest
import torch

import atcon
from atcon.train.labelfree import LabelFreeSelection
from atcon.train.selection import replay
from tests.conftest import TinyCNN, randomize_bn


def _model() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN(classes=4)).eval()


def test_at_the_start_the_guard_is_zero_and_the_loss_is_algorithm_1() -> None:
    model = _model().train()  # the loss runs in eval mode and restores the flags
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    loss_fn = atcon.GuardedConsistencyLoss(model, task="multiclass", target_layer="features")
    out = loss_fn(x)
    assert float(out.anchor) == pytest.approx(0.0, abs=1e-7) and float(out.agreement) == 1.0
    plain = atcon.AttentionConsistencyLoss(model, "features")
    with atcon.train.eval_mode(model):
        want = plain(x)
    assert float(out.loss.detach()) == pytest.approx(float(want.detach()), abs=1e-6)
    assert float(out.consistency) == pytest.approx(float(want.detach()), abs=1e-6)
    params = list(model.parameters())
    g_guarded = torch.autograd.grad(out.loss, params, allow_unused=True)
    with atcon.train.eval_mode(model):
        g_plain = torch.autograd.grad(plain(x), params, allow_unused=True)
    for p, a, b in zip(params, g_guarded, g_plain):
        # The anchor reaches the output bias too, with a zero gradient at the start.
        a, b = (torch.zeros_like(p) if g is None else g for g in (a, b))
        assert torch.allclose(a, b, atol=1e-6)
    assert model.training and all(p.grad is None for p in params)
    assert loss_fn.state_dict() == {}  # the models are referenced, not registered


def test_the_anchor_grows_as_the_network_leaves_the_start() -> None:
    model = _model()
    loss_fn = atcon.GuardedConsistencyLoss(
        model, anchor_weight=2.0, task="multilabel", target_layer="features"
    )
    with torch.no_grad():
        model.head[1].weight.add_(torch.randn_like(model.head[1].weight))
    x = torch.randn(6, 3, 12, 12)
    out = loss_fn(x)
    assert float(out.anchor) > 0
    assert float(out.loss.detach()) == pytest.approx(
        float(out.consistency) + 2.0 * float(out.anchor), rel=1e-5
    )
    with pytest.raises(ValueError, match="task must be"):
        atcon.GuardedConsistencyLoss(model, task="binary")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown option"):
        atcon.GuardedConsistencyLoss(model, colour="red")


def test_signals_read_no_label_and_the_selector_is_the_trainers_rule() -> None:
    model = _model()
    loss_fn = atcon.GuardedConsistencyLoss(model, target_layer="features")
    held = [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    start = loss_fn.signals(held)
    assert start["agreement"] == 1.0 and start["kl_to_start"] == pytest.approx(0.0, abs=1e-6)
    assert loss_fn.signals([(x, "labels are never read") for x in held]) == start
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head[1].bias.copy_(-other.head[1].bias)  # the start predicts class 0 for every item
    moved = atcon.GuardedConsistencyLoss(other, reference=model, target_layer="features").signals(held)
    assert moved["agreement"] < 1.0
    rows = [
        start,
        {**start, "consistency": start["consistency"] - 0.1},
        moved,
        {**start, "consistency": start["consistency"] - 0.05},
    ]
    selector = atcon.LabelFreeSelector(patience=2)
    decisions = [selector.update(r) for r in rows]
    want = replay(LabelFreeSelection(patience=2), [{f"lf_{k}": v for k, v in r.items()} for r in rows])
    assert [(d.best, d.stop) for d in decisions] == [(v.best, v.stop) for v in want]
    assert decisions[0].best and decisions[1].best and not decisions[2].admissible
    assert selector.best_index == 1
