"""Small tensor operations shared by maps, losses and metrics."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_to_input(cam: Tensor, x: Tensor | tuple[int, ...]) -> Tensor:
    """Resize a Grad-CAM ``(B, *layer spatial)`` to the input's spatial size.

    Uses linear / bilinear / trilinear interpolation by rank, including the time axis of clips
    (r3d_18's ``layer4`` has ``T/8`` frames). Alignment is ``align_corners=False``: each map cell
    is treated as covering an equal block of input positions, its value placed at the block's
    centre, which is how strided convolutions and pooling subsample; values beyond the outermost
    centres are clamped (edge-replicated), never extrapolated.

    Args:
        cam: ``(B, *s)`` map.
        x: the input batch ``(B, C, *S)`` or its spatial size ``S``.

    Returns:
        ``(B, *S)`` in the map's dtype and device; differentiable.
    """
    size = tuple(x.shape[2:]) if isinstance(x, Tensor) else tuple(x)
    if len(size) != cam.ndim - 1 or len(size) not in _MODES:
        raise ValueError(f"cannot resize a map of shape {tuple(cam.shape)} to spatial size {size}")
    if tuple(cam.shape[1:]) == size:
        return cam
    return F.interpolate(cam[:, None], size=size, mode=_MODES[len(size)], align_corners=False)[:, 0]
