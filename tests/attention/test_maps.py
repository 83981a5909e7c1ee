"""Grad-CAM and Guided Backprop: oracles, shapes, targets, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import GuidedBackprop, LayerGradCam
from torch import nn

import atcon
from atcon.attention import gradcam_and_guided_backprop, select_targets
from tests.conftest import GuidedReLUOracle, TinyCNN, randomize_bn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(num_classes=7)).eval()


@pytest.fixture(scope="module")
def r3d() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.video.r3d_18(num_classes=5)).eval()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("arch", ["resnet18", "r3d"])
def test_matches_captum(arch: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(arch)
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64) if arch == "resnet18" else torch.randn(2, 3, 8, 32, 32)
    t = torch.arange(x.shape[0]) + 1
    cam = atcon.gradcam(model, x, "layer4", t)
    ref = LayerGradCam(model, model.layer4).attribute(x, target=t, relu_attributions=False)[:, 0]
    assert cam.shape == ref.shape == (x.shape[0], *ref.shape[1:])
    assert rel_err(cam, ref) <= 1e-5
    gb = atcon.guided_backprop(model, x, t)
    ref_gb = GuidedBackprop(model).attribute(x, target=t)
    assert gb.shape == x.shape
    assert rel_err(gb, ref_gb) <= 1e-5
    # The shared-forward variant gives the same two maps.
    cam2, gb2, t2 = gradcam_and_guided_backprop(model, x, "layer4", t)
    assert torch.equal(t2, t)
    assert rel_err(cam2, ref) <= 1e-5 and rel_err(gb2, ref_gb) <= 1e-5


def test_relu_and_default_targets(resnet18: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    logits = resnet18(x)
    top1 = logits.argmax(1)
    assert torch.allclose(atcon.gradcam(resnet18, x), atcon.gradcam(resnet18, x, "layer4", top1))
    relu = atcon.gradcam(resnet18, x, relu=True)
    assert torch.equal(relu, atcon.gradcam(resnet18, x).clamp(min=0))
    same = atcon.gradcam(resnet18, x, targets=2)
    assert torch.allclose(same, atcon.gradcam(resnet18, x, targets=torch.tensor([2, 2])))


def test_create_graph_controls_differentiability(tiny: TinyCNN) -> None:
    x = torch.randn(2, 3, 8, 8)
    assert not atcon.gradcam(tiny, x).requires_grad
    assert not atcon.guided_backprop(tiny, x).requires_grad
    cam = atcon.gradcam(tiny, x, create_graph=True)
    gb = atcon.guided_backprop(tiny, x, create_graph=True)
    w = tiny.features[0].weight
    g1, g2 = torch.autograd.grad(cam.square().sum() + gb.square().sum(), [w, tiny.head[1].weight])
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0


def test_inception_functional_relus() -> None:
    """inception_v3 calls F.relu: GB must use the guided rule there (captum misses it)."""
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(num_classes=4, aux_logits=False, init_weights=False).eval()
    x = torch.randn(1, 3, 80, 80)
    ours = atcon.guided_backprop(model, x, 1)

    # Independent oracle: swap the functional relu the module calls for an explicit guided Function.
    import torchvision.models.inception as inc

    class Shim:
        def __getattr__(self, name: str):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def relu(inp: torch.Tensor, inplace: bool = False) -> torch.Tensor:
            return GuidedReLUOracle.apply(inp)

    original = inc.F
    inc.F = Shim()  # type: ignore[assignment]
    try:
        xr = x.clone().requires_grad_(True)
        model(xr)[0, 1].backward()
    finally:
        inc.F = original
    assert rel_err(ours, xr.grad) <= 1e-5
    xp = x.clone().requires_grad_(True)
    model(xp)[0, 1].backward()
    assert rel_err(ours, xp.grad) > 1e-2  # guided differs from the plain gradient
    # At 80 px Mixed_7c is 1x1 (no spatial map); from ~107 px on it is the Grad-CAM layer.
    bigger = torch.randn(1, 3, 107, 107)
    assert atcon.find_target_layer(model, bigger) == "Mixed_7c"
    assert atcon.gradcam(model, bigger).shape == (1, 2, 2)


def test_inception_outputs_unwrapped_in_train_mode(tiny: TinyCNN) -> None:
    """torchvision's InceptionOutputs (train mode, auxiliary logits) is unwrapped to .logits."""
    from torchvision.models.inception import InceptionOutputs

    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny

        def forward(self, x: torch.Tensor) -> InceptionOutputs:
            out = self.net(x)
            return InceptionOutputs(out, -out)

    model = WithAux().train()
    x = torch.randn(2, 3, 8, 8)
    cam = atcon.gradcam(model, x, "net.features")
    tiny.train()
    ref = atcon.gradcam(tiny, x, "features")
    assert torch.allclose(cam, ref) and model.training


