"""Figures of attention maps: input, Grad-CAM overlay, Guided Backprop, mask; clip grids and GIFs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from atcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from atcon.viz._pyplot import pyplot

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def to_display(
    image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
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
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> None:
    """Draw input, Grad-CAM overlay, |Guided Backprop| and the mask on four axes.

    ``mean``/``std``: the normalisation of ``image``, undone for display.

    Shape:
        image, gb: ``(C, H, W)``; cam: ``(H, W)`` (already upsampled); mask: ``(H, W)`` or None.
    """
    shown = to_display(image, mean, std)
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
    images: Tensor,
    cams: Tensor,
    gbs: Tensor,
    masks: Tensor | None,
    titles: Sequence[str],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Figure:
    """One row per image: input, Grad-CAM overlay, Guided Backprop, mask.

    ``mean``/``std``: the normalisation of ``images``, undone for display.

    Shape:
        images, gbs: ``(B, C, H, W)``; cams: ``(B, H, W)``; masks: ``(B, H, W)`` or None.
    """
    plt = pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i in range(n):
        mask = None if masks is None else masks[i]
        attention_row(axes[i], images[i], cams[i], gbs[i], mask, titles[i], mean=mean, std=std)
    fig.tight_layout()
    return fig


# --- Comparison figures (paper Figures 1-2), clip grids and GIFs -------------------------------


def colorize(m: Tensor, cmap: str = "jet") -> Tensor:
    """A ``[0, 1]`` map as RGB through a matplotlib colormap.

    Shape:
        m: ``(*S)`` -> ``(*S, 3)`` float in ``[0, 1]`` on the CPU.
    """
    import matplotlib

    rgba = matplotlib.colormaps[cmap](m.detach().float().cpu().clamp(0, 1).numpy())
    return torch.from_numpy(rgba[..., :3]).float()


def overlay(image: Tensor, cam: Tensor, alpha: float = 0.45, cmap: str = "jet") -> Tensor:
    """Blend a (min-max normalised) map over a display image.

    Args:
        image: ``(H, W, 3)`` in ``[0, 1]`` (see :func:`to_display`).
        cam: ``(H, W)`` map at the image's size, any range.
        alpha: weight of the colour map.
        cmap: matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` in ``[0, 1]``.
    """
    return ((1 - alpha) * image + alpha * colorize(normalise(cam), cmap)).clamp(0, 1)


@dataclass
class ModelMaps:
    """One model's maps for a batch, for :func:`comparison_figure`.

    Attributes:
        name: model label (column heading).
        cams: Grad-CAMs upsampled to the input, ``(B, H, W)``.
        gbs: Guided Backprop, ``(B, C, H, W)``.
        predictions: predicted label text per item.
        masks: consistency masks ``(B, H, W)``, or None to leave the column out.
        scores: consistency score per item (shown with the prediction), or None.
    """

    name: str
    cams: Tensor
    gbs: Tensor
    predictions: Sequence[str]
    masks: Tensor | None = None
    scores: Tensor | None = None

    def item(self, i: int) -> ModelMaps:
        """The maps of item ``i`` alone (a batch of one)."""
        return ModelMaps(
            self.name,
            self.cams[i : i + 1],
            self.gbs[i : i + 1],
            [self.predictions[i]],
            None if self.masks is None else self.masks[i : i + 1],
            None if self.scores is None else self.scores[i : i + 1],
        )

    def frame(self, t: int) -> ModelMaps:
        """Frame ``t`` of clip maps, as image maps (cams ``(B, T, H, W)`` -> ``(B, H, W)``)."""
        return ModelMaps(
            self.name,
            self.cams[:, t],
            self.gbs[:, :, t],
            self.predictions,
            None if self.masks is None else self.masks[:, t],
            self.scores,
        )


def comparison_figure(
    images: Tensor,
    ground_truth: Sequence[str],
    models: Sequence[ModelMaps],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    panel: float = 2.0,
) -> Figure:
    """Side-by-side attention maps of several models, as in the paper's Figures 1-2.

    One row per item. Columns: the input titled with its ground truth, then for each model its
    Grad-CAM overlay (titled with the model's prediction and consistency score), its Guided
    Backprop (|GB| summed over channels) and, when given, its mask.

    Args:
        images: normalised inputs (for clips pass one frame per item).
        ground_truth: ground-truth label text per item (``""`` when unknown).
        models: the models' maps, one :class:`ModelMaps` each.
        mean: normalisation mean of the inputs.
        std: normalisation std of the inputs.
        panel: size of one panel in inches.

    Shape:
        images: ``(B, C, H, W)``; each model's cams ``(B, H, W)``, gbs ``(B, C, H, W)``.
    """
    plt = pyplot()
    n = images.shape[0]
    per_model = [2 + (m.masks is not None) for m in models]
    cols = 1 + sum(per_model)
    fig, axes = plt.subplots(n, cols, figsize=(panel * cols, panel * 1.12 * n), squeeze=False)
    for i in range(n):
        shown = to_display(images[i], mean, std)
        ax = axes[i][0]
        ax.imshow(shown.numpy())
        ax.set_title(f"GT: {ground_truth[i]}" if ground_truth[i] else "input", fontsize=8)
        c = 1
        for m in models:
            score = "" if m.scores is None else f", r={float(m.scores[i]):+.2f}"
            axes[i][c].imshow(overlay(shown, m.cams[i]).numpy())
            axes[i][c].set_title(f"{m.name}: {m.predictions[i]}{score}\nGrad-CAM", fontsize=7)
            axes[i][c + 1].imshow(normalise(m.gbs[i].abs().sum(0)).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i][c + 1].set_title(f"{m.name}\nGuided Backprop", fontsize=7)
            if m.masks is not None:
                axes[i][c + 2].imshow(m.masks[i].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                axes[i][c + 2].set_title(f"{m.name}\nmask P", fontsize=7)
            c += 2 + (m.masks is not None)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` evenly spaced frame indices."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    step = (num_frames - 1) / (max_frames - 1)
    return [round(k * step) for k in range(max_frames)]


