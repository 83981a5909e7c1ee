"""Similarity measures between two batches of maps (paper Sec. 3.3 and Table 4).

Each takes two maps of equal shape ``(B, *spatial)`` and returns one value per sample ``(B,)``.
They are written to stay finite -- values and gradients -- on constant maps (a zero image, a
dead network): a map whose spread is below float resolution is treated as constant, and every
division is guarded with the "safe ``where``" pattern so the unused branch never produces
``inf * 0``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

SimilarityName = Literal["pearson", "cross_correlation", "ssim"]
SIMILARITIES: tuple[SimilarityName, ...] = get_args(SimilarityName)

# A map whose standard deviation is below this many float ulps of its RMS value is constant.
_ULPS = 64.0
_SSIM_WINDOW = 7


def _spread(v: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and a "not constant" flag over ``dims`` (kept as size-1 dims)."""
    mean = v.mean(dim=dims, keepdim=True)
    var = (v - mean).square().mean(dim=dims, keepdim=True)
    tol = (_ULPS * torch.finfo(v.dtype).eps) ** 2
    varies = var > tol * v.detach().square().mean(dim=dims, keepdim=True)
    return mean, var, varies


def standardize(v: Tensor) -> Tensor:
    """Per-sample ``(v - mean) / std`` over all non-batch dims; a constant map gives zeros.

    Shape:
        ``(B, *spatial)`` -> same.
    """
    dims = tuple(range(1, v.ndim))
    mean, var, varies = _spread(v, dims)
    std = torch.where(varies, var, torch.ones_like(var)).sqrt()
    return torch.where(varies, (v - mean) / std, torch.zeros_like(v))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each sample's flattened maps, in ``[-1, 1]``.

    Defined as 0 when either map is constant, with finite (zero) gradients there.

    Shape:
        a, b: ``(B, *spatial)``. Returns ``(B,)``.
    """
    _check_pair(a, b)
    a, b = a.flatten(1), b.flatten(1)
    ma, va, oka = _spread(a, (1,))
    mb, vb, okb = _spread(b, (1,))
    ok = (oka & okb).squeeze(1)
    # Standardise each map before the product: va * vb underflows for maps around 1e-11 (the
    # Grad-CAM of a freshly initialised deep network), sqrt(va) * sqrt(vb) does not.
    sa = torch.where(oka, va, torch.ones_like(va)).sqrt()
    sb = torch.where(okb, vb, torch.ones_like(vb)).sqrt()
    r = (((a - ma) / sa) * ((b - mb) / sb)).mean(dim=1)
    return torch.where(ok, r, torch.zeros_like(r))


def cross_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Zero-lag cross-correlation of the standardized-then-sigmoid maps, averaged over positions.

    ``mean_i sigmoid(z_a(i)) * sigmoid(z_b(i))`` with ``z`` the per-sample standardized map;
    in ``(0, 1)``, higher when both maps are high at the same positions.

    Shape:
        a, b: ``(B, *spatial)``. Returns ``(B,)``.
    """
    _check_pair(a, b)
    pa, pb = torch.sigmoid(standardize(a)), torch.sigmoid(standardize(b))
    return (pa * pb).flatten(1).mean(dim=1)


def min_max(v: Tensor) -> Tensor:
    """Rescale each sample to ``[0, 1]``; a constant map becomes all zeros (finite gradients)."""
    dims = tuple(range(1, v.ndim))
    lo, hi = v.amin(dim=dims, keepdim=True), v.amax(dim=dims, keepdim=True)
    span = hi - lo
    _, _, varies = _spread(v, dims)
    safe = torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, (v - lo) / safe, torch.zeros_like(v))


def ssim_window(spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Uniform SSIM window per axis: 7, or the largest odd size that fits a smaller axis.

    A 7x7 Grad-CAM gets a 7x7 window; r3d_18's 2x7x7 gets 1x7x7.

    Raises:
        ValueError: no axis has 3 or more positions (no neighbourhood to compare).
    """
    if max(spatial) < 3:
        raise ValueError(
            f"SSIM needs maps with at least 3 positions along some axis; got spatial size {spatial}. "
            "Use a larger input or similarity='pearson'."
        )
    return tuple(min(_SSIM_WINDOW, s if s % 2 else s - 1) for s in spatial)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity of the min-max normalised maps (2D, or 3D volumes for clips).

    Uses torchmetrics' SSIM with a uniform window sized by :func:`ssim_window`, reflect padding
    and ``data_range=1``.

    Shape:
        a, b: ``(B, h, w)`` or ``(B, t, h, w)``. Returns ``(B,)``.
    """
    _check_pair(a, b)
    if a.ndim not in (3, 4):
        raise ValueError(f"SSIM compares 2D or 3D maps, got shape {tuple(a.shape)}")
    window = ssim_window(tuple(a.shape[1:]))
    pa, pb = min_max(a)[:, None], min_max(b)[:, None]
    out = structural_similarity_index_measure(
        pa, pb, gaussian_kernel=False, kernel_size=list(window), data_range=1.0, reduction="none"
    )
    assert isinstance(out, Tensor)
    return out


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


_FUNCS = {"pearson": pearson, "cross_correlation": cross_correlation, "ssim": ssim}


def dissimilarity(name: SimilarityName, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample consistency loss for a similarity: lower is more consistent.

    ``pearson`` -> ``-r`` in ``[-1, 1]``; ``cross_correlation`` -> ``-cc`` in ``(-1, 0)``;
    ``ssim`` -> ``1 - SSIM`` in ``[0, 2]``. Computed in float32 or wider.

    Shape:
        a, b: ``(B, *spatial)``. Returns ``(B,)``.
    """
    dtype = torch.promote_types(a.dtype, torch.float32)
    sim = _FUNCS[name](a.to(dtype), b.to(dtype))
    return 1.0 - sim if name == "ssim" else -sim
