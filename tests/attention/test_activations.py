"""The guided rule beyond ReLU: every activation, as a module and as a call, against autograd oracles."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import atcon
from atcon.attention import guided_mode, twice_differentiable
from tests.conftest import randomize_bn

Act = Callable[[torch.Tensor], torch.Tensor]

# name -> (the call the network makes, the native function it computes)
ACTIVATIONS: dict[str, tuple[Act, Act]] = {
    "nn.ReLU": (nn.ReLU(), torch.relu),
    "nn.ReLU6": (nn.ReLU6(), F.relu6),
    "nn.LeakyReLU": (nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    "F.leaky_relu_": (lambda t: F.leaky_relu_(t, 0.1), lambda t: F.leaky_relu(t, 0.1)),
    "nn.ELU": (nn.ELU(alpha=0.7), lambda t: F.elu(t, 0.7)),
    "F.elu_inplace": (lambda t: F.elu(t, 1.3, inplace=True), lambda t: F.elu(t, 1.3)),
    "nn.CELU": (nn.CELU(alpha=0.5), lambda t: F.celu(t, 0.5)),
    "nn.SELU": (nn.SELU(), torch.selu),
    "torch.selu_": (torch.selu_, torch.selu),
    "nn.SiLU": (nn.SiLU(), F.silu),
    "nn.SiLU_inplace": (nn.SiLU(inplace=True), F.silu),
    "F.silu": (F.silu, F.silu),
    "nn.GELU": (nn.GELU(), F.gelu),
    "F.gelu": (F.gelu, F.gelu),
    "nn.GELU_tanh": (nn.GELU(approximate="tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "F.gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "nn.Hardswish": (nn.Hardswish(), F.hardswish),
    "F.hardswish_inplace": (lambda t: F.hardswish(t, inplace=True), F.hardswish),
    "nn.Mish": (nn.Mish(), F.mish),
    "F.mish_inplace": (lambda t: F.mish(t, inplace=True), F.mish),
}


class OneActivation(nn.Module):
    """x -> W1 x -> phi -> W2 . -> logits."""

    def __init__(self, act: Act) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(6, 8, generator=g))
        self.w2 = nn.Parameter(torch.randn(3, 6, generator=g))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x.flatten(1) @ self.w1.T) @ self.w2.T


def slope(native: Act, pre: torch.Tensor) -> torch.Tensor:
    """phi'(pre) by autograd of PyTorch's own function (independent of atcon's formulas)."""
    z = pre.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(native(z).sum(), z)
    return d


def guided_reference(model: OneActivation, native: Act, x: torch.Tensor, c: int) -> torch.Tensor:
    """max(g, 0) * max(phi'(x), 0), written out for the two-layer network."""
    pre = x.flatten(1) @ model.w1.T
    up = model.w2[c].expand_as(pre)  # dy_c / d phi-output
    passed = up.clamp(min=0) * slope(native, pre).clamp(min=0)
    return (passed @ model.w1).view_as(x)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_guided_rule_matches_hand_written_reference(name: str) -> None:
    call, native = ACTIVATIONS[name]
    model = OneActivation(call)
    x = torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(1)) * 2
    for c in (0, 2):
        gb = atcon.guided_backprop(model, x, c)
        ref = guided_reference(model, native, x, c)
        assert torch.allclose(gb, ref, atol=1e-5, rtol=1e-4), name
    # Not the plain gradient: negative upstream gradients are blocked.
    xr = x.clone().requires_grad_(True)
    model(xr)[:, 2].sum().backward()
    assert not torch.allclose(gb, xr.grad, atol=1e-4)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_ordinary_mode_is_the_true_gradient_and_values_unchanged(name: str) -> None:
    """guided=False: the activation's exact derivative (Grad-CAM needs it); forward values as native."""
    call, native = ACTIVATIONS[name]
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4
    x[:4] = torch.tensor([0.0, -3.0, 3.0, 6.0], dtype=torch.float64)  # kinks of the piecewise ones
    up = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = x.clone().requires_grad_(True)
    with guided_mode() as state:
        y = call(a * 1.0)  # * 1.0: inplace calls need a non-leaf
    (g,) = torch.autograd.grad(y, a, up)
    b = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(native(b), b, up)
    assert torch.allclose(y, native(x), atol=1e-12)
    assert torch.allclose(g, ref, atol=1e-10), name
    assert state.activation_calls == 1