def clip_frames_figure(
    clip: Tensor,
    cam: Tensor,
    gb: Tensor | None = None,
    title: str = "",
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    max_frames: int = 8,
    panel: float = 1.5,
) -> Figure:
    """Per-frame grid of a clip: frames, Grad-CAM overlays and (optionally) Guided Backprop.

    Args:
        clip: normalised clip.
        cam: Grad-CAM upsampled to the clip (time included).
        gb: Guided Backprop of the clip, or None.
        title: figure title (e.g. ground truth, prediction, score).
        mean: normalisation mean.
        std: normalisation std.
        max_frames: frames shown (evenly spaced).
        panel: size of one panel in inches.

    Shape:
        clip, gb: ``(C, T, H, W)``; cam: ``(T, H, W)``.
    """
    plt = pyplot()
    idx = frame_indices(clip.shape[1], max_frames)
    rows = 2 + (gb is not None)
    cam_n = normalise(cam)  # one scale for the whole clip, so frames compare
    fig, axes = plt.subplots(rows, len(idx), figsize=(panel * len(idx), panel * rows + 0.4), squeeze=False)
    gb_s = normalise(gb.abs().sum(0)) if gb is not None else None
    for j, t in enumerate(idx):
        shown = to_display(clip[:, t], mean, std)
        axes[0][j].imshow(shown.numpy())
        axes[0][j].set_title(f"frame {t}", fontsize=7)
        blend = ((1 - 0.45) * shown + 0.45 * colorize(cam_n[t])).clamp(0, 1)
        axes[1][j].imshow(blend.numpy())
        if gb_s is not None:
            axes[2][j].imshow(gb_s[t].numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[1][0].set_title("Grad-CAM", fontsize=7, loc="left")
    if gb is not None:
        axes[2][0].set_title("Guided Backprop", fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def clip_gif(
    clip: Tensor,
    cam: Tensor,
    path: str | Path,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    fps: float = 4.0,
    scale: int = 2,
    alpha: float = 0.45,
) -> Path:
    """Write an animated GIF of a clip: each frame next to its Grad-CAM overlay.

    The map is normalised over the whole clip, so brightness compares across frames.

    Args:
        clip: normalised clip.
        cam: Grad-CAM upsampled to the clip.
        path: output ``.gif`` file.
        mean: normalisation mean.
        std: normalisation std.
        fps: frames per second of the animation.
        scale: integer upscaling of the frames (nearest neighbour) for visibility.
        alpha: weight of the colour map.

    Returns:
        The path written.

    Shape:
        clip: ``(C, T, H, W)``; cam: ``(T, H, W)``.
    """
    from PIL import Image

    cam_n = normalise(cam)
    frames = []
    for t in range(clip.shape[1]):
        shown = to_display(clip[:, t], mean, std)
        blend = ((1 - alpha) * shown + alpha * colorize(cam_n[t])).clamp(0, 1)
        pair = torch.cat([shown, blend], dim=1)  # side by side along the width
        arr = (pair * 255).round().to(torch.uint8).numpy()
        im = Image.fromarray(arr)
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path
