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

**Grouped and depthwise convolutions** (``groups > 1``) are where PyTorch's generic double
backward is slowest: it splits the batch-transposed convolution into one convolution per group,
so a depthwise layer with ``C`` channels runs ``C`` tiny convolutions (cuDNN's double backward of
a depthwise convolution is 10-40x a supervised step on GPU). The lean function avoids that path
altogether, and :func:`lean_conv_grads` takes ``grouped=True`` to apply it to ``groups > 1``
calls only. The consistency passes turn that on by default (``ConsistencyConfig.lean_grouped_conv``)
even while ``lean_conv_grad`` is off: for grouped convolutions the gain was measured on every
depthwise network tried (README, Speed), while for ``groups == 1`` the lean path is within a few
percent of PyTorch's own and stays opt-in.

Each depthwise weight gradient (one input channel per group, ``C_out = m * C_in``) picks its
formulation, measured per case on CPU (``benchmarks/depthwise_conv.py``): oneDNN's depthwise
weight-gradient kernel is fast for 3x3 kernels but 10-40x slower for 5x5 and 7x7, where
:func:`_batch_as_channels_wgrad` (the same sum written as one depthwise convolution of the batch
laid out as channels) is fastest. Elsewhere (GPU, other kernel sizes, ``C_in / groups > 1``) the
direct weight-gradient kernel is used, the one a supervised step calls. The input gradient is
the direct kernel (``conv_transpose`` with groups) in every case: it measured as fast as the
alternatives.
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


def _batch_as_channels(x: Tensor, w: Tensor) -> bool:
    """Whether the weight gradient is faster as a convolution of the batch laid out as channels:
    a depthwise(-multiplier) convolution on CPU with a kernel larger than 3x3 (see the module
    docstring; ``benchmarks/depthwise_conv.py`` measures the cases)."""
    return x.device.type == "cpu" and x.ndim >= 4 and w.shape[1] == 1 and w[0, 0].numel() > 9


def _batch_as_channels_wgrad(gy: Tensor, x: Tensor, w: Tensor, conf: tuple[Any, ...]) -> Tensor:
    """The weight gradient of a depthwise convolution (one input channel per group, ``m`` outputs
    per input channel) as one convolution: the batch becomes channels.

    ``dW[c m + j, 0, k] = sum_{b, q} x_pad[b, c, q s + k d] g_y[b, c m + j, q]`` is, for each
    ``(b, c)``, a convolution of ``x[b, c]`` (padded as in the forward) with the kernel
    ``g_y[b, c m + j]``, dilated by the forward's stride and strided by its dilation. Laying the
    batch out as channels makes all of them one grouped convolution (``groups = B C``); the sum
    over the batch and a crop to the kernel size (the last positions exist only when the strides
    leave input unread) follow.
    """
    stride, padding, dilation, _ = conf
    b, c = x.shape[:2]
    zeros = [0] * len(stride)
    out = torch.ops.aten.convolution(
        x.reshape(1, b * c, *x.shape[2:]),
        gy.reshape(b * w.shape[0], 1, *gy.shape[2:]),
        None,
        dilation,
        padding,
        stride,
        False,
        zeros,
        b * c,
    )
    out = out.view(b, w.shape[0], *out.shape[2:]).sum(0)
    for dim, k in enumerate(w.shape[2:], start=1):
        out = out.narrow(dim, 0, k)
    return out.unsqueeze(1)


def _weight_grad(gy: Tensor, x: Tensor, w: Tensor, conf: tuple[Any, ...]) -> Tensor:
    """``wgrad(x, g_y)``, by the formulation measured fastest for the case."""
    if _batch_as_channels(x, w):
        return _batch_as_channels_wgrad(gy, x, w, conf)
    stride, padding, dilation, groups = conf
    zeros = [0] * len(stride)
    _, gw, _ = torch.ops.aten.convolution_backward(
        gy, x, w, None, stride, padding, dilation, False, zeros, groups, [False, True, False]
    )
    return gw


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
        d_w = _weight_grad(gy, u, w, ctx.conf) if _needed(ctx, 1) else None
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
            gw = _weight_grad(gy, x, w, ctx.conf) if need_w else None
            gb = gy.sum(dim=[0, *range(2, gy.ndim)]) if need_b else None
            return gx, gw, gb, None
        own_w = need_w and _batch_as_channels(x, w)
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
            [need_x, need_w and not own_w, need_b],
        )
        if own_w:
            gw = _batch_as_channels_wgrad(gy, x, w, ctx.conf)
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
    def __init__(self, grouped_only: bool) -> None:
        super().__init__()
        self.grouped_only = grouped_only

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
        groups = int(call.get("groups", 1))
        if isinstance(padding, str) or x.ndim != dims + 2 or not torch.is_grad_enabled():
            return func(*args, **kwargs)  # "same"/"valid", unbatched input or no autograd: as is
        if self.grouped_only and groups == 1:
            return func(*args, **kwargs)
        conf = (
            _tuple(call.get("stride", 1), dims),
            _tuple(padding, dims),
            _tuple(call.get("dilation", 1), dims),
            groups,
        )
        dtype = _autocast_dtype(x.device.type)
        if dtype is not None:
            x, w = x.to(dtype), w.to(dtype)
            b = b.to(dtype) if b is not None else None
        return _Conv.apply(_node_input(x), _node_input(w), _node_input(b), conf)


@contextlib.contextmanager
def lean_conv_grads(enabled: bool = True, *, grouped: bool = False) -> Iterator[None]:
    """Inside the block, convolutions run with the lean first and second-order backward.

    ``enabled`` covers every convolution; ``grouped=True`` covers those with ``groups > 1`` even
    when ``enabled`` is False (the consistency passes' default, see the module docstring). With
    both False the block is a no-op. Graphs built inside keep it after the block.
    """
    if not enabled and not grouped:
        yield
        return
    with _LeanConvMode(grouped_only=not enabled):
        yield
