"""Files named by the user: folders expanded by suffix, images read as one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atcon.data import IMAGE_SUFFIXES, VIDEO_SUFFIXES, collect_files, load_images


def test_collect_files(tmp_path: Path) -> None:
    (tmp_path / "b.PNG").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "clip.mp4").write_bytes(b"")
    direct = tmp_path / "notes.txt"
    found = collect_files([tmp_path, direct], IMAGE_SUFFIXES)
    assert [f.name for f in found] == ["a.jpg", "b.PNG", "notes.txt"]
    assert [f.name for f in collect_files([tmp_path], VIDEO_SUFFIXES, "video")] == ["clip.mp4"]
    with pytest.raises(FileNotFoundError, match="no such image or folder"):
        collect_files([tmp_path / "nope"], IMAGE_SUFFIXES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no video files found"):
        collect_files([empty], VIDEO_SUFFIXES, "video")


def test_load_images_values_and_errors(tmp_path: Path) -> None:
    pixels = np.zeros((6, 6, 3), np.uint8)
    pixels[:, :, 0] = 255
    pixels[:3, :, 2] = 51
    Image.fromarray(pixels).save(tmp_path / "red.png")
    x, names = load_images([tmp_path], 6)
    assert names == ["red.png"] and x.shape == (1, 3, 6, 6)
    torch.testing.assert_close(x[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    half, _ = load_images([tmp_path / "red.png"], 3)
    assert half.shape == (1, 3, 3, 3) and bool((half[0, 0] == 1).all())
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_images([tmp_path / "bad.jpg"], 6)
