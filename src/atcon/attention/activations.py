r"""The activations of :mod:`atcon.attention.guided`: each ``phi`` with its slope ``phi'``, and the
fused autograd functions whose backward gives, per call, the ordinary derivative or the guided
rule (G) ``max(g, 0) * max(phi'(x), 0)``.

Piecewise-linear activations (ReLU, ReLU6, LeakyReLU, hardsigmoid) save a boolean mask, 1 byte per
element; smooth ones (SiLU, GELU, Hardswish, Mish, ELU, ...) save their input. Every backward is
written with differentiable ops, so ``create_graph=True`` gives the second-order terms the
consistency loss needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Activation", "GuidedState", "Piecewise", "Smooth", "apply_activation"]


@dataclass
class GuidedState:
    """Switch read by the activations' backward, and a count of rectifier calls in the forward.

    Attributes:
        guided: False: ordinary derivatives; True: the guided rule (G).
        activation_calls: rectifying activations run inside the mode (gates are not counted).
    """

    guided: bool = False
    activation_calls: int = 0


# --------------------------------------------------------------------------------------------
# The activations: phi (native forward) and phi' written with differentiable ops.


@dataclass(frozen=True)
class Piecewise:
    """``phi'(x) = inside`` where ``mask(x)``, ``outside`` elsewhere: only the mask is saved."""

    forward: Callable[[Tensor, bool], Tensor]  # (x, inplace) -> phi(x)
    mask: Callable[[Tensor], Tensor]
    inside: float = 1.0
    outside: float = 0.0
    gate: bool = False  # a gate keeps its ordinary derivative in guided mode


@dataclass(frozen=True)
class Smooth:
    """``phi`` with a slope that depends on ``x``: the input is saved."""

    forward: Callable[[Tensor], Tensor]
    slope: Callable[[Tensor], Tensor]


Activation = Piecewise | Smooth


def _clamp(x: Tensor, inplace: bool, lo: float, hi: float | None) -> Tensor:
    return x.clamp_(min=lo, max=hi) if inplace else x.clamp(min=lo, max=hi)


def relu(upper: float | None) -> Piecewise:
    mask = (lambda x: x > 0) if upper is None else (lambda x: (x > 0) & (x < upper))
    return Piecewise(partial(_clamp, lo=0.0, hi=upper), mask)


RELU, RELU6 = relu(None), relu(6.0)


def leaky_relu(slope: float) -> Piecewise:
    return Piecewise(lambda x, inplace: F.leaky_relu(x, slope, inplace), lambda x: x > 0, 1.0, slope)


# phi'(x) = 1/6 on (-3, 3), else 0 (PyTorch's convention at the kinks).
HARDSIGMOID = Piecewise(
    lambda x, inplace: F.hardsigmoid(x, inplace), lambda x: (x > -3) & (x < 3), 1 / 6, 0.0, gate=True
)


