"""The attention-consistency loss: Algorithm 1, its variants, gradients, robustness."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

import atcon
from atcon.consistency import RESOLUTIONS, SIMILARITIES, attention_consistency
from atcon.consistency import loss as loss_module
from atcon.consistency.masking import saliency, soft_mask
from tests.conftest import TinyCNN, randomize_bn

VARIANTS = list(itertools.product(RESOLUTIONS, SIMILARITIES))


def test_default_path_is_algorithm_1(tiny: TinyCNN) -> None:
    """Recompute Algorithm 1 step by step with the public map functions."""
    x = torch.randn(3, 3, 8, 8)
    out = attention_consistency(tiny, x)
    cam1, gb, t = atcon.gradcam_and_guided_backprop(tiny, x, "features")
    p = soft_mask(saliency(gb))
    cam2 = atcon.gradcam(tiny, p[:, None] * x, "features", t)
    r = torch.stack(
        [torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] for a, b in zip(cam1, cam2)]
    )
    assert out.layer == "features" and torch.equal(out.targets, t)
    assert torch.allclose(out.mask, p, atol=1e-6)
    assert torch.allclose(out.loss, -r, atol=1e-5)
    assert torch.allclose(atcon.AttentionConsistencyLoss(tiny)(x), -r.mean(), atol=1e-5)


def test_gradcheck_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = randomize_bn(TinyCNN(width=3)).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    names = ["features.0.weight", "features.3.weight", "head.1.weight"]
    params = dict(net.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def loss_at(ws: tuple[torch.Tensor, ...], detach: bool) -> torch.Tensor:
        with torch.nn.utils.stateless._reparametrize_module(net, dict(zip(names, ws))):
            return atcon.AttentionConsistencyLoss(net, "features", detach_mask=detach)(x)

    # Full gradient, through A1, A2 and the mask.
    assert torch.autograd.gradcheck(lambda *ws: loss_at(ws, False), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)

    # detach_mask=True: the gradient of the loss with the mask held constant. Freeze the mask at
    # its value for the base weights so finite differences see the same function.
    fixed = attention_consistency(net, x, target_layer="features").mask
    assert fixed is not None
    monkeypatch.setattr(loss_module, "soft_mask", lambda *a, **k: fixed.detach())
    assert torch.autograd.gradcheck(lambda *ws: loss_at(ws, True), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_mask_gradient_flows_unless_detached(tiny: TinyCNN) -> None:
    x = torch.randn(2, 3, 8, 8)
    full = attention_consistency(tiny, x)
    detached = attention_consistency(tiny, x, atcon.ConsistencyConfig(detach_mask=True))
    assert full.mask is not None and full.mask.requires_grad
    assert detached.mask is not None and not detached.mask.requires_grad
    assert torch.allclose(full.loss, detached.loss)  # same value, different gradient
    w = tiny.features[0].weight
    (g_full,) = torch.autograd.grad(full.loss.sum(), w)
    (g_det,) = torch.autograd.grad(detached.loss.sum(), w)
    assert not torch.allclose(g_full, g_det)


@pytest.mark.parametrize(("resolution", "similarity"), VARIANTS)
@pytest.mark.parametrize("dims", [2, 3])
def test_batch_equals_single_samples(resolution: str, similarity: str, dims: int) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(dims=dims)).eval()
    x = torch.randn(3, 3, 8, 8) if dims == 2 else torch.randn(3, 3, 4, 8, 8)
    if similarity == "ssim" and resolution in ("gb_mask", "gb_pool") and dims == 2:
        x = torch.randn(3, 3, 12, 12)  # Grad-CAM of 6x6
    fn = atcon.AttentionConsistencyLoss(model, resolution=resolution, similarity=similarity, reduction="none")  # type: ignore[arg-type]
    batch = fn(x)
    single = torch.cat([fn(x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3,)
    assert torch.allclose(batch, single, atol=1e-5), (resolution, similarity)
    grads = torch.autograd.grad(
        batch.sum(), [p for p in model.parameters() if p.requires_grad], allow_unused=True
    )
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("resolution", "similarity"), VARIANTS)
def test_constant_inputs_and_dead_network_stay_finite(resolution: str, similarity: str) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).eval()
    dead = TinyCNN().eval()
    for p in dead.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 3, 12, 12)
    for net, inp in ((model, torch.zeros_like(x)), (model, torch.ones_like(x)), (dead, x)):
        fn = atcon.AttentionConsistencyLoss(net, resolution=resolution, similarity=similarity)  # type: ignore[arg-type]
        loss = fn(inp)
        grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
        assert torch.isfinite(loss)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_only_autograd_grad_inside(tiny: TinyCNN) -> None:
    loss = atcon.AttentionConsistencyLoss(tiny)(torch.randn(2, 3, 8, 8))
    assert all(p.grad is None for p in tiny.parameters())
    loss.backward()
    # The output bias shifts every logit of a class equally: no map depends on it.
    for name, p in tiny.named_parameters():
        if name == "head.1.bias":
            assert p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_loss_module_does_not_own_the_model(tiny: TinyCNN) -> None:
    fn = atcon.AttentionConsistencyLoss(tiny, tiny.features)
    assert list(fn.parameters()) == [] and list(fn.children()) == []
    fn.train()
    assert not tiny.training
    assert "gb_mask" in repr(fn)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="resolution"):
        atcon.ConsistencyConfig(resolution="upsample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity"):
        atcon.AttentionConsistencyLoss(nn.Identity(), similarity="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_sharpness"):
        atcon.ConsistencyConfig(mask_sharpness=0)
    with pytest.raises(ValueError, match="reduction"):
        atcon.AttentionConsistencyLoss(nn.Identity(), reduction="sum")  # type: ignore[arg-type]


def test_ssim_too_small_map_is_explained(tiny: TinyCNN) -> None:
    with pytest.raises(ValueError, match="at least 3 positions"):
        atcon.AttentionConsistencyLoss(tiny, similarity="ssim")(torch.randn(2, 3, 4, 4))


def test_warns_once_for_training_batchnorm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loss_module, "_warned_train_bn", False)
    model = TinyCNN().train()
    fn = atcon.AttentionConsistencyLoss(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(torch.randn(2, 3, 8, 8))
        fn(torch.randn(2, 3, 8, 8))
    assert sum("BatchNorm" in str(w.message) for w in caught) == 1
    model.eval()
    monkeypatch.setattr(loss_module, "_warned_train_bn", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(torch.randn(2, 3, 8, 8))
    assert not caught


def test_reference_mask_option_is_used(tiny: TinyCNN) -> None:
    x = torch.randn(2, 3, 8, 8)
    ref = attention_consistency(
        tiny, x, atcon.ConsistencyConfig(mask_scale="none", mask_center=0.5, mask_sharpness=8)
    )
    _, gb, _ = atcon.gradcam_and_guided_backprop(tiny, x, "features")
    assert ref.mask is not None
    assert torch.allclose(ref.mask, soft_mask(saliency(gb), scale="none", center=0.5, sharpness=8), atol=1e-6)


def test_composes_with_ddp_world_size_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = randomize_bn(TinyCNN()).eval()
        ddp = nn.parallel.DistributedDataParallel(net)
        x = torch.randn(2, 3, 8, 8)
        atcon.AttentionConsistencyLoss(ddp, "features")(x).backward()
        ref = randomize_bn(TinyCNN()).eval()
        ref.load_state_dict(net.state_dict())
        atcon.AttentionConsistencyLoss(ref, "features")(x).backward()
        for a, b in zip(net.parameters(), ref.parameters()):
            # Under DDP every parameter gets a gradient (zeros where the loss does not reach it),
            # so DDP's reducer sees each one; unwrapped, those stay None.
            ga = a.grad if a.grad is not None else torch.zeros_like(a)
            gb = b.grad if b.grad is not None else torch.zeros_like(b)
            assert torch.allclose(ga, gb, atol=1e-6)
            assert a.grad is not None
        assert net.features[0].weight.grad is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_samples_are_left_out_and_an_empty_batch_is_refused(bad: float) -> None:
    """One NaN pixel used to give its sample a loss of -0.0 and every parameter a NaN gradient."""
    torch.manual_seed(0)
    net = randomize_bn(TinyCNN()).eval()
    x = torch.randn(3, 3, 8, 8)
    poisoned = x.clone()
    poisoned[1, 0, 2, 2] = bad
    loss_fn = atcon.AttentionConsistencyLoss(net, "features")
    loss = loss_fn(poisoned)
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    expected = loss_fn(x[[0, 2]])
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for g, p in zip(grads, [p for p in net.parameters() if p.grad is not None]):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)
    per_sample = atcon.AttentionConsistencyLoss(net, "features", reduction="none")(poisoned)
    assert per_sample[1] == 0 and torch.isfinite(per_sample).all()
    with pytest.raises(ValueError, match="empty batch"):
        loss_fn(x[:0])
    guarded = atcon.GuardedConsistencyLoss(net, target_layer="features")
    out = guarded(poisoned)
    torch.testing.assert_close(out.consistency, expected.detach())
    assert torch.isfinite(out.loss) and out.anchor == 0
    with pytest.raises(ValueError, match="empty batch"):
        guarded(x[:0])


def test_non_finite_mask_settings_and_meta_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="mask_center must be a finite number"):
        atcon.ConsistencyConfig(mask_center=float("inf"))
    with pytest.raises(ValueError, match="mask_sharpness must be a finite number"):
        atcon.ConsistencyConfig(mask_sharpness=float("nan"))
    net = randomize_bn(TinyCNN()).eval()
    with pytest.raises(ValueError, match="meta tensor"):
        atcon.AttentionConsistencyLoss(net, "features")(torch.empty(2, 3, 8, 8, device="meta"))
