"""The shared item type: every image reader's target has exactly the keys ``Target`` declares."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import tv_tensors

from atcon.data import voc
from atcon.data.folders import ImageFolderDataset
from atcon.data.item import IMAGE_TARGET_KEYS, Target
from atcon.data.voc import VOCDataset
from tests.data.userdata import single_label_set, write_folders


def test_voc_target_has_the_declared_keys(voc_root: Path) -> None:
    image, target = VOCDataset(voc_root, "train")[0]
    assert tuple(target) == IMAGE_TARGET_KEYS
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["labels"].shape == (20,) and target["orig_size"].tolist() == [40, 60]
    assert image.shape == (3, 40, 60)


def test_single_label_target_adds_label(tmp_path: Path) -> None:
    ds = ImageFolderDataset(write_folders(tmp_path / "f", single_label_set()))
    _, target = ds[0]
    assert tuple(target) == (*IMAGE_TARGET_KEYS, "label")
    assert target["label"].dtype == torch.int64 and target["labels"][target["label"]] == 1


def test_target_is_still_importable_from_voc() -> None:
    assert voc.Target is Target
