"""BatchNorm folding: exact algebra, safe pairing, same loss and gradients, model left as found."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

import atcon
from atcon.attention.fold import find_conv_bn_pairs, fold_conv_bn, folded_batchnorm
from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.models import SmallResNet
from tests.attention.test_hooks import assert_same, snapshot
from tests.conftest import TinyCNN, randomize_bn

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BNS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(("bias", "affine", "groups"), [(True, True, 1), (False, True, 2), (True, False, 1)])
def test_fold_conv_bn_equals_conv_then_eval_batchnorm(
    dims: int, bias: bool, affine: bool, groups: int
) -> None:
    torch.manual_seed(0)
    conv = CONVS[dims](4, 6, 3, padding=1, stride=2, groups=groups, bias=bias).double()
    bn = BNS[dims](6, affine=affine).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        if affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 4, *(7,) * dims, dtype=torch.float64)
    w, b = fold_conv_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    # Reference, written out per channel: (conv(x) - mean) / sqrt(var + eps) * gamma + beta.
    y = conv(x)
    shape = (1, -1, *(1,) * dims)
    ref = (y - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt()
    if affine:
        ref = ref * bn.weight.view(shape) + bn.bias.view(shape)
    got = conv._conv_forward(x, w, b)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def _named_pairs(model: nn.Module, x: Tensor) -> set[tuple[str, str]]:
    return {(p.conv, p.bn) for p in find_conv_bn_pairs(model, x)}


def test_pairs_of_torchvision_resnet18() -> None:
    model = torchvision.models.resnet18(num_classes=3).eval()
    pairs = _named_pairs(model, torch.randn(2, 3, 32, 32))
    expected = {("conv1", "bn1")}
    for layer, blocks in (("layer1", 2), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        for i in range(blocks):
            expected |= {
                (f"{layer}.{i}.conv1", f"{layer}.{i}.bn1"),
                (f"{layer}.{i}.conv2", f"{layer}.{i}.bn2"),
            }
        if layer != "layer1":
            expected.add((f"{layer}.0.downsample.0", f"{layer}.0.downsample.1"))
    assert pairs == expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchvision.models.resnet50(num_classes=3),
        lambda: torchvision.models.inception_v3(num_classes=3, aux_logits=True, init_weights=False),
        lambda: torchvision.models.video.r3d_18(num_classes=3),
        lambda: SmallResNet(3, width=4),
        lambda: SmallResNet(3, width=4, dims=3),
    ],
    ids=["resnet50", "inception_v3", "r3d_18", "small_resnet", "small_resnet_3d"],
)
def test_every_conv_bn_pair_is_found(make) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = make().eval()
    video = isinstance(model, torchvision.models.video.VideoResNet) or any(
        isinstance(m, nn.Conv3d) for m in model.modules()
    )
    size = 75 if isinstance(model, torchvision.models.Inception3) else 32
    x = torch.randn(2, 3, 4, size, size) if video else torch.randn(2, 3, size, size)
    pairs = _named_pairs(model, x)
    # Independent expectation: every BatchNorm that runs in eval mode directly follows a conv
    # (the auxiliary head of Inception runs only in training mode).
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if isinstance(model, torchvision.models.Inception3):
        bns = {n for n in bns if not n.startswith("AuxLogits")}
    assert {b for _, b in pairs} == bns
    for c, b in pairs:
        conv, bn = model.get_submodule(c), model.get_submodule(b)
        assert isinstance(conv, nn.modules.conv._ConvNd) and conv.out_channels == bn.num_features


class SharedOutput(nn.Module):
    """conv output read by BatchNorm and by the residual sum: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


class InplaceBetween(nn.Module):
    """conv output modified in place (same tensor object) before the BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x), inplace=True)).mean((2, 3))


class ReusedConv(nn.Module):
    """one conv feeding two different BatchNorms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return (self.bn1(self.conv(x)) + self.bn2(self.conv(x * 2))).mean((2, 3))


class SharedNorm(nn.Module):
    """one BatchNorm fed by two convs (a shared norm cannot be folded into both)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return (self.bn(self.c1(x)) + self.bn(self.c2(x))).mean((2, 3))


class NoStats(nn.Module):
    """BatchNorm without running statistics normalises with the batch's even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)).mean((2, 3))


