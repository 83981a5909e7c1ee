"""timm and torchvision backbones of today: building, weights, maps, loss, hygiene (random weights, offline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import atcon
from atcon.attention import guided_mode
from atcon.models import build_model, head_names, model_spec
from tests.attention.test_hooks import assert_same, snapshot
from tests.attention.token_models import tiny_vit
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")

# The networks of the issue: SiLU (EfficientNet), GELU (ConvNeXt), Hardswish + hardsigmoid SE
# (MobileNetV3), and the same families from torchvision by name.
ISSUE_MODELS = [
    "timm:efficientnet_b0",
    "timm:convnext_atto",
    "timm:mobilenetv3_small_100",
    "timm:test_resnet",
    "efficientnet_b0",
    "mobilenet_v3_small",
]


@pytest.mark.filterwarnings("ignore:.*BatchNorm.*:UserWarning")
@pytest.mark.parametrize("name", ISSUE_MODELS)
def test_maps_and_loss_work_and_leave_the_model_as_found(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_bn(build_model(name, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    before = snapshot(model)
    cam, gb, _ = atcon.gradcam_and_guided_backprop(model, x)
    assert cam.shape == (2, 2, 2) and gb.shape == x.shape
    assert torch.isfinite(cam).all() and torch.isfinite(gb).all() and gb.abs().sum() > 0
    loss = atcon.AttentionConsistencyLoss(model)(x)
    assert_same(before, snapshot(model))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(int(g is not None and bool(g.abs().sum() > 0)) for g in grads) > len(params) // 2


def test_model_spec_for_timm_and_torchvision_names() -> None:
    spec = model_spec("timm:convnext_atto")
    assert (spec.name, spec.video, spec.input_size, spec.target_layer) == (
        "timm:convnext_atto",
        False,
        224,
        None,
    )
    assert model_spec("inception_v3").input_size == 299  # curated entries unchanged
    assert model_spec("efficientnet_b3").input_size == 300  # torchvision's crop size
    assert model_spec("r2plus1d_18").video
    with pytest.raises(ValueError, match="unknown timm model 'resnet9000'"):
        model_spec("timm:resnet9000")
    with pytest.raises(ValueError, match="pretrained tag as weights"):
        model_spec("timm:resnet18.a1_in1k")
    with pytest.raises(ValueError, match="any torchvision classification"):
        model_spec("resnet9000")


def test_timm_vit_takes_any_input_size_with_its_grid() -> None:
    model = build_model("timm:vit_tiny_patch16_224", 4).eval()
    for size in (64, 96):
        x = torch.randn(2, 3, size, size)
        cam = atcon.gradcam(model, x)
        assert cam.shape == (2, size // 16, size // 16)
        assert (cam.flatten(1).std(dim=1) > 0).all()


def test_head_names() -> None:
    assert head_names(timm.create_model("efficientnet_b0", num_classes=2)) == ("classifier",)
    assert head_names(timm.create_model("deit_tiny_distilled_patch16_224", num_classes=2)) == (
        "head",
        "head_dist",
    )
    assert head_names(build_model("inception_v3", 3)) == ("fc", "AuxLogits.fc")
    assert head_names(build_model("mobilenet_v3_small", 3)) == ("classifier.3",)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_weights_from_a_local_file(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    pretrained = timm.create_model("convnext_atto", num_classes=1000)
    path = tmp_path / f"convnext_atto{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(pretrained.state_dict(), str(path))
    else:
        torch.save(pretrained.state_dict(), path)
    same = build_model("timm:convnext_atto", 1000, path)
    for (k, a), b in zip(pretrained.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="does not fit timm:convnext_atto with 5 classes"):
        build_model("timm:convnext_atto", 5, path)
    fresh_head = build_model("timm:convnext_atto", 5, path, new_head=True)
    assert fresh_head.head.fc.out_features == 5
    assert torch.equal(
        fresh_head.stages[3].blocks[1].conv_dw.weight, pretrained.stages[3].blocks[1].conv_dw.weight
    )


def test_timm_pretrained_tag_loads_what_timm_points_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online code path (a pretrained tag), with timm's configuration pointed at a local file."""
    from timm.models import _registry

    torch.manual_seed(1)
    pretrained = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18_a1.pth"
    torch.save(pretrained.state_dict(), path)
    key = "resnet18.a1_in1k"
    cfg = _registry._model_pretrained_cfgs[key]
    monkeypatch.setitem(_registry._model_pretrained_cfgs, key, dataclasses.replace(cfg, file=str(path)))
    model = build_model("timm:resnet18", 4, "a1_in1k")
    assert model.fc.out_features == 4
    assert torch.equal(model.layer4[1].conv2.weight, pretrained.layer4[1].conv2.weight)
    with pytest.raises(
        ValueError, match="unknown weights 'b9_in1k' for timm:resnet18; timm offers: DEFAULT, a1_in1k"
    ):
        build_model("timm:resnet18", 4, "b9_in1k")


