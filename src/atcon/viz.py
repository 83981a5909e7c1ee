"""Figures of attention maps (matplotlib, imported lazily; the core never imports this module)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_display(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Undo normalisation of a ``(C, H, W)`` image; returns ``(H, W, C)`` in ``[0, 1]`` on the CPU."""
    img = image.detach().float().cpu()
    if img.shape[0] == len(mean):
        img = img * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return img.clamp(0, 1).permute(1, 2, 0)


def normalise(m: Tensor) -> Tensor:
    """Min-max rescale a map to ``[0, 1]`` for display (constant maps become zeros)."""
    m = m.detach().float().cpu()
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else torch.zeros_like(m)


def attention_row(
    axes: Sequence[object],
    image: Tensor,
    cam: Tensor,
    gb: Tensor,
    mask: Tensor | None,
    title: str = "",
) -> None:
    """Draw input, Grad-CAM overlay, |Guided Backprop| and the mask on four axes.

    Shape:
        image, gb: ``(C, H, W)``; cam: ``(H, W)`` (already upsampled); mask: ``(H, W)`` or None.
    """
    shown = to_display(image)
    panels = [
        (shown, None, title or "input"),
        (shown, normalise(cam), "Grad-CAM"),
        (normalise(gb.abs().sum(0)), None, "Guided Backprop"),
        (mask.detach().float().cpu() if mask is not None else None, None, "mask P"),
    ]
    for ax, (base, over, label) in zip(axes, panels):
        ax.set_axis_off()  # type: ignore[attr-defined]
        ax.set_title(label, fontsize=8)  # type: ignore[attr-defined]
        if base is None:
            continue
        ax.imshow(base.numpy(), cmap="gray" if base.ndim == 2 else None, vmin=0, vmax=1)  # type: ignore[attr-defined]
        if over is not None:
            ax.imshow(over.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)  # type: ignore[attr-defined]


def attention_figure(
    images: Tensor, cams: Tensor, gbs: Tensor, masks: Tensor | None, titles: Sequence[str]
) -> Figure:
    """One row per image: input, Grad-CAM overlay, Guided Backprop, mask.

    Shape:
        images, gbs: ``(B, C, H, W)``; cams: ``(B, H, W)``; masks: ``(B, H, W)`` or None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i in range(n):
        attention_row(axes[i], images[i], cams[i], gbs[i], None if masks is None else masks[i], titles[i])
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure (PNG/PDF/SVG by suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
