"""The soft mask of Eq. 6 and its documented variants."""

from __future__ import annotations

import torch

from atcon.consistency import saliency, soft_mask


def test_default_mask_is_standardized_sigmoid() -> None:
    s = torch.tensor([[[0.0, 1.0], [2.0, 5.0]]])
    mean, std = s.mean(), s.std(unbiased=False)
    assert torch.allclose(soft_mask(s), torch.sigmoid((s - mean) / std))
    # Scale invariant: the raw gradient magnitude does not matter.
    assert torch.allclose(soft_mask(1e-6 * s), soft_mask(s), atol=1e-6)


def test_variance_and_reference_variants() -> None:
    s = torch.tensor([[[0.0, 1.0], [2.0, 5.0]]])
    mean, var = s.mean(), s.var(unbiased=False)
    assert torch.allclose(soft_mask(s, scale="variance"), torch.sigmoid((s - mean) / var))
    ref = soft_mask(s, scale="none", center=0.5, sharpness=8.0)
    assert torch.allclose(ref, torch.sigmoid(8 * (s - (mean + var.sqrt() / 2))))


def test_statistics_are_per_sample() -> None:
    s = torch.stack([torch.arange(4.0).view(2, 2), 100 + 10 * torch.arange(4.0).view(2, 2)])
    m = soft_mask(s)
    assert torch.allclose(m[0], m[1])


def test_constant_saliency_gives_half_and_finite_grads() -> None:
    s = torch.zeros(2, 4, 4, requires_grad=True)
    for scale in ("std", "variance", "none"):
        m = soft_mask(s, scale=scale)  # type: ignore[arg-type]
        assert torch.allclose(m, torch.full_like(m, 0.5))
        (g,) = torch.autograd.grad(m.sum(), s)
        assert torch.isfinite(g).all()


def test_saliency_sums_abs_over_channels() -> None:
    gb = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert saliency(gb).tolist() == [[[4.0, 2.5]]]
    assert saliency(torch.randn(2, 3, 4, 5, 6)).shape == (2, 4, 5, 6)