SMOOTH_AND_PIECEWISE = [
    "nn.ReLU",
    "nn.LeakyReLU",
    "nn.ELU",
    "nn.CELU",
    "nn.SELU",
    "nn.SiLU",
    "nn.GELU",
    "nn.GELU_tanh",
    "nn.Hardswish",
    "nn.Mish",
    "nn.SiLU_inplace",
    "F.mish_inplace",
]


@pytest.mark.parametrize("name", SMOOTH_AND_PIECEWISE)
@pytest.mark.parametrize("guided", [False, True])
def test_backward_is_twice_differentiable(name: str, guided: bool) -> None:
    """gradgradcheck (float64) of each activation's backward, in both modes."""
    call, _ = ACTIVATIONS[name]
    g = torch.Generator().manual_seed(4)
    # Away from the kinks (0, +-3) where the piecewise rules are not differentiable.
    x = torch.randn(12, dtype=torch.float64, generator=g) * 2
    x = x + 0.2 * torch.sign(x)
    x = torch.where((x.abs() - 3).abs() < 0.1, x + 0.3, x).requires_grad_(True)
    up = torch.randn(12, dtype=torch.float64, generator=g).requires_grad_(True)

    def backward(inp: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
        with guided_mode() as state:
            y = call(inp * 1.0)
        state.guided = guided
        (gi,) = torch.autograd.grad(y, inp, grad_out, create_graph=True)
        return gi

    assert torch.autograd.gradcheck(backward, (x, up), eps=1e-6, atol=1e-7)


def test_hardsigmoid_is_a_gate_with_a_differentiable_backward() -> None:
    """Hardsigmoid keeps its ordinary slope in guided mode and can be differentiated twice,
    which PyTorch's own hardsigmoid_backward cannot."""
    x = torch.tensor([-4.0, -1.0, 0.5, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    up = torch.tensor([1.0, -2.0, 3.0, -1.0, 1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        (g,) = torch.autograd.grad(F.hardsigmoid(x * x), x, up, create_graph=True)
        g.sum().backward()
    for call in (nn.Hardsigmoid(), F.hardsigmoid, lambda t: F.hardsigmoid(t, inplace=True)):
        with guided_mode() as state:
            y = call(x * 1.0)
        state.guided = True
        (g,) = torch.autograd.grad(y, x, up, create_graph=True)
        assert g.tolist() == [0.0, -2 / 6, 3 / 6, -1 / 6, 0.0]  # negative gradients pass
        assert state.activation_calls == 0  # a gate, not a rectifier
    with twice_differentiable():
        y = F.hardsigmoid(x * x)
    (g,) = torch.autograd.grad(y, x, up, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    # d/dx [up * hardsigmoid'(x^2) * 2x] = up * 2/6 inside (-3, 3) for x^2.
    assert torch.allclose(gg, torch.tensor([0.0, -4 / 6, 6 / 6, 0.0, 0.0], dtype=torch.float64))


def test_inplace_calls_modify_their_input_like_native() -> None:
    for name in ("nn.SiLU_inplace", "F.elu_inplace", "F.leaky_relu_", "torch.selu_", "F.mish_inplace"):
        call, native = ACTIVATIONS[name]
        x = torch.randn(10, requires_grad=True)
        h = x * 2
        with guided_mode():
            y = call(h)
        assert y is h and torch.allclose(h, native(x.detach() * 2)), name
        (g,) = torch.autograd.grad(y.sum(), x)
        (ref,) = torch.autograd.grad(native(x * 2).sum(), x)
        assert torch.allclose(g, ref, atol=1e-6), name


class SmallNet(nn.Module):
    """conv-bn-phi x2 with a hardsigmoid squeeze-excitation gate, global pool, linear head."""

    def __init__(self, act: Callable[[], nn.Module], width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), act(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), act(),
        )  # fmt: skip
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, width, 1), nn.Hardsigmoid())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(f * self.se(f))


@pytest.mark.parametrize("act", [nn.SiLU, nn.GELU, nn.Hardswish])
def test_loss_gradcheck_float64(act: Callable[[], nn.Module]) -> None:
    """The full loss (through A1, A2 and the guided mask) has the gradient finite differences see."""
    torch.manual_seed(0)
    net = randomize_bn(SmallNet(act, width=3)).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    names = ["features.0.weight", "features.3.weight", "se.1.weight", "head.2.weight"]
    params = dict(net.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def loss_at(*ws: torch.Tensor) -> torch.Tensor:
        with torch.nn.utils.stateless._reparametrize_module(net, dict(zip(names, ws))):
            return atcon.AttentionConsistencyLoss(net, "features")(x)

    # fast_mode: finite differences along random directions (a few loss evaluations, not hundreds).
    assert torch.autograd.gradcheck(loss_at, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_guided_backprop_of_a_cnn_against_a_module_swap_oracle() -> None:
    """A whole SiLU/Hardswish/GELU network: atcon's GB equals the network with each activation
    module swapped for an explicit guided Function (slopes by autograd of the native function)."""

    class GuidedPhi(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp, native):  # type: ignore[no-untyped-def, override]
            ctx.save_for_backward(inp)
            ctx.native = native
            return native(inp)

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
            (inp,) = ctx.saved_tensors
            with torch.enable_grad():
                d = slope(ctx.native, inp)
            return grad.clamp(min=0) * d.clamp(min=0), None

    class Swapped(nn.Module):
        def __init__(self, native: Act) -> None:
            super().__init__()
            self.native = native

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return GuidedPhi.apply(inp, self.native)

    torch.manual_seed(0)
    for act, native in ((nn.SiLU, F.silu), (nn.Hardswish, F.hardswish), (nn.GELU, F.gelu)):
        model = randomize_bn(SmallNet(act)).eval()
        x = torch.randn(3, 3, 8, 8)
        t = torch.tensor([0, 1, 2])
        gb = atcon.guided_backprop(model, x, t)
        ref = copy.deepcopy(model)
        for parent in ref.modules():
            for n, child in parent.named_children():
                if isinstance(child, act):
                    setattr(parent, n, Swapped(native))
        xr = x.clone().requires_grad_(True)
        ref(xr).gather(1, t[:, None]).sum().backward()
        assert torch.allclose(gb, xr.grad, atol=1e-6, rtol=1e-4), act


def test_timm_activation_modules_are_patched_and_restored() -> None:
    timm_act = pytest.importorskip("timm.layers.activations")
    for module, native in (
        (timm_act.QuickGELU(), lambda t: t * torch.sigmoid(1.702 * t)),
        (timm_act.HardMish(), lambda t: 0.5 * t * (t + 2).clamp(min=0, max=2)),
        (timm_act.Swish(), F.silu),
        (timm_act.HardSwish(), F.hardswish),
    ):
        model = OneActivation(module)
        x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(5)) * 2
        gb = atcon.guided_backprop(model, x, 1)
        assert torch.allclose(gb, guided_reference(model, native, x, 1), atol=1e-5), type(module)
        assert "forward" not in vars(module)  # the patch is gone
    # A network whose only non-linearity is timm's QuickGELU is not refused.
    assert atcon.guided_backprop(OneActivation(timm_act.QuickGELU()), x).abs().sum() > 0
