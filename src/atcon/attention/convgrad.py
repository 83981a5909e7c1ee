"""Convolutions with a cheaper second-order backward, for the consistency loss's passes.

The consistency loss differentiates a gradient: Guided Backprop is an input gradient taken with
``create_graph=True``, and the loss's ``backward()`` then runs through that backward pass. For a
convolution ``y = conv(x, W)`` the input gradient is ``g_x = conv_transpose(g_y, W)``, and the
loss needs ``d<u, g_x>/dW = wgrad(u, g_y)``: the ordinary weight gradient of a convolution with
input ``u`` and output gradient ``g_y``. PyTorch's generic double backward of a convolution
computes it as a convolution over batch-transposed tensors; on CPU (oneDNN) that alone is up to
5x slower than the weight-gradient kernel for ResNet-18's stem and strided layers at 128 px, though
over a whole consistency step the two come out within a few percent (README, Speed). Off by
default; ``benchmarks/gpu_suite.py`` measures it on GPU.

Inside :func:`lean_conv_grads` every ``conv1d/2d/3d`` call (``nn.Conv*d`` modules and the
functional forms, with numeric padding) runs as a custom autograd function whose backward

* computes only the gradients the running backward pass will use (under
  ``autograd.grad(..., inputs=x)`` no weight gradient is computed), and
* when ``create_graph=True``, returns the input gradient as a second custom function whose own
  backward calls the direct kernels: ``conv(u, W)`` for ``g_y`` and ``wgrad(u, g_y)`` for ``W``.

Values and gradients equal those of the plain convolution up to floating-point rounding (every
derivative is still exact). Autocast is honoured: the operands are cast to the autocast dtype
before the function, as the autocast convolution would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}


def _tuple(v: int | Sequence[int], n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, int) else [int(a) for a in v]


def _needed(ctx: Any, i: int) -> bool:
    """Whether the running backward pass uses the gradient of the function's ``i``-th input."""
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # older torch: assume needed
        return bool(ctx.needs_input_grad[i])


class _ConvInputGrad(torch.autograd.Function):
    """``g_x = conv_transpose(g_y, W)`` (the input gradient), with a direct-kernel backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, gy: Tensor, w: Tensor, x: Tensor, conf: tuple[Any, ...]
    ) -> Tensor:
        stride, padding, dilation, groups = conf
        ctx.save_for_backward(gy, w)
        ctx.conf = conf
        zeros = [0] * len(stride)
        gx, _, _ = torch.ops.aten.convolution_backward(
            gy, x, w, None, stride, padding, dilation, False, zeros, groups, [True, False, False]
        )
        return gx

    @staticmethod
    def backward(ctx: Any, u: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        gy, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        zeros = [0] * len(stride)
        # <u, conv_transpose(g_y, W)> = <conv(u, W), g_y>: so d/dg_y = conv(u, W), d/dW = wgrad(u, g_y).
        d_gy = (
            torch.ops.aten.convolution(u, w, None, stride, padding, dilation, False, zeros, groups)
            if _needed(ctx, 0)
            else None
        )
        d_w = None
        if _needed(ctx, 1):
            _, d_w, _ = torch.ops.aten.convolution_backward(
                gy, u, w, None, stride, padding, dilation, False, zeros, groups, [False, True, False]
            )
        return d_gy, d_w, None, None


class _Conv(torch.autograd.Function):
    """``conv(x, W) + b`` whose backward computes only what is used, lean when differentiated."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, conf: tuple[Any, ...]
    ) -> Tensor:
        stride, padding, dilation, groups = conf
        ctx.save_for_backward(x, w)
        ctx.conf = conf
        ctx.has_bias = b is not None
        zeros = [0] * len(stride)
        return torch.ops.aten.convolution(x, w, b, stride, padding, dilation, False, zeros, groups)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        zeros = [0] * len(stride)
        need_x, need_w = _needed(ctx, 0), _needed(ctx, 1)
        need_b = ctx.has_bias and _needed(ctx, 2)
        if torch.is_grad_enabled():  # create_graph=True: the result is differentiated again
            gx = _ConvInputGrad.apply(gy, w, x, ctx.conf) if need_x else None
            gw = None
            if need_w:
                _, gw, _ = torch.ops.aten.convolution_backward(
                    gy, x, w, None, stride, padding, dilation, False, zeros, groups, [False, True, False]
                )
            gb = gy.sum(dim=[0, *range(2, gy.ndim)]) if need_b else None
            return gx, gw, gb, None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gy,
            x,
            w,
            [w.shape[0]] if need_b else None,
            stride,
            padding,
            dilation,
            False,
            zeros,
            groups,
            [need_x, need_w, need_b],
        )
        return gx, gw, gb, None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: no per-device query
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
    return None


def _node_input(t: Tensor | None) -> Tensor | None:
    # A leaf's gradient node cannot be queried inside autograd.grad; a view of it can.
    return t.view_as(t) if t is not None and t.is_leaf and t.requires_grad else t


class _LeanConvMode(TorchFunctionMode):
    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        dims = _CONVS.get(func)
        if dims is None:
            return func(*args, **kwargs)
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        call = dict(zip(names, args))
        call.update(kwargs)
        x, w, b = call["input"], call["weight"], call.get("bias")
        padding = call.get("padding", 0)
        if isinstance(padding, str) or x.ndim != dims + 2 or not torch.is_grad_enabled():
            return func(*args, **kwargs)  # "same"/"valid", unbatched input or no autograd: as is
        conf = (
            _tuple(call.get("stride", 1), dims),
            _tuple(padding, dims),
            _tuple(call.get("dilation", 1), dims),
            int(call.get("groups", 1)),
        )
        dtype = _autocast_dtype(x.device.type)
        if dtype is not None:
            x, w = x.to(dtype), w.to(dtype)
            b = b.to(dtype) if b is not None else None
        return _Conv.apply(_node_input(x), _node_input(w), _node_input(b), conf)


@contextlib.contextmanager
def lean_conv_grads(enabled: bool = True) -> Iterator[None]:
    """Inside the block, convolutions run with the lean first and second-order backward.

    Graphs built inside keep it after the block. ``enabled=False`` makes the block a no-op.
    """
    if not enabled:
        yield
        return
    with _LeanConvMode():
        yield
