"""Tiny VOC-layout and video fixtures, written into a temporary folder by each test that needs them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

# (image id, (width, height), [(class, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)])
VOC_IMAGES = [
    ("img1", (60, 40), [("cat", (11, 6, 30, 25), False), ("dog", (31, 1, 60, 40), True)]),
    ("img2", (50, 50), [("dog", (1, 1, 20, 20), False), ("person", (21, 21, 50, 50), False)]),
    ("img3", (40, 30), [("cat", (5, 5, 15, 15), False), ("person", (2, 2, 8, 8), True)]),
    ("img4", (30, 40), [("person", (3, 4, 20, 30), False)]),
    ("img5", (32, 32), [("cat", (1, 1, 32, 32), False), ("dog", (4, 4, 9, 9), False)]),
    ("img6", (32, 32), [("dog", (2, 2, 9, 9), False), ("person", (10, 10, 20, 20), False)]),
]


def voc_xml(
    image_id: str, size: tuple[int, int], objects: Sequence[tuple[str, tuple[int, ...], bool]]
) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects
    )
    return (
        f"<annotation><filename>{image_id}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def pixel_pattern(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC2012-like tree with 6 good images, split train (4) / val (2), and bad files in other splits.

    ``img1`` is stored as PNG (named in <filename>) so its pixels can be checked exactly.
    """
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for k, (image_id, size, objects) in enumerate(VOC_IMAGES):
        pixels = pixel_pattern(*size, seed=k)
        if image_id == "img1":
            Image.fromarray(pixels).save(root / "JPEGImages" / "img1.png")
            xml = voc_xml(image_id, size, objects).replace("img1.jpg", "img1.png")
        else:
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
            xml = voc_xml(image_id, size, objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    # Bad files, reachable only through their own split files.
    Image.fromarray(pixel_pattern(20, 20, 9)).save(root / "JPEGImages" / "corrupt.jpg")
    data = (root / "JPEGImages" / "corrupt.jpg").read_bytes()
    (root / "JPEGImages" / "corrupt.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (root / "Annotations" / "corrupt.xml").write_text(
        voc_xml("corrupt", (20, 20), [("cat", (1, 1, 5, 5), False)])
    )
    Image.fromarray(pixel_pattern(20, 20, 10)).save(root / "JPEGImages" / "broken.jpg")
    (root / "Annotations" / "broken.xml").write_text("<annotation><size><width>20</width>")
    main = root / "ImageSets" / "Main"
    (main / "train.txt").write_text("img1\nimg2\nimg3\nimg4\n")
    (main / "val.txt").write_text("img5\nimg6\n")
    (main / "withcorrupt.txt").write_text("img1\ncorrupt\nimg2\n")
    (main / "withbroken.txt").write_text("img1\nbroken\n")
    return root


def write_video(
    path: Path,
    num_frames: int,
    fps: int = 8,
    size: tuple[int, int] = (32, 48),
    value: Callable[[int], int] = lambda k: 6 * k,
) -> Path:
    """Write a lossless H.264 video whose frame ``k`` is uniformly grey at ``value(k)`` (so frames can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for k in range(num_frames):
            frame = np.full((height, width, 3), value(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def clip_writer() -> Callable[..., Path]:
    return write_video


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