class Sandwich(nn.Module):
    """conv -> BN (safe) -> conv -> BN whose input is also returned (unsafe), reused conv twice."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.b1(self.c1(x))
        z = self.c2(y)
        w = self.b1(self.c1(x.flip(-1)))  # the same safe pair called twice
        return torch.cat([self.b2(z), z.detach().clone(), w], 1).mean((2, 3))


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (SharedOutput, set()),
        (InplaceBetween, set()),
        (ReusedConv, set()),
        (SharedNorm, set()),
        (NoStats, set()),
        (Sandwich, {("c1", "b1")}),
    ],
)
def test_only_safe_pairs_are_folded(cls: type[nn.Module], expected: set[tuple[str, str]]) -> None:
    torch.manual_seed(0)
    model = randomize_bn(cls()).eval() if cls is not NoStats else cls().eval()
    x = torch.randn(3, 3, 6, 6)
    assert _named_pairs(model, x) == expected
    ref = model(x)
    with torch.no_grad(), folded_batchnorm(model, x, min_activation_ratio=0) as folded:
        got = model(x)
    assert {(p.conv, p.bn) for p in folded} == expected
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def _loss_and_grads(
    model: nn.Module, x: Tensor, layer: str | None = None, **kw: object
) -> tuple[Tensor, list[Tensor]]:
    config = ConsistencyConfig(fold_norm=False, **kw)  # type: ignore[arg-type]
    out = attention_consistency(model, x, config, target_layer=layer)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.loss.sum(), params, allow_unused=True)
    return out.loss, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _assert_same_loss_and_grads(
    model: nn.Module, x: Tensor, layer: str | None = None, tol: float = 1e-5, **kw: object
) -> list[object]:
    """Loss and every parameter gradient agree to ``tol``, relative to each gradient's largest entry."""
    ref_loss, ref_grads = _loss_and_grads(model, x, layer, **kw)
    with folded_batchnorm(model, x, min_activation_ratio=0) as folded:
        loss, grads = _loss_and_grads(model, x, layer, **kw)
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
    largest = max(r.abs().max() for r in ref_grads)
    for g, r in zip(grads, ref_grads):
        # Gradients orders below the largest one (a nearly unused bias) are compared to its scale.
        scale = torch.maximum(r.abs().max(), 1e-4 * largest)
        assert (g - r).abs().max() <= tol * scale
    return folded


# name -> (model, input shape with Grad-CAM maps of 4+ positions, dtype, pairs): float64 for the
# small networks; float32 for ResNet-18 (CPU float64 convolutions are far slower), whose own
# unfolded float32 gradients differ from float64 ones by more than the folded ones do.
MODELS = {
    "tiny": (lambda: TinyCNN(), (2, 3, 8, 8), torch.float64, 2),
    "tiny3d": (lambda: TinyCNN(dims=3), (2, 3, 4, 8, 8), torch.float64, 2),
    "small_resnet": (lambda: SmallResNet(3, width=4), (2, 3, 48, 48), torch.float64, 12),
    "small_resnet_3d": (lambda: SmallResNet(3, width=4, dims=3), (2, 3, 4, 32, 32), torch.float64, 12),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=3), (2, 3, 64, 64), torch.float32, 20),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_same_loss_and_parameter_gradients(name: str) -> None:
    make, shape, dtype, pairs = MODELS[name]
    torch.manual_seed(0)
    model = randomize_bn(make()).to(dtype).eval()
    x = torch.randn(shape, dtype=dtype)
    folded = _assert_same_loss_and_grads(model, x, tol=1e-5 if dtype == torch.float64 else 1e-4)
    assert len(folded) == pairs


@pytest.mark.slow
def test_same_loss_and_parameter_gradients_r3d_18() -> None:
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.video.r3d_18(num_classes=3)).double().eval()
    folded = _assert_same_loss_and_grads(model, torch.randn(1, 3, 4, 32, 32, dtype=torch.float64))
    assert len(folded) == 20


def test_same_maps_and_gradients_inception_v3() -> None:
    """Inception's BasicConv2d pairs: same logits, maps and first-order parameter gradients."""
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.inception_v3(num_classes=3, init_weights=False)).eval()
    x = torch.randn(1, 3, 75, 75)
    params = list(model.parameters())

    def run() -> list[Tensor]:
        cam, gb, _ = atcon.gradcam_and_guided_backprop(model, x, "Mixed_6e", targets=1)
        grads = torch.autograd.grad(model(x)[:, 1].sum(), params, allow_unused=True)
        return [cam, gb, *(g for g in grads if g is not None)]

    ref = run()
    with folded_batchnorm(model, x, min_activation_ratio=0) as folded:
        got = run()
    assert len(folded) == 94
    for g, r in zip(got, ref, strict=True):
        assert (g - r).abs().max() <= 1e-4 * r.abs().max().clamp(min=1e-30)


