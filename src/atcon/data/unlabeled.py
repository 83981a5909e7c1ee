"""Unlabeled images or clips: every media file under a folder, without labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from atcon.data._common import read_image_rgb
from atcon.data.files import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from atcon.data.video import decode_clip


class UnlabeledFolder(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Every image (or video) file under a folder, recursively, without labels.

    Items are ``(x, {})`` with the same transform as the labeled training set.
    """

    def __init__(self, root: str | Path, transform: Any, *, video: bool, frame_size: int = 80) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"unlabeled folder not found: {self.root}")
        suffixes = VIDEO_SUFFIXES if video else IMAGE_SUFFIXES
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in suffixes)
        if not self.files:
            raise FileNotFoundError(f"no {'video' if video else 'image'} files under {self.root}")
        self.transform, self.video, self.frame_size = transform, video, frame_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        from torchvision import tv_tensors

        path = self.files[index]
        if self.video:
            frames, _ = decode_clip(path, size=(self.frame_size, self.frame_size))
            clip = self.transform(tv_tensors.Video(frames))
            return torch.as_tensor(clip).permute(1, 0, 2, 3).contiguous(), {}
        image = self.transform(tv_tensors.Image(read_image_rgb(path)))
        return torch.as_tensor(image), {}
