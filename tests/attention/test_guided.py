"""The guided ReLU rule on hand-checkable toy models, for every way of calling a ReLU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import atcon
from atcon.attention import guided_relu_mode


class OneReLU(nn.Module):
    """x -> W1 x -> relu -> W2 . -> logits, with the ReLU applied by a chosen call."""

    def __init__(self, relu: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.w1 = nn.Parameter(
            torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.5, 2.0, -1.0, 1.0], [-1.0, 0.0, 1.0, 1.0]])
        )
        self.w2 = nn.Parameter(torch.tensor([[1.0, -2.0, 3.0], [-1.0, 1.0, 1.0]]))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1) @ self.w1.T
        return self.relu(h) @ self.w2.T


def _guided_reference(model: OneReLU, x: torch.Tensor, c: int) -> torch.Tensor:
    pre = x.flatten(1) @ model.w1.T
    up = model.w2[c].expand_as(pre)  # dy_c / d relu-output
    passed = up * (up > 0) * (pre > 0)  # only positive gradients where the input was positive
    return (passed @ model.w1).view_as(x)


RELU_CALLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "module": nn.ReLU(),
    "module_inplace": nn.ReLU(inplace=True),
    "F.relu": F.relu,
    "F.relu_inplace": lambda t: F.relu(t, inplace=True),
    "torch.relu": torch.relu,
    "Tensor.relu": lambda t: t.relu(),
    "Tensor.relu_": lambda t: t.relu_(),
    "torch.relu_": torch.relu_,
}


@pytest.mark.parametrize("call", list(RELU_CALLS))
def test_guided_rule_every_relu_call(call: str) -> None:
    model = OneReLU(RELU_CALLS[call])
    x = torch.tensor([[[[1.0, 0.5], [-0.5, 2.0]]], [[[-1.0, 1.0], [0.3, -0.2]]]])
    for c in (0, 1):
        gb = atcon.guided_backprop(model, x, c)
        expected = _guided_reference(model, x, c)
        assert torch.allclose(gb, expected, atol=1e-6), call
    # Not a plain gradient: the negative w2 entries are blocked.
    xr = x.clone().requires_grad_(True)
    model(xr)[:, 0].sum().backward()
    assert not torch.allclose(gb, xr.grad)


def test_relu_in_classifier_head_gradcam_plain_gb_guided() -> None:
    """Grad-CAM uses ordinary gradients through head ReLUs; GB applies the guided rule everywhere."""
    from tests.conftest import GuidedReLUOracle, TinyCNN, randomize_bn

    torch.manual_seed(3)
    model = randomize_bn(TinyCNN(head_relu=True)).eval()
    x = torch.randn(2, 3, 8, 8)
    cam, gb, t = atcon.gradcam_and_guided_backprop(model, x, "features")
    feats = model.features(x).detach().requires_grad_(True)
    logits = model.head(model.pool(feats))
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), feats)
    assert torch.allclose(cam, (g.mean((2, 3), keepdim=True) * feats).sum(1), atol=1e-6)

    # Reference guided backprop: a model copy whose ReLU modules apply the rule by hand.
    class GuidedReLU(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return GuidedReLUOracle.apply(inp)

    import copy

    ref = copy.deepcopy(model)
    for parent in ref.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, GuidedReLU())
    xr = x.clone().requires_grad_(True)
    ref(xr).gather(1, t[:, None]).sum().backward()
    assert torch.allclose(gb, xr.grad, atol=1e-7)


def test_relu6_guided_rule() -> None:
    x = torch.tensor([-1.0, 0.5, 3.0, 7.0], requires_grad=True)
    for relu6 in (nn.ReLU6(), lambda t: F.relu6(t)):
        with guided_relu_mode() as state:
            y = relu6(x)
        state.guided = True
        (g,) = torch.autograd.grad(y, x, torch.tensor([1.0, 1.0, -1.0, 1.0]))
        assert y.tolist() == [0.0, 0.5, 3.0, 6.0]
        assert g.tolist() == [0.0, 1.0, 0.0, 0.0]
        assert state.activation_calls == 1


def test_mode_switch_and_double_backward() -> None:
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    with guided_relu_mode() as state:
        y = torch.relu(x * w)
    up = torch.tensor([5.0, -2.0, 1.0])
    (plain,) = torch.autograd.grad(y, x, up, retain_graph=True)
    state.guided = True
    (guided,) = torch.autograd.grad(y, x, up, create_graph=True)
    assert plain.tolist() == [0.0, -2.0, 1.0]
    assert guided.tolist() == [0.0, 0.0, 1.0]
    # d(guided)/dw is defined and finite (the input gradient depends on w through x * w).
    (gw,) = torch.autograd.grad(guided.sum(), w)
    assert torch.isfinite(gw).all()


def test_hardtanh_other_than_relu6_is_left_alone() -> None:
    x = torch.tensor([-2.0, 0.5], requires_grad=True)
    with guided_relu_mode() as state:
        y = F.hardtanh(x)
    assert state.activation_calls == 0 and y.tolist() == [-1.0, 0.5]
