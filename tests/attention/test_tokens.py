"""Grad-CAM on token maps: ViT tokens (B, P + h*w, D) and channels-last (B, H, W, C) stages."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import atcon
from atcon.attention import TargetLayer, gradcam_and_guided_backprop
from atcon.attention.tokens import Layout, ModelHints, read_layout
from tests.attention.token_models import tiny_convnext, tiny_swin, tiny_tv_swin, tiny_tv_vit, tiny_vit

pytest.importorskip("timm")

Reader = Callable[[torch.Tensor], torch.Tensor]


def tokens_reader(prefix: int, h: int, w: int) -> Reader:
    """(B, P + h*w, D) -> (B, D, h, w), written out independently of atcon."""
    return lambda t: t[:, prefix:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def nhwc_reader(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def reference_gradcam(
    model: nn.Module, x: torch.Tensor, module: nn.Module, targets: torch.Tensor, read: Reader
) -> torch.Tensor:
    """Grad-CAM by hand: a plain hook, the gradient of the target scores, channel weights = mean."""
    store: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: store.append(o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store[-1])
    f, g = read(store[-1]), read(g)
    return (g.mean(dim=(2, 3), keepdim=True) * f).sum(dim=1).detach()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
T = torch.tensor([0, 2, 1])


def test_vit_default_layer_matches_reference_and_varies_across_positions() -> None:
    model = tiny_vit()
    assert atcon.find_target_layer(model, X) == "blocks.1.norm1"
    cam = atcon.gradcam(model, X, targets=T)
    assert cam.shape == (3, 4, 4)
    ref = reference_gradcam(model, X, model.blocks[1].norm1, T, tokens_reader(1, 4, 4))
    assert rel_err(cam, ref) <= 1e-5
    # The default map is a map: it varies across the patch grid for every sample.
    assert (cam.flatten(1).std(dim=1) > 1e-3 * cam.abs().max()).all()


def test_distilled_deit_drops_both_prefix_tokens() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=16,
        num_heads=2,
        num_classes=3,
    ).eval()
    assert atcon.find_target_layer(model, X) == "blocks.1.norm1"
    ref = reference_gradcam(model, X, model.blocks[1].norm1, T, tokens_reader(2, 4, 4))
    assert rel_err(atcon.gradcam(model, X, targets=T), ref) <= 1e-5


def test_last_block_output_of_a_class_token_vit_gets_no_gradient() -> None:
    """Why the default is not the last block: its patch tokens reach the head only through the
    class token, so their gradient, and the map, are exactly zero."""
    model = tiny_vit()
    assert torch.equal(atcon.gradcam(model, X, "blocks.1", T), torch.zeros(3, 4, 4))


def test_vit_matches_pytorch_grad_cam_with_reshape_transform() -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tiny_vit()
    ours = atcon.gradcam(model, X, targets=T).numpy()
    with pgc.GradCAM(model, [model.blocks[-1].norm1], reshape_transform=tokens_reader(1, 4, 4)) as cam:
        theirs = cam(X, targets=[ClassifierOutputTarget(int(t)) for t in T])
    # Their post-processing (ReLU, min-max per image, resize to the input, min-max) on our raw map.
    processed = scale_cam_image(scale_cam_image(np.maximum(ours, 0), (32, 32)))
    assert theirs.shape == processed.shape == (3, 32, 32)
    assert np.abs(processed - theirs).max() <= 1e-4


def test_torchvision_vit_grid_from_patch_size() -> None:
    model = tiny_tv_vit()
    layer = atcon.find_target_layer(model, X)
    assert layer == "encoder.layers.encoder_layer_1.ln_1"
    cam = atcon.gradcam(model, X, targets=T)
    ref = reference_gradcam(model, X, model.get_submodule(layer), T, tokens_reader(1, 4, 4))
    assert cam.shape == (3, 4, 4) and rel_err(cam, ref) <= 1e-5
    assert torch.equal(atcon.gradcam(model, X, "encoder.layers.encoder_layer_1", T), torch.zeros(3, 4, 4))


@pytest.mark.parametrize("builder", [tiny_swin, tiny_tv_swin])
def test_channels_last_stages(builder: Callable[[], nn.Module]) -> None:
    model = builder()
    layer = "norm" if builder is tiny_swin else "features"  # (B, H, W, C) outputs
    cam = atcon.gradcam(model, X, layer, T)
    ref = reference_gradcam(model, X, model.get_submodule(layer), T, nhwc_reader)
    assert cam.shape == (3, 4, 4) and rel_err(cam, ref) <= 1e-5
    # The default layer is a (B, C, h, w) or channels-last map on the last stage, not empty.
    default = atcon.gradcam(model, X, targets=T)
    assert default.shape == (3, 4, 4) and (default.flatten(1).std(dim=1) > 0).all()


def test_register_tokens_and_models_that_say_nothing() -> None:
    model = tiny_vit(reg_tokens=4)  # class + 4 registers before the 16 patches
    ref = reference_gradcam(model, X, model.blocks[1].norm1, T, tokens_reader(5, 4, 4))
    assert rel_err(atcon.gradcam(model, X, targets=T), ref) <= 1e-5

    class Wrapped(nn.Module):  # hides patch_embed / num_prefix_tokens: the grid is inferred
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    wrapped = Wrapped()
    assert rel_err(atcon.gradcam(wrapped, X, "net.blocks.1.norm1", T), ref) <= 1e-5
    spec = TargetLayer("net.blocks.1.norm1", grid=(4, 4), prefix_tokens=5)
    assert rel_err(atcon.gradcam(wrapped, X, spec, T), ref) <= 1e-5
    # An override that reads the tokens differently is obeyed (2 x 8 grid, same 5 prefix tokens).
    other = atcon.gradcam(wrapped, X, TargetLayer("net.blocks.1.norm1", grid=(2, 8)), T)
    assert (
        rel_err(other, reference_gradcam(model, X, model.blocks[1].norm1, T, tokens_reader(5, 2, 8))) <= 1e-5
    )
    with pytest.raises(ValueError, match="cannot read the output"):
        atcon.gradcam(wrapped, X, TargetLayer("net.blocks.1.norm1", grid=(5, 5)), T)


def test_read_layout_rules() -> None:
    hints = ModelHints()
    shape = (2, 3, 96, 128)
    # 6 x 8 patches of 16 px + 1 class token, inferred from the aspect ratio.
    assert read_layout(torch.zeros(2, 49, 8), shape, hints, None, "l") == Layout("tokens", (6, 8), 1)
    # A 100 x 130 image with 16 px patches: floor division gives 6 x 8, not exactly 10:13.
    assert read_layout(torch.zeros(2, 48, 8), (2, 3, 100, 130), hints, None, "l") == Layout(
        "tokens", (6, 8), 0
    )
    # The model's own grid wins over inference.
    told = ModelHints(patch_grid=(4, 12), prefix_tokens=1)
    assert read_layout(torch.zeros(2, 49, 8), shape, told, None, "l") == Layout("tokens", (4, 12), 1)
    nhwc = ModelHints(channels_last=True)
    assert read_layout(torch.zeros(2, 3, 4, 16), shape, nhwc, None, "l") == Layout("channels_last", (3, 4))
    # On an NHWC model an output that is clearly (B, C, h, w) (the patch convolution) stays so.
    assert read_layout(torch.zeros(2, 16, 24, 32), shape, nhwc, None, "l").kind == "channels_first"
    assert read_layout(torch.zeros(2, 16, 3, 4), shape, hints, None, "l").kind == "channels_first"
    with pytest.raises(ValueError, match="not a feature map"):
        read_layout(torch.zeros(2, 10), shape, hints, None, "head")
    with pytest.raises(ValueError, match=r"grid=\(h, w\)"):
        read_layout(torch.zeros(2, 33, 8), (2, 3, 4, 32, 32), hints, None, "l")  # clip tokens
    with pytest.raises(ValueError, match="grid must be"):
        TargetLayer("x", grid=(4,))


def test_clip_tokens_with_explicit_grid() -> None:
    """A token layer of a video model reads with grid=(t, h, w)."""

    class TinyVideoTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv3d(3, 8, kernel_size=(2, 8, 8), stride=(2, 8, 8))
            self.norm = nn.LayerNorm(8)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, t*h*w, D)
            return self.head(self.mix(torch.nn.functional.gelu(self.norm(tokens))).mean(dim=1))

    torch.manual_seed(0)
    model = TinyVideoTokens().eval()
    clip = torch.randn(2, 3, 4, 16, 16)
    t = torch.tensor([1, 2])
    cam = atcon.gradcam(model, clip, TargetLayer("norm", grid=(2, 2, 2)), t)

    def read(o: torch.Tensor) -> torch.Tensor:
        return o.reshape(2, 2, 2, 2, 8).permute(0, 4, 1, 2, 3)

    store: list[torch.Tensor] = []
    h = model.norm.register_forward_hook(lambda m, i, o: store.append(o))
    logits = model(clip)
    h.remove()
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), store[0])
    ref = (read(g).mean(dim=(2, 3, 4), keepdim=True) * read(store[0])).sum(1)
    assert cam.shape == (2, 2, 2, 2) and rel_err(cam, ref.detach()) <= 1e-5


def test_not_a_feature_map_is_explained() -> None:
    # A backbone without its head returns tokens, not logits.
    backbone = tiny_vit(num_classes=0, global_pool="")
    with pytest.raises(ValueError, match=r"must return logits shaped \(B, num_classes\)"):
        atcon.gradcam(backbone, X)
    model = tiny_vit()
    with pytest.raises(ValueError, match="'head' outputs shape \\(3, 3\\), which is not a feature map"):
        atcon.gradcam(model, X, "head")
    with pytest.raises(ValueError, match="not a feature map"):
        atcon.AttentionConsistencyLoss(model, "fc_norm")(X)  # (B, D) after pooling


@pytest.mark.parametrize("builder", [tiny_vit, tiny_tv_vit, tiny_convnext, tiny_swin])
@pytest.mark.parametrize("train_mode", [False, True])
def test_batch_equals_single_samples(builder: Callable[[], nn.Module], train_mode: bool) -> None:
    """No layer mixes samples (LayerNorm, attention within a sample): in train mode too."""
    model = builder().train(train_mode)
    x = torch.randn(3, 3, 64, 64) if builder is tiny_convnext else X
    cam, gb, t = gradcam_and_guided_backprop(model, x)
    loss = atcon.AttentionConsistencyLoss(model, reduction="none")(x)
    for i in range(3):
        ci, gi, ti = gradcam_and_guided_backprop(model, x[i : i + 1])
        assert torch.equal(ti, t[i : i + 1])
        assert rel_err(ci, cam[i : i + 1]) <= 1e-4
        assert rel_err(gi, gb[i : i + 1]) <= 1e-4
    single = torch.cat(
        [atcon.AttentionConsistencyLoss(model, reduction="none")(x[i : i + 1]) for i in range(3)]
    )
    assert torch.allclose(loss, single, atol=1e-4)
    assert model.training == train_mode
