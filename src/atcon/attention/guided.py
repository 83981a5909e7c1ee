r"""Guided Backpropagation through rectifying activations (Springenberg et al. 2015; paper Eq. 5).

**The guided rule.** An activation ``y = phi(x)`` applied elementwise backpropagates
``dL/dx = g * phi'(x)`` with ``g = dL/dy``. Guided Backprop replaces this by

.. math::

    R_\phi(g, x) = \max(g, 0) \cdot \max(\phi'(x), 0)                                  \qquad (G)

only positive gradients (the "deconvnet" half of the rule) pass, through the non-negative part of
the local slope (the "backprop" half). For ReLU, ``phi'(x) = [x > 0]`` and (G) is exactly
Springenberg et al.'s ``max(g, 0) * [x > 0]``; for ReLU6, ``phi'(x) = [0 < x < 6]``. The smooth
rectifiers have a fractional slope near 0 and a negative one on part of the negative half-line
(SiLU below x = -1.28, GELU below -0.75, Mish below -1.19, Hardswish below -1.5): (G) closes those
positions as the ReLU closes ``x < 0``, and weights the rest by their slope (a LeakyReLU passes
``slope * max(g, 0)`` where ``x < 0``; an ELU passes ``alpha * e^x * max(g, 0)``).

Why (G) rather than ``max(g, 0) * [x > 0]``: it reduces to the published rule on ReLU and ReLU6, so
ReLU networks keep their maps; it uses the activation the network actually computes instead of a
ReLU it does not (``[x > 0]`` would pass the full gradient where the SiLU slope is 0.5); and for a
smooth ``phi`` the map is a smooth function of ``x``, so the second-order terms the consistency loss
differentiates through (via ``phi''``) exist. Every factor is non-negative, as in the original:
the map keeps the input evidence that raises the class score along paths of positive slopes.

**Gates are not rectifiers.** Sigmoid, tanh, hardsigmoid and softmax weight one tensor by a
function of another (squeeze-excitation, attention); like pooling, normalisation and linear layers
they keep their ordinary derivative, so a ReLU network with sigmoid SE gates has the same Guided
Backprop as before. Hardsigmoid still runs through atcon's own function, because PyTorch's
``hardsigmoid_backward`` cannot be differentiated twice.

**No rectifier, no Guided Backprop.** In a network whose forward calls none of the activations
below, Guided Backprop would be the plain input gradient; :func:`require_activations` refuses it
rather than return a plain gradient under another name.

Covered, as ``nn`` modules and as functional calls (``F.*``, ``torch.*``, ``Tensor.*`` where they
exist, inplace or not): ReLU, ReLU6 (``F.hardtanh(x, 0, u)``), LeakyReLU, ELU, CELU, SELU, SiLU /
Swish, GELU (exact and tanh), Hardswish, Mish, and the hardsigmoid gate. timm's own activation
modules that do not call these (``QuickGELU``, ``HardMish`` and the ``*Me`` memory-efficient
variants, and its fallback ``Swish``/``Mish``/``HardSwish``/``HardSigmoid``) are patched for the
duration of the forward when the model is passed to :func:`guided_mode`. Not covered (they keep
their ordinary gradient): PReLU, RReLU, softplus, and activations written out of elementary ops in
user code.

**One forward for both maps.** Inside :func:`guided_mode` every covered call runs through a fused
autograd function whose backward reads a per-call switch: ``state.guided = False`` gives the
ordinary derivative (Grad-CAM), ``True`` the rule (G). Piecewise-linear activations (ReLU, ReLU6,
LeakyReLU, hardsigmoid) save a boolean mask, 1 byte per element; smooth ones save their input, as
PyTorch itself does. Every backward is written with differentiable ops (``create_graph=True`` gives
the second-order terms the loss needs).

A torch function mode is used rather than module hooks because many networks (torchvision's
``inception_v3``, DenseNet, timm's ``nfnet``) call ``F.relu`` & co. directly, which module hooks
never see.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

__all__ = [
    "GuidedState",
    "guided_mode",
    "guided_relu_mode",
    "require_activations",
    "twice_differentiable",
]


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
class _Piecewise:
    """``phi'(x) = inside`` where ``mask(x)``, ``outside`` elsewhere: only the mask is saved."""

    forward: Callable[[Tensor, bool], Tensor]  # (x, inplace) -> phi(x)
    mask: Callable[[Tensor], Tensor]
    inside: float = 1.0
    outside: float = 0.0
    gate: bool = False  # a gate keeps its ordinary derivative in guided mode


