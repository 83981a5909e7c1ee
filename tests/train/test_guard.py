"""Collapse guards: prediction anchor, parameter anchor (plain and Fisher), top-K blocks."""

from __future__ import annotations

import copy

import pytest
import torch

from atcon.models import SmallResNet
from atcon.train.guard import ParameterAnchor, fisher_diagonal, prediction_anchor, trainable_top_blocks
from tests.conftest import TinyCNN, randomize_bn


def _naive_bernoulli_kl(z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    p, p0 = torch.sigmoid(z.double()), torch.sigmoid(z0.double())
    kl = p0 * (p0 / p).log() + (1 - p0) * ((1 - p0) / (1 - p)).log()
    return kl.sum(1).mean()


def test_prediction_anchor_matches_the_kl_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    z, z0 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert torch.allclose(
        prediction_anchor(z, z0, "multilabel").double(), _naive_bernoulli_kl(z, z0), atol=1e-5
    )
    p0, p = z0.softmax(1).double(), z.softmax(1).double()
    naive = (p0 * (p0 / p).log()).sum(1).mean()
    assert torch.allclose(prediction_anchor(z, z0, "multiclass").double(), naive, atol=1e-5)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_prediction_anchor_is_zero_with_zero_gradient_at_the_start(task: str) -> None:
    z0 = torch.randn(3, 5)
    z = z0.clone().requires_grad_(True)
    value = prediction_anchor(z, z0, task)
    (grad,) = torch.autograd.grad(value, z)
    assert abs(float(value.detach())) < 1e-6
    assert grad.abs().max() < 1e-6
    moved = prediction_anchor(z0 + torch.randn(3, 5), z0, task)
    assert float(moved) > 1e-3


def test_prediction_anchor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="task"):
        prediction_anchor(torch.zeros(2, 3), torch.zeros(2, 3), "regression")
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        prediction_anchor(torch.zeros(2, 3), torch.zeros(2, 4), "multilabel")


def test_parameter_anchor_plain_and_weighted() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    anchor = ParameterAnchor(copy.deepcopy(model).requires_grad_(False))
    assert float(anchor(model).detach()) == 0.0
    start = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    naive = sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters())
    assert torch.allclose(anchor(model), naive)
    weights = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    w_anchor = ParameterAnchor(copy.deepcopy(model), weights=weights)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    naive_w = sum((weights[n] * 0.05**2 * torch.ones_like(p)).sum() for n, p in model.named_parameters())
    assert torch.allclose(w_anchor(model), naive_w, rtol=1e-3)
    # Gradients reach the parameters.
    loss = anchor(model)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_parameter_anchor_skips_frozen_parameters() -> None:
    model = TinyCNN()
    reference = copy.deepcopy(model)
    model.head.requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    anchor = ParameterAnchor(reference)
    features = sum(p.numel() for p in model.features.parameters())
    assert float(anchor(model).detach()) == pytest.approx(features, rel=1e-5)  # head frozen: not counted
    named = ParameterAnchor(reference, names=["features.0.weight"])
    assert float(named(model).detach()) == pytest.approx(model.features[0].weight.numel(), rel=1e-5)
    with pytest.raises(ValueError, match="lack"):
        ParameterAnchor(reference, weights={"features.0.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="no parameter"):
        ParameterAnchor(reference, names=["nope.weight"])
    # Restoring the reference's state restores the anchor's start.
    reference.load_state_dict(model.state_dict())
    assert float(anchor(model).detach()) == 0.0


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_fisher_diagonal_equals_a_naive_backward_estimate(task: str) -> None:
    torch.manual_seed(1)
    model = randomize_bn(TinyCNN(classes=4)).train()
    batches = [torch.randn(3, 3, 8, 8) for _ in range(3)]
    fisher = fisher_diagonal(model, batches, task)
    assert model.training  # left as found
    # Naive: .backward() on a copy in eval mode, squared .grad averaged over batches.
    ref = copy.deepcopy(model).eval()
    sums = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for x in batches:
        ref.zero_grad()
        z = ref(x)
        if task == "multiclass":
            nll = torch.nn.functional.cross_entropy(z, z.argmax(1))
        else:
            nll = torch.nn.functional.binary_cross_entropy_with_logits(z, (z > 0).float())
        nll.backward()
        for n, p in ref.named_parameters():
            sums[n] += p.grad**2
    total = sum(s.sum() for s in sums.values())
    count = sum(s.numel() for s in sums.values())
    for n, s in sums.items():
        assert torch.allclose(fisher[n], s * count / total, rtol=1e-4, atol=1e-8), n
    mean = sum(f.sum() for f in fisher.values()) / count
    assert abs(float(mean) - 1.0) < 1e-5
    assert all(p.grad is None for p in model.parameters())  # param.grad untouched


def test_trainable_top_blocks_freezes_the_rest() -> None:
    model = SmallResNet(3)
    kept = trainable_top_blocks(model, 2)
    assert kept == ["layer4", "fc"]
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("layer4.", "fc.")), name
    with pytest.raises(ValueError, match="between 1 and"):
        trainable_top_blocks(SmallResNet(3), 99)


def test_guard_penalty_combines_its_terms() -> None:
    from atcon.train.guard import Guard

    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(classes=3)).eval()
    reference = copy.deepcopy(model).requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.head[1].weight.add_(0.5)
    logits = model(x)
    guard = Guard(
        reference,
        "multiclass",
        anchor_weight=2.0,
        param_anchor=ParameterAnchor(reference),
        param_anchor_weight=3.0,
    )
    expected = 2.0 * prediction_anchor(logits, reference(x), "multiclass") + 3.0 * ParameterAnchor(reference)(
        model
    )
    assert torch.allclose(guard.penalty(model, x, logits), expected)
    assert float(Guard(reference, "multiclass").penalty(model, x, logits)) == 0.0
