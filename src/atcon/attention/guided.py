"""Guided-Backpropagation ReLUs (Springenberg et al. 2015; paper Eq. 5).

Inside :func:`guided_relu_mode` every ReLU call -- ``nn.ReLU`` modules (inplace or not, reused or
not), ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their inplace forms, plus the clipped
variants ``F.relu6`` / ``nn.ReLU6`` -- is routed through one fused autograd function. Its forward
is an ordinary ReLU and saves a boolean mask (1 byte per element instead of the input). Its
backward reads a per-call switch:

* ``guided=False``: the ordinary ReLU gradient, ``g * [x > 0]`` (Grad-CAM needs this);
* ``guided=True``: the guided rule, ``max(g, 0) * [x > 0]``: only positive gradients, only
  where the forward input was positive.

One forward pass therefore serves both Grad-CAM and Guided Backprop. The backward is written
with differentiable ops, so ``create_graph=True`` gives the second-order terms the consistency
loss needs.

A torch function mode is used rather than module hooks because many networks (torchvision's
``inception_v3``, DenseNet) call ``F.relu`` directly, which module hooks never see.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


@dataclass
class GuidedState:
    """Switch read by the ReLUs' backward, and a count of ReLU calls seen in the forward."""

    guided: bool = False
    relu_calls: int = 0


class _ReLU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, state: GuidedState, upper: float | None, inplace: bool
    ) -> Tensor:
        mask = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.state = state
        ctx.save_for_backward(mask)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(min=0, max=upper)
        return x.clamp(min=0, max=upper)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        (mask,) = ctx.saved_tensors
        if ctx.state.guided:
            grad = grad.clamp(min=0)
        return grad * mask, None, None, None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


# func -> (upper bound or None, inplace) given the call's args/kwargs; None means "not a ReLU".
_Spec = Callable[[tuple[Any, ...], dict[str, Any]], tuple[float | None, bool] | None]


def _hardtanh_spec(a: tuple[Any, ...], k: dict[str, Any]) -> tuple[float | None, bool] | None:
    lo, hi = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
    return (float(hi), bool(_arg(a, k, 3, "inplace", False))) if lo == 0 else None


_RELUS: dict[Any, _Spec] = {
    F.relu: lambda a, k: (None, bool(_arg(a, k, 1, "inplace", False))),
    torch.relu: lambda a, k: (None, False),
    Tensor.relu: lambda a, k: (None, False),
    torch.relu_: lambda a, k: (None, True),
    Tensor.relu_: lambda a, k: (None, True),
    F.relu6: lambda a, k: (6.0, bool(_arg(a, k, 1, "inplace", False))),
    F.hardtanh: _hardtanh_spec,  # nn.ReLU6 calls F.hardtanh(x, 0, 6)
}


class _GuidedReLUMode(TorchFunctionMode):
    def __init__(self, state: GuidedState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        spec = _RELUS.get(func)
        parsed = spec(args, kwargs) if spec is not None else None
        if parsed is None:
            return func(*args, **kwargs)
        upper, inplace = parsed
        self.state.relu_calls += 1
        return _ReLU.apply(args[0], self.state, upper, inplace)


@contextlib.contextmanager
def guided_relu_mode() -> Iterator[GuidedState]:
    """Route every ReLU of forward passes inside the block through the switchable guided ReLU.

    Yields:
        The :class:`GuidedState`; set ``state.guided = True`` before an ``autograd.grad`` call
        to get the Guided-Backprop rule, ``False`` for ordinary gradients.
    """
    state = GuidedState()
    with _GuidedReLUMode(state):
        yield state


def require_relus(state: GuidedState) -> None:
    """Raise if the forward pass called no ReLU (Guided Backprop would be a plain gradient)."""
    if state.relu_calls == 0:
        raise ValueError(
            "Guided Backpropagation needs ReLU activations, but the forward pass called none "
            "(nn.ReLU, F.relu, torch.relu, Tensor.relu, ReLU6). Networks built on other "
            "activations (GELU, SiLU, ...) or compiled/TorchScript models are not supported."
        )