@pytest.mark.parametrize(
    ("name", "expected", "shape"),
    [
        ("resnet18", "layer4", (1, 3, 64, 64)),
        ("vgg11", "features", (1, 3, 64, 64)),
        ("densenet121", "features", (1, 3, 64, 64)),
        ("mobilenet_v2", "features", (1, 3, 64, 64)),
        ("r3d_18", "layer4", (1, 3, 8, 32, 32)),
    ],
)
def test_target_layer_discovery(name: str, expected: str, shape: tuple[int, ...]) -> None:
    ctor = torchvision.models.video.r3d_18 if name == "r3d_18" else getattr(torchvision.models, name)
    model = ctor(num_classes=3).eval()
    x = torch.randn(shape)
    assert atcon.find_target_layer(model, x) == expected
    cam, gb, _ = gradcam_and_guided_backprop(model, x)
    assert cam.ndim == x.ndim - 1 and gb.shape == x.shape
    assert torch.isfinite(cam).all() and torch.isfinite(gb).all()


def test_discovery_on_user_cnn_and_no_candidate(tiny: TinyCNN) -> None:
    assert atcon.find_target_layer(tiny, torch.randn(1, 3, 8, 8)) == "features"
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no target layer found"):
        atcon.gradcam(mlp, torch.randn(2, 3, 2, 2))


def test_densenet_inplace_relu_after_target_does_not_alter_capture() -> None:
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    cam = atcon.gradcam(model, x, "features")
    # Reference from an unmodified copy of the pre-ReLU features.
    feats = model.features(x)
    f = feats.detach().requires_grad_(True)
    out = model.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(f), 1), 1))
    (g,) = torch.autograd.grad(out[0, out.argmax()], f)
    ref = (g.mean((2, 3), keepdim=True) * f).sum(1).detach()
    assert rel_err(cam, ref) <= 1e-5


def test_guided_backprop_needs_rectifiers() -> None:
    """Gates (sigmoid, tanh, hardsigmoid) are not rectifiers: no Guided Backprop without one."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.Hardsigmoid(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    with pytest.raises(ValueError, match="needs rectifying activations"):
        atcon.guided_backprop(model, torch.randn(1, 3, 8, 8))


def test_errors(tiny: TinyCNN) -> None:
    with pytest.raises(ValueError, match="batch dimension"):
        atcon.gradcam(tiny, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="got 6 dims"):
        atcon.gradcam(tiny, torch.randn(1, 1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="out of range"):
        atcon.gradcam(tiny, torch.randn(2, 3, 8, 8), targets=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="out of range"):
        atcon.guided_backprop(tiny, torch.randn(2, 3, 8, 8), targets=-1)
    with pytest.raises(ValueError, match="does not exist"):
        atcon.gradcam(tiny, torch.randn(2, 3, 8, 8), "layer4")
    with pytest.raises(ValueError, match=r"\(B, num_classes\)"):
        atcon.gradcam(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()), torch.randn(2, 3, 8, 8), "0")
    with pytest.raises(TypeError, match="DataParallel"):
        atcon.gradcam(nn.DataParallel(tiny), torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        atcon.gradcam(tiny, torch.zeros(2, 3, 8, 8, dtype=torch.long))


def test_select_targets_batched() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert select_targets(logits, None).tolist() == [1, 0]
    assert select_targets(logits, 2).tolist() == [2, 2]
    with pytest.raises(ValueError, match="shape"):
        select_targets(logits, torch.tensor([1, 2, 0]))


def test_batch_equals_single_samples(resnet18: nn.Module) -> None:
    x = torch.randn(4, 3, 64, 64)
    cam, gb, t = gradcam_and_guided_backprop(resnet18, x)
    for i in range(4):
        ci, gi, ti = gradcam_and_guided_backprop(resnet18, x[i : i + 1])
        assert torch.equal(ti, t[i : i + 1])
        assert rel_err(ci, cam[i : i + 1]) <= 1e-5
        assert rel_err(gi, gb[i : i + 1]) <= 1e-5


def test_upsample_to_input_time_axis() -> None:
    cam = torch.zeros(1, 2, 2, 2)
    cam[0, 1] = 1.0  # second half of the clip
    x = torch.zeros(1, 3, 16, 8, 8)
    up = atcon.upsample_to_input(cam, x)
    assert up.shape == (1, 16, 8, 8)
    # align_corners=False: frames 0-3 lie before the first cell centre (clamped), 12-15 after the last.
    assert torch.all(up[0, :4] == 0) and torch.all(up[0, 12:] == 1)
    assert torch.all(up[0, 4:12].diff(dim=0) >= 0)
    assert torch.allclose(up[0, 7], torch.full((8, 8), 0.4375))
    img = atcon.upsample_to_input(torch.arange(4.0).view(1, 2, 2), (4, 6))
    assert img.shape == (1, 4, 6) and img[0, 0, 0] == 0 and img[0, -1, -1] == 3
    with pytest.raises(ValueError, match="cannot resize"):
        atcon.upsample_to_input(cam, (8, 8))


def test_float_or_boolean_targets_are_refused_not_truncated() -> None:
    from atcon.attention.maps import select_targets

    logits = torch.zeros(2, 4)
    with pytest.raises(TypeError, match=r"class indices .* got torch\.float32"):
        select_targets(logits, torch.tensor([2.7, 1.0]))
    with pytest.raises(TypeError, match=r"got torch\.bool"):
        select_targets(logits, torch.tensor([True, False]))
    with pytest.raises(TypeError, match="got float"):
        select_targets(logits, 1.5)  # type: ignore[arg-type]
    assert select_targets(logits, torch.tensor([3, 1], dtype=torch.int32)).tolist() == [3, 1]
