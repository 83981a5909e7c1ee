"""The control mask sources: Sobel edges, random smooth maps, a randomly re-initialised network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.consistency.masking import random_smooth_saliency, saliency, sobel_saliency, soft_mask
from atcon.models import build_model, randomized_copy


def test_sobel_matches_scipy_per_channel_and_frame() -> None:
    x = torch.rand(2, 3, 3, 9, 11, dtype=torch.float64)
    got = sobel_saliency(x)
    a = x.numpy()
    # scipy smooths along every other axis of an N-d array, so apply it to one 2D slice at a time.
    mag = np.zeros_like(a)
    for idx in np.ndindex(*a.shape[:3]):
        mag[idx] = np.hypot(
            ndimage.sobel(a[idx], 0, mode="nearest"), ndimage.sobel(a[idx], 1, mode="nearest")
        )
    assert got.shape == (2, 3, 9, 11)
    np.testing.assert_allclose(got.numpy(), mag.sum(1), rtol=1e-10)
    np.testing.assert_allclose(sobel_saliency(x[:, :, 0]).numpy(), mag.sum(1)[:, 0], rtol=1e-10)


def test_sobel_is_zero_on_flat_regions_and_peaks_on_edges() -> None:
    x = torch.zeros(1, 3, 8, 8)
    x[..., 4:] = 1.0
    s = sobel_saliency(x)[0]
    assert s[:, :2].abs().max() == 0 and s[:, 6:].abs().max() == 0
    assert bool((s[:, 3:5] > 0).all())


def test_random_smooth_is_smooth_reproducible_and_fresh_per_call() -> None:
    x = torch.zeros(4, 3, 64, 64)
    a = random_smooth_saliency(x, generator=torch.Generator().manual_seed(0))
    b = random_smooth_saliency(x, generator=torch.Generator().manual_seed(0))
    c = random_smooth_saliency(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # Neighbouring pixels differ far less than independent noise would (mean |diff| ~ 1/3).
    assert (a[:, :, 1:] - a[:, :, :-1]).abs().mean() < 0.05
    assert not torch.equal(a[0], a[1])
    assert random_smooth_saliency(torch.zeros(2, 3, 4, 16, 16)).shape == (2, 4, 16, 16)


@pytest.mark.parametrize("source", ["random_network", "sobel", "random_smooth"])
def test_control_masks_carry_no_gradient_and_the_loss_still_trains(source: str) -> None:
    torch.manual_seed(0)
    model = build_model("small", 3).eval()
    x = torch.rand(2, 3, 32, 32)
    mask_model = randomized_copy(model, 1) if source == "random_network" else None
    out = attention_consistency(model, x, ConsistencyConfig(mask_source=source), mask_model=mask_model)
    assert out.mask is not None and not out.mask.requires_grad
    out.loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if mask_model is not None:
        assert all(p.grad is None for p in mask_model.parameters())


def test_random_network_mask_is_guided_backprop_of_the_copy() -> None:
    torch.manual_seed(0)
    model = build_model("small", 3).eval()
    copy = randomized_copy(model, 3)
    x = torch.rand(3, 3, 32, 32)
    out = attention_consistency(model, x, ConsistencyConfig(mask_source="random_network"), mask_model=copy)
    from atcon.attention.maps import guided_backprop

    expected = soft_mask(saliency(guided_backprop(copy, x, targets=out.targets)))
    torch.testing.assert_close(out.mask, expected)
    method = attention_consistency(model, x, ConsistencyConfig()).mask
    assert method is not None and not torch.allclose(out.mask, method, atol=1e-3)


def test_control_source_errors_name_the_fix() -> None:
    model = build_model("small", 3).eval()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="needs mask_model"):
        attention_consistency(model, x, ConsistencyConfig(mask_source="random_network"))
    with pytest.raises(ValueError, match="take none"):
        attention_consistency(model, x, ConsistencyConfig(), mask_model=model)
    with pytest.raises(ValueError, match="has no such mask"):
        ConsistencyConfig(resolution="gb_pool", mask_source="sobel")


def test_randomized_copy_keeps_architecture_and_leaves_the_original() -> None:
    model = build_model("small", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = randomized_copy(model, 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(copy.fc.weight, model.fc.weight)
    assert not any(p.requires_grad for p in copy.parameters()) and not copy.training
    again = randomized_copy(model, 0)
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), again.state_dict().values()))


def test_loss_module_takes_a_config_and_a_mask_model() -> None:
    import atcon

    torch.manual_seed(0)
    model = build_model("small", 3).eval()
    copy = randomized_copy(model, 3)
    x = torch.rand(3, 3, 32, 32)
    cfg = ConsistencyConfig(
        mask_source="random_network", mask_scale="none", mask_center=0.5, mask_sharpness=8
    )
    fn = atcon.AttentionConsistencyLoss(model, config=cfg, mask_model=copy, reduction="none")
    expected = attention_consistency(model, x, cfg, mask_model=copy).loss
    torch.testing.assert_close(fn(x), expected)
    # Keyword overrides replace fields of the given config, validated by ConsistencyConfig.
    sobel = atcon.AttentionConsistencyLoss(model, config=cfg, mask_source="sobel")
    assert sobel.config == ConsistencyConfig(
        mask_source="sobel", mask_scale="none", mask_center=0.5, mask_sharpness=8
    )
    torch.testing.assert_close(sobel(x), attention_consistency(model, x, sobel.config).loss.mean())
    assert list(fn.parameters()) == [] and list(fn.children()) == []


def test_loss_module_checks_its_options_when_built() -> None:
    import atcon

    model = build_model("small", 3).eval()
    with pytest.raises(ValueError, match="needs mask_model"):
        atcon.AttentionConsistencyLoss(model, mask_source="random_network")
    with pytest.raises(ValueError, match="take none"):
        atcon.AttentionConsistencyLoss(model, mask_model=model)
    with pytest.raises(TypeError, match=r"unknown option.*mask_sharpnes\b"):
        atcon.AttentionConsistencyLoss(model, mask_sharpnes=8)
    with pytest.raises(ValueError, match="mask_sharpness must be > 0"):
        atcon.AttentionConsistencyLoss(model, mask_sharpness=0)
