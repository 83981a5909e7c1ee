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

from typing import Literal

import torch
from torch import Tensor

from atcon.consistency.similarity import _spread

MaskScale = Literal["std", "variance", "none"]


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
