"""The soft input mask of the consistency loss (paper Eq. 6, after Wang et al. 2017).

``P(i) = sigmoid(sharpness * (S(i) - c) / scale)`` with ``c = mean(S) + center * std(S)``, the
statistics taken per sample over all positions of the saliency ``S``:

* ``scale="std"`` (default): ``scale = std(S)``; the mask is invariant to the scale of ``S``,
  which for raw gradients varies by orders of magnitude between networks and during training;
* ``scale="variance"``: the paper's literal wording (``sigma`` "the variance");
* ``scale="none"``: no normalisation. With ``center=0.5, sharpness=8`` this is the published
  reference code's mask.

A constant saliency gives ``P = sigmoid(0) = 0.5`` everywhere, with finite gradients.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from atcon.consistency.similarity import _spread

MaskScale = Literal["std", "variance", "none"]
MASK_SCALES: tuple[MaskScale, ...] = get_args(MaskScale)


def saliency(gb: Tensor) -> Tensor:
    """Channel-summed absolute Guided Backprop: ``S = sum_c |GB_c|``.

    Shape:
        gb: ``(B, C, *spatial)``. Returns ``(B, *spatial)``.
    """
    return gb.abs().sum(dim=1)


def soft_mask(s: Tensor, *, scale: MaskScale = "std", center: float = 0.0, sharpness: float = 1.0) -> Tensor:
    """Soft mask from a map (Eq. 6); see the module docstring for the options.

    Shape:
        s: ``(B, *spatial)``. Returns ``(B, *spatial)`` in ``(0, 1)``.
    """
    dims = tuple(range(1, s.ndim))
    mean, var, varies = _spread(s, dims)
    var = torch.where(varies, var, torch.ones_like(var))
    std = var.sqrt()
    z = s - (mean + center * std) if center else s - mean
    if scale == "std":
        z = z / std
    elif scale == "variance":
        z = z / var
    z = torch.where(varies, z, torch.zeros_like(z))
    return torch.sigmoid(sharpness * z)


def sobel_saliency(x: Tensor) -> Tensor:
    """Sobel edge magnitude of the input, summed over channels (frames of clips separately).

    A mask source that knows nothing about the network: the "any edge mask" control.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``. Returns ``(B, H, W)`` or ``(B, T, H, W)``.
    """
    b, c = x.shape[:2]
    frames = x.movedim(1, 2).reshape(-1, c, *x.shape[-2:]) if x.ndim == 5 else x
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([k, k.T]).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3), grouped per channel
    g = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), kernels, groups=c)
    mag = g.unflatten(1, (c, 2)).square().sum(2).sqrt().sum(1)
    return mag.reshape(b, *x.shape[2:]) if x.ndim == 5 else mag


def random_smooth_saliency(x: Tensor, cell: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """A random smooth map: uniform noise on a coarse grid (one value per ``cell`` pixels, at
    least 2 per axis), interpolated to the input's resolution.

    The "any smooth blob mask" control. Draws from ``generator`` (or the global RNG) on ``x``'s
    device.

    Shape:
        x: ``(B, C, *spatial)``. Returns ``(B, *spatial)``.
    """
    spatial = tuple(x.shape[2:])
    coarse = tuple(max(2, n // cell) for n in spatial)
    noise = torch.rand((x.shape[0], 1, *coarse), generator=generator, device=x.device, dtype=x.dtype)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return F.interpolate(noise, size=spatial, mode=mode, align_corners=False).squeeze(1)
