"""Grouped and depthwise convolutions in the lean path: exact first and second derivatives, the
batch-as-channels weight gradient, and the consistency loss unchanged on depthwise networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from atcon.attention.convgrad import _batch_as_channels, _batch_as_channels_wgrad, lean_conv_grads
from atcon.consistency import ConsistencyConfig, attention_consistency
from tests.conftest import randomize_bn

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# dims, channels in, channels out, kernel, stride, padding, dilation, groups
GROUPED = [
    (2, 4, 4, 3, 1, 1, 1, 4),  # depthwise 3x3: the direct kernels
    (2, 4, 4, 5, 2, 2, 1, 4),  # depthwise 5x5, strided: batch as channels
    (2, 3, 6, 5, (2, 1), (1, 2), 2, 3),  # depthwise, multiplier 2, dilated, uneven strides
    (2, 4, 8, 3, 2, 1, 1, 2),  # grouped, 2 input channels per group, multiplier 2
    (2, 4, 4, 7, 3, 1, 1, 4),  # 7x7, stride 3: input the last stride leaves unread is cropped
    (3, 2, 2, (3, 3, 3), (1, 2, 2), 1, 1, 2),  # depthwise 3D, kernel of 27: batch as channels
    (1, 4, 4, 5, 2, 2, 1, 4),  # depthwise 1D
]


def _conv_fn(case: tuple[object, ...]) -> tuple[object, tuple[Tensor, Tensor, Tensor]]:
    dims, cin, cout, k, stride, padding, dilation, groups = case
    assert (
        isinstance(dims, int) and isinstance(cin, int) and isinstance(cout, int) and isinstance(groups, int)
    )
    kernel = (k,) * dims if isinstance(k, int) else k
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cin, *(9,) * dims, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.randn(cout, cin // groups, *kernel, dtype=torch.float64, generator=g).requires_grad_()  # type: ignore[misc]
    b = torch.randn(cout, dtype=torch.float64, generator=g).requires_grad_()

    def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        with lean_conv_grads(False, grouped=True):
            return CONV[dims](x, w, b, stride, padding, dilation, groups)  # type: ignore[arg-type]

    return f, (x, w, b)


@pytest.mark.parametrize("case", GROUPED, ids=str)
def test_gradcheck_and_gradgradcheck(case: tuple[object, ...]) -> None:
    """Finite differences of the first and second derivatives of the grouped lean convolution."""
    f, inputs = _conv_fn(case)
    y = f(*inputs)  # type: ignore[operator]
    assert type(y.grad_fn).__name__ == "_ConvBackward"  # the lean function, not PyTorch's
    assert torch.autograd.gradcheck(f, inputs)  # type: ignore[arg-type]
    assert torch.autograd.gradgradcheck(f, inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", [c for c in GROUPED if c[2] % c[1] == 0 and c[1] == c[-1]], ids=str)
def test_batch_as_channels_weight_grad_is_the_weight_grad(case: tuple[object, ...]) -> None:
    """The depthwise weight gradient as one convolution equals PyTorch's, whatever the path picks."""
    dims, cin, cout, k, stride, padding, dilation, groups = case
    kernel = (k,) * dims if isinstance(k, int) else k
    n = int(dims)  # type: ignore[call-overload]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cin, *(11,) * n, dtype=torch.float64, generator=g)  # type: ignore[misc]
    w = torch.randn(cout, 1, *kernel, dtype=torch.float64, generator=g)  # type: ignore[misc]
    tup = [lambda v: [v] * n if isinstance(v, int) else list(v)][0]
    conf = (tup(stride), tup(padding), tup(dilation), groups)
    y = CONV[n](x, w, None, stride, padding, dilation, groups)  # type: ignore[arg-type]
    gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    _, ref, _ = torch.ops.aten.convolution_backward(
        gy, x, w, None, *conf[:3], False, [0] * n, groups, [False, True, False]
    )
    got = _batch_as_channels_wgrad(gy, x, w, conf)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_path_choice() -> None:
    x4, x3 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8)
    assert _batch_as_channels(x4, torch.randn(4, 1, 5, 5))
    assert _batch_as_channels(x4, torch.randn(8, 1, 7, 7))  # multiplier 2
    assert not _batch_as_channels(x4, torch.randn(4, 1, 3, 3))  # 3x3: oneDNN's kernel is fast
    assert not _batch_as_channels(x4, torch.randn(8, 2, 5, 5))  # two input channels per group
    assert not _batch_as_channels(x3, torch.randn(4, 1, 5))  # 1D: as PyTorch does it


