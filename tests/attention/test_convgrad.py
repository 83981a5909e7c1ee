"""Lean convolution gradients: same values and derivatives (first and second order) as PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from atcon.attention.convgrad import lean_conv_grads
from atcon.consistency import ConsistencyConfig, attention_consistency
from tests.conftest import TinyCNN, randomize_bn

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CASES = [  # dims, stride, padding, dilation, groups, bias
    (1, 2, 1, 1, 1, True),
    (2, 1, 1, 1, 1, False),
    (2, 2, 2, 2, 2, True),
    (2, (2, 1), (0, 1), 1, 1, True),
    (3, (1, 2, 2), 1, 1, 1, False),
]


def _second_order(
    dims: int, stride: object, padding: object, dilation: object, groups: int, bias: bool, lean: bool
) -> list[Tensor]:
    """Forward, an input gradient with create_graph (as Guided Backprop takes it), and the
    gradients of a function of that input gradient w.r.t. everything."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, *(7,) * dims, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.randn(6, 4 // groups, *(3,) * dims, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(6, dtype=torch.float64, generator=g).requires_grad_() if bias else None
    with lean_conv_grads(lean):
        y = CONV[dims](x, w, b, stride, padding, dilation, groups)
    v = torch.randn(y.shape, dtype=torch.float64, generator=g).requires_grad_()
    gy = y.tanh() * v  # the output gradient depends on the parameters, as in a network
    (gx,) = torch.autograd.grad(gy.sum() + (y * v).sum(), x, create_graph=True)
    u = torch.randn(gx.shape, dtype=torch.float64, generator=g)
    inputs = [t for t in (x, w, b, v) if t is not None]
    grads = torch.autograd.grad((gx * u).sum() + y.square().sum(), inputs)
    return [y, gx, *grads]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_first_and_second_order_match_pytorch(case: tuple[int, object, object, object, int, bool]) -> None:
    ref = _second_order(*case, lean=False)
    got = _second_order(*case, lean=True)
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_gradgradcheck() -> None:
    """Numerical second derivatives (finite differences) of the lean convolution."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        with lean_conv_grads():
            return F.conv2d(x, w, b, stride=2, padding=1)

    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x, w, b), fast_mode=True)


class _BackwardMasks(TorchDispatchMode):
    """Record which gradients each convolution_backward call computes."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[list[bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(list(args[-1]))
        return func(*args, **(kwargs or {}))


def test_only_requested_gradients_are_computed() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with lean_conv_grads():
        y = F.conv2d(x, w, padding=1)
    with _BackwardMasks() as spy:
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)  # as Guided Backprop asks
    assert spy.masks == [[True, False, False]]  # input gradient only, no weight gradient
    with _BackwardMasks() as spy:
        gx.square().sum().backward()
    # the second-order weight gradient is the direct weight-gradient kernel
    assert [False, True, False] in spy.masks


def test_autocast_bf16_matches_native_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = {}
    for lean in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16), lean_conv_grads(lean):
            y = F.conv2d(x, w, padding=1)
            (gx,) = torch.autograd.grad(y.float().sum(), x, create_graph=True)
        out[lean] = (y, *torch.autograd.grad(gx.square().sum() + y.float().sum(), (x, w)))
    assert out[True][0].dtype == torch.bfloat16
    for a, r in zip(out[True], out[False]):
        torch.testing.assert_close(a, r, rtol=2e-2, atol=2e-2 * r.abs().max().item())


def test_string_padding_and_no_grad_run_as_is() -> None:
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with lean_conv_grads():
        same = F.conv2d(x, w, padding="same")
        with torch.no_grad():
            plain = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(same, F.conv2d(x, w, padding="same"))
    assert plain.grad_fn is None


@pytest.mark.parametrize(
    ("dims", "config"),
    [(2, {}), (3, {}), (2, {"resolution": "gradcam_mask"}), (2, {"fold_norm": True})],
    ids=str,
)
def test_consistency_loss_and_gradients_unchanged(dims: int, config: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(dims=dims)).double().eval()
    x = torch.randn(2, 3, *(4,) * (dims - 2), 10, 10, dtype=torch.float64)
    params = list(model.parameters())
    res = []
    for lean in (False, True):
        cfg = ConsistencyConfig(**{"fold_norm": False, **config, "lean_conv_grad": lean})  # type: ignore[arg-type]
        loss = attention_consistency(model, x, cfg).loss.sum()
        res.append([loss, *torch.autograd.grad(loss, params, allow_unused=True)])
    for a, r in zip(*res):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)