@pytest.mark.parametrize(
    "config", [{"resolution": "gradcam_mask"}, {"detach_mask": True}, {"similarity": "ssim"}], ids=str
)
def test_same_loss_and_gradients_other_variants(config: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).double().eval()
    _assert_same_loss_and_grads(model, torch.randn(2, 3, 12, 12, dtype=torch.float64), **config)


def test_config_switch_gives_same_result() -> None:
    """The loss's own switch (default on) against the unfolded loss, float32."""
    torch.manual_seed(0)
    model = randomize_bn(SmallResNet(3, width=8)).eval()
    x = torch.randn(4, 3, 32, 32)
    on = attention_consistency(model, x)
    off = attention_consistency(model, x, ConsistencyConfig(fold_norm=False))
    assert ConsistencyConfig().fold_norm
    torch.testing.assert_close(on.loss, off.loss, rtol=1e-4, atol=1e-5)
    w = model.stem[0].weight
    (g_on,) = torch.autograd.grad(on.loss.sum(), w)
    (g_off,) = torch.autograd.grad(off.loss.sum(), w)
    torch.testing.assert_close(g_on, g_off, rtol=1e-3, atol=1e-4 * g_off.abs().max().item())


def test_a_captured_conv_layer_keeps_its_own_output() -> None:
    """Grad-CAM of a conv that heads a pair sees the conv's output, not the BatchNorm's."""
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ref = attention_consistency(model, x, ConsistencyConfig(fold_norm=False), target_layer="features.3")
    with folded_batchnorm(model, x, min_activation_ratio=0) as folded:
        got = attention_consistency(model, x, ConsistencyConfig(fold_norm=False), target_layer="features.3")
    assert ("features.3", "features.4") in {(p.conv, p.bn) for p in folded}
    torch.testing.assert_close(got.first, ref.first)
    torch.testing.assert_close(got.loss, ref.loss)


def test_training_mode_batchnorm_is_never_folded() -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).train()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8)
    with folded_batchnorm(model, x, min_activation_ratio=0):
        got = model(x)
    ref = twin(x)
    torch.testing.assert_close(got, ref)
    for a, b in zip(model.buffers(), twin.buffers()):
        assert torch.equal(a, b)  # running statistics updated exactly as without the block

    # A mode switched inside the block is honoured at the next call.
    model.eval()
    twin.eval()
    with folded_batchnorm(model, x, min_activation_ratio=0):
        model.train()
        twin.train()
        torch.testing.assert_close(model(x), twin(x))


def test_min_activation_ratio_selects_pairs_by_size() -> None:
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    all_pairs = find_conv_bn_pairs(model, x)
    with folded_batchnorm(model, x, min_activation_ratio=4.0) as folded:
        pass
    expected = [p for p in all_pairs if 2 * p.out_numel >= 4.0 * model.get_submodule(p.conv).weight.numel()]
    assert folded == expected and 0 < len(folded) < len(all_pairs)
    assert all_pairs[0].conv == "conv1" and all_pairs[0].out_numel == 64 * 32 * 32


def test_disabled_is_a_no_op() -> None:
    model = randomize_bn(TinyCNN()).eval()
    with folded_batchnorm(model, torch.randn(2, 3, 8, 8), enabled=False) as folded:
        assert folded == [] and all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("fail", ["inside", "forward"])
def test_model_left_as_found_also_on_error(fail: str) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).eval()
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    forwards = {n: type(m).forward for n, m in model.named_modules()}
    with pytest.raises(RuntimeError), folded_batchnorm(model, x, min_activation_ratio=0) as folded:
        assert len(folded) == 2
        assert all("forward" in vars(model.features[i]) for i in (0, 1, 3, 4))
        if fail == "inside":
            raise RuntimeError("boom")
        model(torch.randn(2, 5, 8, 8))  # wrong channel count: the conv raises
    assert_same(before, snapshot(model))
    for n, m in model.named_modules():
        assert "forward" not in vars(m) and type(m).forward is forwards[n]
    torch.testing.assert_close(model(x), copy.deepcopy(model)(x))


def test_loss_leaves_model_as_found() -> None:
    torch.manual_seed(0)
    model = randomize_bn(SmallResNet(3, width=4)).eval()
    before = snapshot(model)
    attention_consistency(model, torch.randn(2, 3, 16, 16)).loss.sum().backward()
    after = snapshot(model)
    before["grads"], after["grads"] = [], []  # backward() wrote .grad, as it should
    assert_same(before, after)
    assert all("forward" not in vars(m) for m in model.modules())