@dataclass(frozen=True)
class _Smooth:
    """``phi`` with a slope that depends on ``x``: the input is saved."""

    forward: Callable[[Tensor], Tensor]
    slope: Callable[[Tensor], Tensor]


_Activation = _Piecewise | _Smooth


def _clamp(x: Tensor, inplace: bool, lo: float, hi: float | None) -> Tensor:
    return x.clamp_(min=lo, max=hi) if inplace else x.clamp(min=lo, max=hi)


def _relu(upper: float | None) -> _Piecewise:
    mask = (lambda x: x > 0) if upper is None else (lambda x: (x > 0) & (x < upper))
    return _Piecewise(partial(_clamp, lo=0.0, hi=upper), mask)


_RELU, _RELU6 = _relu(None), _relu(6.0)


def _leaky_relu(slope: float) -> _Piecewise:
    return _Piecewise(lambda x, inplace: F.leaky_relu(x, slope, inplace), lambda x: x > 0, 1.0, slope)


# phi'(x) = 1/6 on (-3, 3), else 0 (PyTorch's convention at the kinks).
_HARDSIGMOID = _Piecewise(
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


def _elu(alpha: float) -> _Smooth:
    return _Smooth(lambda x: F.elu(x, alpha), lambda x: torch.where(x > 0, 1.0, alpha * _exp_neg(x, 1.0)))


def _celu(alpha: float) -> _Smooth:
    return _Smooth(lambda x: F.celu(x, alpha), lambda x: torch.where(x > 0, 1.0, _exp_neg(x, alpha)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_SELU = _Smooth(torch.selu, lambda x: _SELU_SCALE * torch.where(x > 0, 1.0, _SELU_ALPHA * _exp_neg(x, 1.0)))
_SILU = _Smooth(F.silu, _silu_slope)
_GELU = _Smooth(F.gelu, _gelu_slope)
_GELU_TANH = _Smooth(partial(F.gelu, approximate="tanh"), _gelu_tanh_slope)
_HARDSWISH = _Smooth(F.hardswish, _hardswish_slope)
_MISH = _Smooth(F.mish, _mish_slope)


def _quick_gelu_slope(x: Tensor) -> Tensor:
    s = torch.sigmoid(1.702 * x)
    return s + 1.702 * x * s * (1 - s)


# timm's QuickGELU (CLIP) x sigmoid(1.702 x) and HardMish x/2 clamp(x + 2, 0, 2).
_QUICK_GELU = _Smooth(lambda x: x * torch.sigmoid(1.702 * x), _quick_gelu_slope)
_HARD_MISH = _Smooth(
    lambda x: 0.5 * x * (x + 2).clamp(min=0, max=2),
    lambda x: torch.where(x > 0, 1.0, x + 1).masked_fill(x < -2, 0.0),
)


# --------------------------------------------------------------------------------------------
# The autograd functions.


class _PiecewiseFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, act: _Piecewise, state: GuidedState, inplace: bool
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
        act: _Piecewise = ctx.act
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
        ctx: Any, x: Tensor, copy: Tensor | None, act: _Smooth, state: GuidedState
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


def _apply(act: _Activation, state: GuidedState, x: Tensor, inplace: bool = False) -> Tensor:
    if isinstance(act, _Piecewise):
        if not act.gate:
            state.activation_calls += 1
        return _PiecewiseFn.apply(x, act, state, inplace)
    state.activation_calls += 1
    return _SmoothFn.apply(x, x.clone() if inplace else None, act, state)


# --------------------------------------------------------------------------------------------
# Which calls are activations: func -> parser(args, kwargs) -> (activation, inplace) or None.

_Parsed = tuple[_Activation, bool] | None
_Parser = Callable[[tuple[Any, ...], dict[str, Any]], _Parsed]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


def _fixed(act: _Activation, inplace_pos: int | None = 1, always_inplace: bool = False) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        if always_inplace:
            return act, True
        return act, inplace_pos is not None and bool(_arg(a, k, inplace_pos, "inplace", False))

    return parse


def _hardtanh(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
    lo, hi = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
    if lo != 0:
        return None  # a true hardtanh (-1, 1) is a squashing function, not a rectifier
    return _relu(float(hi)), bool(_arg(a, k, 3, "inplace", False))


def _leaky(inplace_default: bool) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        slope = float(_arg(a, k, 1, "negative_slope", 0.01))
        return _leaky_relu(slope), inplace_default or bool(_arg(a, k, 2, "inplace", False))

    return parse


def _with_alpha(make: Callable[[float], _Smooth], inplace_default: bool) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        alpha = float(_arg(a, k, 1, "alpha", 1.0))
        return make(alpha), inplace_default or bool(_arg(a, k, 2, "inplace", False))

    return parse


def _gelu(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
    approximate = _arg(a, k, 1, "approximate", "none")
    return (_GELU_TANH if approximate == "tanh" else _GELU), False


def _optional(name: str) -> list[Any]:
    # Some inplace variants exist only in some torch releases.
    return [f for f in (getattr(F, name, None), getattr(torch, name, None)) if f is not None]


_RECTIFIERS: dict[Any, _Parser] = {
    F.relu: _fixed(_RELU),
    torch.relu: _fixed(_RELU, None),
    Tensor.relu: _fixed(_RELU, None),
    torch.relu_: _fixed(_RELU, always_inplace=True),
    Tensor.relu_: _fixed(_RELU, always_inplace=True),
    F.relu6: _fixed(_RELU6),
    F.hardtanh: _hardtanh,  # nn.ReLU6 calls F.hardtanh(x, 0, 6)
    F.leaky_relu: _leaky(False),
    F.elu: _with_alpha(_elu, False),
    F.celu: _with_alpha(_celu, False),
    torch.celu: _with_alpha(_celu, False),
    F.selu: _fixed(_SELU),
    torch.selu: _fixed(_SELU, None),
    F.silu: _fixed(_SILU),
    F.gelu: _gelu,
    F.hardswish: _fixed(_HARDSWISH),
    F.mish: _fixed(_MISH),
}
for _f in _optional("leaky_relu_"):
    _RECTIFIERS[_f] = _leaky(True)
for _f in _optional("elu_"):
    _RECTIFIERS[_f] = _with_alpha(_elu, True)
for _f in _optional("celu_"):
    _RECTIFIERS[_f] = _with_alpha(_celu, True)
for _f in _optional("selu_"):
    _RECTIFIERS[_f] = _fixed(_SELU, always_inplace=True)

# Activations whose PyTorch backward has no derivative of its own: always replaced when a
# backward will be differentiated (see :func:`twice_differentiable`).
_OWN_BACKWARD: dict[Any, _Parser] = {F.hardsigmoid: _fixed(_HARDSIGMOID)}

_ALL: dict[Any, _Parser] = {**_RECTIFIERS, **_OWN_BACKWARD}


class _ActivationMode(TorchFunctionMode):
    def __init__(self, state: GuidedState, table: dict[Any, _Parser]) -> None:
        super().__init__()
        self.state = state
        self.table = table

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        parse = self.table.get(func)
        parsed = parse(args, kwargs) if parse is not None and torch.is_grad_enabled() else None
        if parsed is None:
            return func(*args, **kwargs)
        act, inplace = parsed
        return _apply(act, self.state, args[0], inplace)


# timm's own activation modules that compute phi from elementary ops or a custom autograd
# function, by (module, class name); looked up only when timm is already imported.
_TIMM_MODULES: dict[tuple[str, str], _Activation] = {
    ("timm.layers.activations", "QuickGELU"): _QUICK_GELU,
    ("timm.layers.activations", "HardMish"): _HARD_MISH,
    ("timm.layers.activations", "Swish"): _SILU,
    ("timm.layers.activations", "Mish"): _MISH,
    ("timm.layers.activations", "HardSwish"): _HARDSWISH,
    ("timm.layers.activations", "HardSigmoid"): _HARDSIGMOID,
    ("timm.layers.activations_me", "SwishMe"): _SILU,
    ("timm.layers.activations_me", "MishMe"): _MISH,
    ("timm.layers.activations_me", "HardSwishMe"): _HARDSWISH,
    ("timm.layers.activations_me", "HardSigmoidMe"): _HARDSIGMOID,
    ("timm.layers.activations_me", "HardMishMe"): _HARD_MISH,
}


def _timm_activation_types() -> dict[type, _Activation]:
    found: dict[type, _Activation] = {}
    for (module, name), act in _TIMM_MODULES.items():
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found[cls] = act
    return found


@contextlib.contextmanager
def _patched_modules(model: nn.Module | None, state: GuidedState) -> Iterator[None]:
    """Route timm's own activation modules through the guided functions; restore on exit."""
    types = _timm_activation_types() if model is not None else {}
    patched: list[tuple[nn.Module, Any]] = []
    try:
        for m in model.modules() if types and model is not None else ():
            act = types.get(type(m))
            if act is None:
                continue
            patched.append((m, m.__dict__.get("forward")))
            inplace = bool(getattr(m, "inplace", False))
            m.forward = partial(_apply, act, state, inplace=inplace)  # type: ignore[method-assign]
        yield
    finally:
        for m, previous in reversed(patched):
            if previous is None:
                del m.forward
            else:
                m.forward = previous  # type: ignore[method-assign]


@contextlib.contextmanager
def guided_mode(model: nn.Module | None = None) -> Iterator[GuidedState]:
    """Route every activation of forward passes inside the block through the switchable rule.

    Args:
        model: the network about to run; given, its timm-specific activation modules are patched
            for the block too (see the module docstring). Functional calls are covered either way.

    Yields:
        The :class:`GuidedState`; set ``state.guided = True`` before an ``autograd.grad`` call to
        get the guided rule (G), ``False`` for ordinary gradients.
    """
    state = GuidedState()
    with _patched_modules(model, state), _ActivationMode(state, _ALL):
        yield state


guided_relu_mode = guided_mode  # the name from the ReLU-only releases


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Forward passes inside the block can be differentiated twice (``create_graph=True``).

    Two PyTorch kernels have a backward without a derivative of its own: the fused attention of
    ``F.scaled_dot_product_attention`` (flash / memory-efficient / cuDNN, on CPU and GPU) and
    ``hardsigmoid``. Inside the block attention runs on the math backend (the same result,
    built from differentiable ops) and hardsigmoid through atcon's function; the user's SDPA
    backend choice is restored on exit, also on error.

    Note that the SDPA backend flags are process-wide in PyTorch: another thread's attention
    runs on the math backend too while the block is open.
    """
    with sdpa_kernel(SDPBackend.MATH), _ActivationMode(GuidedState(), _OWN_BACKWARD):
        yield


def require_activations(state: GuidedState) -> None:
    """Raise if the forward pass called no rectifying activation (see the module docstring)."""
    if state.activation_calls == 0:
        raise ValueError(
            "Guided Backpropagation needs rectifying activations (ReLU, ReLU6, LeakyReLU, ELU, "
            "CELU, SELU, SiLU, GELU, Hardswish, Mish), but the forward pass called none: without "
            "one Guided Backprop is the plain input gradient. Compiled / TorchScript models and "
            "activations written out of elementary ops are not seen either; use the eager model."
        )