def test_timm_download_failure_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> nn.Module:
        raise FileNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(
        RuntimeError, match=r"could not download timm weights resnet18\.a1_in1k .*pass its path"
    ):
        build_model("timm:resnet18", 4, "a1_in1k")


def test_torchvision_heads_replaced_for_pretrained_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torchvision weights name: the downloaded model's head(s) are replaced (download faked)."""
    import torchvision

    from atcon.models import zoo

    monkeypatch.setattr(
        zoo, "_download", lambda name, weights, **kw: torchvision.models.get_model(name, **kw)
    )
    model = build_model("efficientnet_b0", 6, "IMAGENET1K_V1")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 6)


def test_vit_loss_restores_attention_backend_and_is_twice_differentiable() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    # The fused CPU kernel the model uses by default has no double backward.
    feats = model.patch_embed(x)
    with pytest.raises(RuntimeError, match=r"scaled_dot_product|derivative"):
        out = model.blocks(torch.cat([model.cls_token.expand(2, -1, -1), feats], 1)).sum()
        (g,) = torch.autograd.grad(out, feats, create_graph=True)
        g.square().sum().backward()
    flags = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    loss = atcon.AttentionConsistencyLoss(model)(x)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled()) == flags
    # A user's own backend choice survives the loss, also when the forward fails.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        atcon.AttentionConsistencyLoss(model)(x)
        assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
        with pytest.raises(ValueError, match="not a feature map"):
            atcon.AttentionConsistencyLoss(model, "head")(x)
        assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.math_sdp_enabled()


def test_vit_loss_gradcheck_float64() -> None:
    """Finite differences agree with the loss gradient through attention, GELU and LayerNorm."""
    model = tiny_vit(img_size=16, depth=1, embed_dim=8).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    names = ["blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "head.weight"]
    params = dict(model.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def loss_at(*ws: torch.Tensor) -> torch.Tensor:
        with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(names, ws))):
            return atcon.AttentionConsistencyLoss(model)(x)

    assert torch.autograd.gradcheck(loss_at, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_timm_activation_patches_removed_on_error() -> None:
    from timm.layers.activations import QuickGELU

    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = QuickGELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.act(self.conv(x))
            raise RuntimeError("boom")

    model = Failing()
    before = snapshot(model)
    for call in (atcon.guided_backprop, atcon.AttentionConsistencyLoss(model)):
        with pytest.raises(RuntimeError, match="boom"):
            call(model, torch.randn(2, 3, 8, 8)) if call is atcon.guided_backprop else call(
                torch.randn(2, 3, 8, 8)
            )
        assert "forward" not in vars(model.act)
        assert_same(before, snapshot(model))
    with guided_mode(model) as state:
        model.act(torch.randn(3, requires_grad=True))
    assert state.activation_calls == 1 and "forward" not in vars(model.act)