class _WeightGradCalls(TorchDispatchMode):
    """Count convolution_backward calls that compute a weight gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.convolution_backward.default and args[-1][1]:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def test_grouped_mode_covers_grouped_calls_only_and_skips_native_wgrad() -> None:
    x = torch.randn(2, 4, 12, 12, requires_grad=True)
    dense, dw = torch.randn(4, 4, 3, 3, requires_grad=True), torch.randn(4, 1, 5, 5, requires_grad=True)
    with lean_conv_grads(False, grouped=True):
        h = F.conv2d(x, dense, padding=1)
        y = F.conv2d(h, dw, padding=2, groups=4)
    assert type(h.grad_fn).__name__ == "ConvolutionBackward0"  # groups == 1: PyTorch's own
    assert type(y.grad_fn).__name__ == "_ConvBackward"
    (gh,) = torch.autograd.grad(y.square().sum(), h, create_graph=True)
    with _WeightGradCalls() as spy:
        torch.autograd.grad(gh.square().sum(), dw)
    assert spy.calls == 0  # the 5x5 depthwise weight gradient ran as a convolution
    with lean_conv_grads(False, grouped=False):
        assert F.conv2d(h, dw, padding=2, groups=4).grad_fn.__class__.__name__ == "ConvolutionBackward0"


class _DepthwiseNet(nn.Module):
    """MobileNet-like: stem, inverted residual with a 3x3 and a 5x5 depthwise stage (one with a
    channel multiplier), squeeze-excitation gate, SiLU / Hardswish / ReLU6, linear head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.BatchNorm2d(6), nn.Hardswish())
        self.dw3 = nn.Sequential(nn.Conv2d(6, 12, 3, 1, 1, groups=6), nn.BatchNorm2d(12), nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(12, 4, 1), nn.ReLU(), nn.Conv2d(4, 12, 1))
        self.dw5 = nn.Sequential(nn.Conv2d(12, 12, 5, 2, 2, groups=12), nn.BatchNorm2d(12), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8), nn.SiLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw3(self.stem(x))
        h = self.project(self.dw5(h * torch.sigmoid(self.se(h))))
        return self.head(h.mean((2, 3)))


def _loss_and_grads(model: nn.Module, x: Tensor, config: ConsistencyConfig) -> list[Tensor | None]:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = attention_consistency(model, x, config).loss.sum()
    return [loss, *torch.autograd.grad(loss, params, allow_unused=True)]


@pytest.mark.parametrize("config", [{}, {"fold_norm": True}, {"resolution": "gradcam_mask"}], ids=str)
def test_consistency_gradients_unchanged_on_a_depthwise_net(config: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = randomize_bn(_DepthwiseNet()).double().eval()
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    kw = {"fold_norm": False, **config}
    ref = _loss_and_grads(model, x, ConsistencyConfig(**kw, lean_grouped_conv=False))  # type: ignore[arg-type]
    got = _loss_and_grads(model, x, ConsistencyConfig(**kw))  # type: ignore[arg-type]
    assert ConsistencyConfig().lean_grouped_conv  # the default: the lean path was the one compared
    for a, r in zip(got, ref, strict=True):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)


def test_consistency_gradients_unchanged_on_mobilenet_v3() -> None:
    """torchvision's mobilenet_v3_small (random weights, hardswish, SE gates, 3x3 and 5x5 depthwise)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.mobilenet_v3_small(num_classes=4)).double().eval()
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    ref = _loss_and_grads(model, x, ConsistencyConfig(lean_grouped_conv=False))
    got = _loss_and_grads(model, x, ConsistencyConfig())
    scale = max(float(r.abs().max()) for r in ref[1:] if r is not None)
    for a, r in zip(got, ref, strict=True):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7 * scale)
