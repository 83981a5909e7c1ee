"""Image and video files named by the user: which suffixes count, folders expanded, images read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) read as images when a folder is given."""

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
"""File suffixes (lower case) read as video clips when a folder is given."""


def collect_files(paths: Sequence[str | Path], suffixes: Sequence[str], what: str = "image") -> list[Path]:
    """Files given directly, plus the files with one of ``suffixes`` inside given folders (sorted).

    Args:
        paths: files and folders (folders are not searched recursively).
        suffixes: lower-case suffixes kept from folders; files given directly are kept as they are.
        what: noun for error messages (``"image"``, ``"video"``).

    Raises:
        FileNotFoundError: a path does not exist, or nothing was found.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in suffixes)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such {what} or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no {what} files found in {', '.join(map(str, paths))}")
    return files


def skipped_files(paths: Sequence[str | Path], suffixes: Sequence[str]) -> list[Path]:
    """The files inside the given folders that :func:`collect_files` leaves out (another suffix).

    Hidden files (``.DS_Store``) are not counted; files given directly are never skipped.

    Args:
        paths: files and folders, as given to :func:`collect_files`.
        suffixes: the lower-case suffixes that were kept.
    """
    return [
        f
        for p in map(Path, paths)
        if p.is_dir()
        for f in sorted(p.iterdir())
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in suffixes
    ]


def load_images(
    paths: Sequence[str | Path], size: int, interpolation: str = "bilinear"
) -> tuple[Tensor, list[str]]:
    """Read image files (and the image files inside folders), resized to a square batch.

    Files are decoded by the reader training uses (:func:`~atcon.data._common.read_image_rgb`:
    16-bit and float greyscale kept in range), so a command sees an image as training does.

    Args:
        paths: image files and folders.
        size: output side in pixels (antialiased resize, aspect ratio not kept).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (the network's own, see
            :func:`atcon.models.model_preprocess`).

    Returns:
        ``(images, names)``: float images in ``[0, 1]`` and each file's name.

    Shape:
        images: ``(N, 3, size, size)``.

    Raises:
        FileNotFoundError: a path does not exist, or no image was found.
        ValueError: a file is not a readable image.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from atcon.data._common import DataError, read_image_rgb

    mode = InterpolationMode(interpolation)
    files = collect_files(paths, IMAGE_SUFFIXES, "image")
    out = []
    for f in files:
        try:
            img = read_image_rgb(Path(f))
        except DataError as err:
            reason = str(err).removeprefix(f"{f}: ")
            raise ValueError(f"cannot read image {f}: {reason}") from None
        img = TF.to_dtype(img, torch.float32, scale=True)
        out.append(TF.resize(img, [size, size], interpolation=mode, antialias=True).clamp(0, 1))
    return torch.stack(out), [f.name for f in files]
