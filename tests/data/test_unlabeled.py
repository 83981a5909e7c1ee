"""Unlabeled folders of images or clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atcon.data.unlabeled import UnlabeledFolder


def test_unlabeled_folder_reads_images_recursively(tmp_path: Path) -> None:
    from atcon.data import image_eval_transform

    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, path in enumerate([tmp_path / "x.png", tmp_path / "a" / "b" / "y.JPG"]):
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(path, format="PNG" if i == 0 else "JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = UnlabeledFolder(tmp_path, image_eval_transform(8), video=False)
    assert [p.name for p in folder.files] == ["y.JPG", "x.png"]
    x, target = folder[1]
    assert x.shape == (3, 8, 8) and target == {}
    with pytest.raises(FileNotFoundError, match="no video files"):
        UnlabeledFolder(tmp_path / "a" / "b" / "..", image_eval_transform(8), video=True)
    with pytest.raises(FileNotFoundError, match="unlabeled folder not found"):
        UnlabeledFolder(tmp_path / "missing", image_eval_transform(8), video=False)
