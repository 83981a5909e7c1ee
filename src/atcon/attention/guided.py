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
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from atcon.attention import activations as A
from atcon.attention.activations import GuidedState

__all__ = [
    "GuidedState",
    "guided_mode",
    "guided_relu_mode",
    "require_activations",
    "twice_differentiable",
]


# --------------------------------------------------------------------------------------------
# Which calls are activations: func -> parser(args, kwargs) -> (activation, inplace) or None.

_Parsed = tuple[A.Activation, bool] | None
_Parser = Callable[[tuple[Any, ...], dict[str, Any]], _Parsed]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


def _fixed(act: A.Activation, inplace_pos: int | None = 1, always_inplace: bool = False) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        if always_inplace:
            return act, True
        return act, inplace_pos is not None and bool(_arg(a, k, inplace_pos, "inplace", False))

    return parse


def _hardtanh(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
    lo, hi = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
    if lo != 0:
        return None  # a true hardtanh (-1, 1) is a squashing function, not a rectifier
    return A.relu(float(hi)), bool(_arg(a, k, 3, "inplace", False))


def _leaky(inplace_default: bool) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        slope = float(_arg(a, k, 1, "negative_slope", 0.01))
        return A.leaky_relu(slope), inplace_default or bool(_arg(a, k, 2, "inplace", False))

    return parse


def _with_alpha(make: Callable[[float], A.Smooth], inplace_default: bool) -> _Parser:
    def parse(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
        alpha = float(_arg(a, k, 1, "alpha", 1.0))
        return make(alpha), inplace_default or bool(_arg(a, k, 2, "inplace", False))

    return parse


def _gelu(a: tuple[Any, ...], k: dict[str, Any]) -> _Parsed:
    approximate = _arg(a, k, 1, "approximate", "none")
    return (A.GELU_TANH if approximate == "tanh" else A.GELU), False


def _optional(name: str) -> list[Any]:
    # Some inplace variants exist only in some torch releases.
    return [f for f in (getattr(F, name, None), getattr(torch, name, None)) if f is not None]


_RECTIFIERS: dict[Any, _Parser] = {
    F.relu: _fixed(A.RELU),
    torch.relu: _fixed(A.RELU, None),
    Tensor.relu: _fixed(A.RELU, None),
    torch.relu_: _fixed(A.RELU, always_inplace=True),
    Tensor.relu_: _fixed(A.RELU, always_inplace=True),
    F.relu6: _fixed(A.RELU6),
    F.hardtanh: _hardtanh,  # nn.ReLU6 calls F.hardtanh(x, 0, 6)
    F.leaky_relu: _leaky(False),
    F.elu: _with_alpha(A.elu, False),
    F.celu: _with_alpha(A.celu, False),
    torch.celu: _with_alpha(A.celu, False),
    F.selu: _fixed(A.SELU),
    torch.selu: _fixed(A.SELU, None),
    F.silu: _fixed(A.SILU),
    F.gelu: _gelu,
    F.hardswish: _fixed(A.HARDSWISH),
    F.mish: _fixed(A.MISH),
}
for _f in _optional("leaky_relu_"):
    _RECTIFIERS[_f] = _leaky(True)
for _f in _optional("elu_"):
    _RECTIFIERS[_f] = _with_alpha(A.elu, True)
for _f in _optional("celu_"):
    _RECTIFIERS[_f] = _with_alpha(A.celu, True)
for _f in _optional("selu_"):
    _RECTIFIERS[_f] = _fixed(A.SELU, always_inplace=True)

# Activations whose PyTorch backward has no derivative of its own: always replaced when a
# backward will be differentiated (see :func:`twice_differentiable`).
_OWN_BACKWARD: dict[Any, _Parser] = {F.hardsigmoid: _fixed(A.HARDSIGMOID)}

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
        return A.apply_activation(act, self.state, args[0], inplace)


# timm's own activation modules that compute phi from elementary ops or a custom autograd
# function, by (module, class name); looked up only when timm is already imported.
_TIMM_MODULES: dict[tuple[str, str], A.Activation] = {
    ("timm.layers.activations", "QuickGELU"): A.QUICK_GELU,
    ("timm.layers.activations", "HardMish"): A.HARD_MISH,
    ("timm.layers.activations", "Swish"): A.SILU,
    ("timm.layers.activations", "Mish"): A.MISH,
    ("timm.layers.activations", "HardSwish"): A.HARDSWISH,
    ("timm.layers.activations", "HardSigmoid"): A.HARDSIGMOID,
    ("timm.layers.activations_me", "SwishMe"): A.SILU,
    ("timm.layers.activations_me", "MishMe"): A.MISH,
    ("timm.layers.activations_me", "HardSwishMe"): A.HARDSWISH,
    ("timm.layers.activations_me", "HardSigmoidMe"): A.HARDSIGMOID,
    ("timm.layers.activations_me", "HardMishMe"): A.HARD_MISH,
}


def _timm_activation_types() -> dict[type, A.Activation]:
    found: dict[type, A.Activation] = {}
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
            m.forward = partial(A.apply_activation, act, state, inplace=inplace)  # type: ignore[method-assign]
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
