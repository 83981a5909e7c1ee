"""Similarity measures: oracles, constant maps, SSIM windows."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import pearsonr

from atcon.consistency import cross_correlation, dissimilarity, min_max, pearson, ssim, standardize
from atcon.consistency.similarity import ssim_window


def test_pearson_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    b = 0.3 * a + torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    ours = pearson(a, b)
    for i in range(5):
        ref = pearsonr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)
    # Scale and shift invariant, sign-aware.
    assert torch.allclose(pearson(3 * a + 1, b), ours)
    assert torch.allclose(pearson(-a, b), -ours)


@pytest.mark.parametrize("const", [0.0, 2.5, 1e-8])
def test_constant_map_gives_zero_with_finite_grads(const: float) -> None:
    a = torch.full((2, 7, 7), const, requires_grad=True)
    b = torch.randn(2, 7, 7, requires_grad=True)
    for name in ("pearson", "cross_correlation", "ssim"):
        loss = dissimilarity(name, a, b).sum() + dissimilarity(name, b, a).sum()
        ga, gb = torch.autograd.grad(loss, [a, b])
        assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all(), name
    assert torch.equal(pearson(a, b), torch.zeros(2))
    assert torch.equal(standardize(a), torch.zeros_like(a))
    assert torch.equal(min_max(a), torch.zeros_like(a))


def test_cross_correlation_prefers_aligned_maps() -> None:
    a = torch.zeros(1, 8, 8)
    a[0, 2:4, 2:4] = 1
    shifted = torch.roll(a, shifts=(4, 4), dims=(1, 2))
    assert cross_correlation(a, a) > cross_correlation(a, shifted)
    z = torch.sigmoid(standardize(a))
    assert torch.allclose(cross_correlation(a, a), (z * z).mean(dim=(1, 2)))


def test_ssim_identical_and_ordering() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 7, 7, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    assert torch.allclose(ssim(a, 5 * a + 2), torch.ones(2), atol=1e-5)  # min-max normalised first
    noisy = a + 0.3 * torch.rand(2, 7, 7, generator=g)
    other = torch.rand(2, 7, 7, generator=g)
    assert (ssim(a, noisy) > ssim(a, other)).all()
    clip = torch.rand(2, 2, 7, 7, generator=g)
    assert torch.allclose(ssim(clip, clip), torch.ones(2), atol=1e-5)


def test_ssim_window_fits_or_explains() -> None:
    assert ssim_window((7, 7)) == (7, 7)
    assert ssim_window((2, 7, 7)) == (1, 7, 7)
    assert ssim_window((4, 16)) == (3, 7)
    with pytest.raises(ValueError, match="at least 3 positions"):
        ssim(torch.rand(1, 2, 2), torch.rand(1, 2, 2))


def test_dissimilarity_lower_is_more_consistent() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 9, 9, generator=g)
    close = a + 0.05 * torch.rand(3, 9, 9, generator=g)
    far = torch.rand(3, 9, 9, generator=g)
    for name in ("pearson", "cross_correlation", "ssim"):
        assert (dissimilarity(name, a, close) < dissimilarity(name, a, far)).all(), name


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        pearson(torch.rand(1, 3, 3), torch.rand(1, 3, 4))


def test_pearson_of_tiny_maps_does_not_underflow() -> None:
    from atcon.consistency.similarity import pearson

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 5, generator=g), torch.randn(3, 5, 5, generator=g)
    r = pearson(a, b)
    tiny = pearson(a * 1e-11, b * 1e-12)  # float32: the product of the variances underflows to 0
    assert torch.isfinite(tiny).all()
    assert torch.allclose(tiny, r, atol=1e-5)