def _silu_slope(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _gelu_slope(x: Tensor) -> Tensor:
    # d/dx [x Phi(x)] = Phi(x) + x phi(x), Phi/phi the standard normal cdf/pdf.
    cdf = 0.5 * (1 + torch.erf(x * math.sqrt(0.5)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


_K_TANH, _C_TANH = math.sqrt(2 / math.pi), 0.044715


def _gelu_tanh_slope(x: Tensor) -> Tensor:
    # y = x/2 (1 + tanh u), u = k (x + c x^3).
    t = torch.tanh(_K_TANH * (x + _C_TANH * x * x * x))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K_TANH * (1 + 3 * _C_TANH * x * x)


def _hardswish_slope(x: Tensor) -> Tensor:
    # y = x relu6(x + 3) / 6: 0 up to -3, x/3 + 1/2 on (-3, 3), 1 from 3 on (PyTorch's kinks).
    return torch.where(x < 3, x / 3 + 0.5, 1.0).masked_fill(x <= -3, 0.0)


def _mish_slope(x: Tensor) -> Tensor:
    # y = x tanh(softplus x): tanh(sp) + x sech^2(sp) sigmoid(x).
    t = torch.tanh(F.softplus(x))
    return t + x * (1 - t * t) * torch.sigmoid(x)


def _exp_neg(x: Tensor, scale: float) -> Tensor:
    # e^(x/scale) on the negative side only: no overflow (and no 0 * inf in double backward).
    return torch.exp(x.clamp(max=0) / scale)


def elu(alpha: float) -> Smooth:
    return Smooth(lambda x: F.elu(x, alpha), lambda x: torch.where(x > 0, 1.0, alpha * _exp_neg(x, 1.0)))


def celu(alpha: float) -> Smooth:
    return Smooth(lambda x: F.celu(x, alpha), lambda x: torch.where(x > 0, 1.0, _exp_neg(x, alpha)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
SELU = Smooth(torch.selu, lambda x: _SELU_SCALE * torch.where(x > 0, 1.0, _SELU_ALPHA * _exp_neg(x, 1.0)))
SILU = Smooth(F.silu, _silu_slope)
GELU = Smooth(F.gelu, _gelu_slope)
GELU_TANH = Smooth(partial(F.gelu, approximate="tanh"), _gelu_tanh_slope)
HARDSWISH = Smooth(F.hardswish, _hardswish_slope)
MISH = Smooth(F.mish, _mish_slope)


def _quick_gelu_slope(x: Tensor) -> Tensor:
    s = torch.sigmoid(1.702 * x)
    return s + 1.702 * x * s * (1 - s)


# timm's QuickGELU (CLIP) x sigmoid(1.702 x) and HardMish x/2 clamp(x + 2, 0, 2).
QUICK_GELU = Smooth(lambda x: x * torch.sigmoid(1.702 * x), _quick_gelu_slope)
HARD_MISH = Smooth(
    lambda x: 0.5 * x * (x + 2).clamp(min=0, max=2),
    lambda x: torch.where(x > 0, 1.0, x + 1).masked_fill(x < -2, 0.0),
)


# --------------------------------------------------------------------------------------------
# The autograd functions.


class _PiecewiseFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, act: Piecewise, state: GuidedState, inplace: bool
    ) -> Tensor:
        mask = act.mask(x)
        ctx.act, ctx.state = act, state
        ctx.save_for_backward(mask)
        if inplace:
            ctx.mark_dirty(x)
        return act.forward(x, inplace)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        (mask,) = ctx.saved_tensors
        act: Piecewise = ctx.act
        inside, outside = act.inside, act.outside
        if ctx.state.guided and not act.gate:
            grad = grad.clamp(min=0)
            inside, outside = max(inside, 0.0), max(outside, 0.0)
        if outside == 0:
            out = grad * mask  # the ReLU case: no float copy of the mask
            return (out if inside == 1 else out * inside), None, None, None
        return grad * (mask.to(grad.dtype) * (inside - outside) + outside), None, None, None


class _SmoothFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, copy: Tensor | None, act: Smooth, state: GuidedState
    ) -> Tensor:
        # ``copy`` (inplace calls only) is a differentiable clone of x made before x is
        # overwritten: the backward needs the input, and saving an input keeps double backward.
        source = x if copy is None else copy
        ctx.act, ctx.state, ctx.inplace = act, state, copy is not None
        ctx.save_for_backward(source)
        y = act.forward(source)
        if copy is None:
            return y
        ctx.mark_dirty(x)
        return x.copy_(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        (source,) = ctx.saved_tensors
        slope = ctx.act.slope(source)
        if ctx.state.guided:
            grad, slope = grad.clamp(min=0), slope.clamp(min=0)
        out = grad * slope
        return (None, out, None, None) if ctx.inplace else (out, None, None, None)


def apply_activation(act: Activation, state: GuidedState, x: Tensor, inplace: bool = False) -> Tensor:
    if isinstance(act, Piecewise):
        if not act.gate:
            state.activation_calls += 1
        return _PiecewiseFn.apply(x, act, state, inplace)
    state.activation_calls += 1
    return _SmoothFn.apply(x, x.clone() if inplace else None, act, state)
