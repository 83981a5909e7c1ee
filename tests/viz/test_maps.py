"""Figures: the paper-style comparison, per-frame clip grids and GIFs (Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path

import torch

from atcon import viz


def maps(name: str, b: int, size: int, masks: bool) -> viz.ModelMaps:
    g = torch.Generator().manual_seed(len(name))
    return viz.ModelMaps(
        name,
        torch.rand(b, size, size, generator=g),
        torch.randn(b, 3, size, size, generator=g),
        [f"class{i}" for i in range(b)],
        torch.rand(b, size, size, generator=g) if masks else None,
        torch.rand(b, generator=g),
    )


def test_comparison_figure_layout() -> None:
    images = torch.randn(2, 3, 16, 16)
    fig = viz.comparison_figure(images, ["cat", ""], [maps("base", 2, 16, True), maps("new", 2, 16, False)])
    axes = fig.axes
    assert len(axes) == 2 * (1 + 3 + 2)
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "GT: cat" and titles[6] == "input"
    assert titles[1].startswith("base: class0, r=") and titles[1].endswith("Grad-CAM")
    assert titles[3] == "base\nmask P" and titles[4].startswith("new: class0")
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_overlay_and_colorize_ranges() -> None:
    img = torch.rand(8, 8, 3)
    out = viz.overlay(img, torch.randn(8, 8) * 5)
    assert out.shape == (8, 8, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert viz.colorize(torch.zeros(4, 4)).shape == (4, 4, 3)


def test_clip_grid_and_gif(tmp_path: Path) -> None:
    from PIL import Image

    clip = torch.randn(3, 6, 10, 12)
    cam = torch.rand(6, 10, 12)
    fig = viz.clip_frames_figure(clip, cam, torch.randn(3, 6, 10, 12), "title", max_frames=4)
    assert len(fig.axes) == 3 * 4 and fig.get_suptitle() == "title"
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert viz.frame_indices(16, 4) == [0, 5, 10, 15] and viz.frame_indices(3, 8) == [0, 1, 2]
    path = viz.clip_gif(clip, cam, tmp_path / "a" / "clip.gif", scale=2)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 6
        assert im.size == (2 * 2 * 12, 2 * 10)  # frame and overlay side by side, upscaled


def test_attention_figure_unchanged(tmp_path: Path) -> None:
    fig = viz.attention_figure(
        torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), torch.randn(2, 3, 8, 8), None, ["a", "b"]
    )
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == "a"
    assert viz.save_figure(fig, tmp_path / "f.png").stat().st_size > 0
