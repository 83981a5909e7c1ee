"""The ``cluttered-fashion`` benchmark: multi-label images with boxes (stands in for PASCAL VOC).

Written in VOC layout, deterministically for a seed::

    <root>/JPEGImages/<id>.jpg           RGB, image_size x image_size (128), JPEG quality 95
    <root>/Annotations/<id>.xml          VOC XML: 1-3 objects of different classes, boxes, difficult=0
    <root>/ImageSets/Main/train.txt      objects from Fashion-MNIST train images 0-49999
    <root>/ImageSets/Main/val.txt        objects from Fashion-MNIST train images 50000-59999
    <root>/ImageSets/Main/trainval.txt   train + val
    <root>/ImageSets/Main/test.txt       objects from the Fashion-MNIST test split
    <root>/classes.txt                   the 10 classes in Fashion-MNIST label order
    <root>/meta.json                     generator, version, seed, sizes (written last: marks completion)

Each image: a textured background (smooth colour noise plus grain), 4-8 small tinted fragments of
other Fashion-MNIST images that carry no label (clutter), then 1-3 objects of distinct classes, each a
Fashion-MNIST image scaled to 36-64 px (at 128 px), tinted with a random saturated colour, placed at a
random position overlapping earlier objects by at most 0.2 IoU. Boxes are the tight boxes of the
object's ink.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from atcon.data._common import prepare_out, write_meta
from atcon.data.drawing import Source, background, box_iou, fragment, ink_box, ink_layer, paste, random_colour
from atcon.data.fashion import FASHION_MNIST_CLASSES, load_fashion_mnist


@dataclass(frozen=True)
class ClutteredFashionConfig:
    """Sizes of ``cluttered-fashion``.

    Attributes:
        num_train: Images in ``train`` (few-shot pool).
        num_val: Images in ``val``.
        num_test: Images in ``test``.
        image_size: Side in pixels.
        max_objects: Objects per image are 1 to this (distinct classes).
    """

    num_train: int = 3000
    num_val: int = 500
    num_test: int = 1500
    image_size: int = 128
    max_objects: int = 3

    def scaled(self, size: float) -> ClutteredFashionConfig:
        """Counts multiplied by ``size`` (at least 1 each)."""
        n_train, n_val, n_test = (
            max(1, round(n * size)) for n in (self.num_train, self.num_val, self.num_test)
        )
        return ClutteredFashionConfig(n_train, n_val, n_test, self.image_size, self.max_objects)


def render_cluttered_image(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    image_size: int = 128,
    max_objects: int = 3,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Render one cluttered multi-object image.

    Args:
        rng: Random generator (the image is a pure function of its state).
        images: Source images ``uint8`` ``(N, h, w)`` to draw objects and clutter from.
        labels: Source class per image ``(N,)``.
        image_size: Output side.
        max_objects: At most this many objects, of distinct classes (fewer if fewer classes exist).

    Returns:
        ``(image, objects)``: ``uint8`` ``(image_size, image_size, 3)`` and ``(class, box)`` pairs with
        0-based ``(x1, y1, x2, y2)`` pixel boxes.
    """
    scale = image_size / 128
    canvas = background(rng, image_size, image_size)
    for _ in range(int(rng.integers(4, 9))):
        ink = fragment(rng, images, scale)
        paste(
            canvas,
            ink,
            random_colour(rng),
            int(rng.integers(-4, image_size - 4)),
            int(rng.integers(-4, image_size - 4)),
        )
    present = np.unique(labels)
    count = int(rng.integers(1, min(max_objects, len(present)) + 1))
    classes = rng.choice(present, size=count, replace=False)
    objects: list[tuple[int, np.ndarray]] = []
    for cls in classes:
        pool = np.flatnonzero(labels == cls)
        src = images[int(pool[rng.integers(len(pool))])]
        side = int(rng.integers(round(36 * scale), round(64 * scale) + 1))
        ink = ink_layer(src, (side, side))
        tight = ink_box(ink)
        for _attempt in range(20):
            top, left = (
                int(rng.integers(0, image_size - side + 1)),
                int(rng.integers(0, image_size - side + 1)),
            )
            box = tight + np.array([left, top, left, top], np.float32)
            if all(box_iou(box, b) <= 0.2 for _, b in objects):
                break
        else:
            continue  # no room left: fewer objects
        pasted = paste(canvas, ink, random_colour(rng), top, left)
        if pasted is not None:
            objects.append((int(cls), pasted))
    if not objects:  # never leave an image without a label
        return render_cluttered_image(rng, images, labels, image_size, max_objects)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), objects


def _voc_xml(
    image_id: str, size: int, objects: Sequence[tuple[int, np.ndarray]], classes: Sequence[str]
) -> str:
    parts = [
        "<annotation>",
        "  <folder>cluttered-fashion</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for cls, box in objects:
        # VOC stores 1-based inclusive pixel indices.
        xmin, ymin = int(box[0]) + 1, int(box[1]) + 1
        xmax, ymax = int(box[2]), int(box[3])
        parts += [
            "  <object>",
            f"    <name>{escape(classes[cls])}</name>",
            "    <pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def generate_cluttered_fashion(
    out: str | Path,
    *,
    config: ClutteredFashionConfig | None = None,
    seed: int = 0,
    train_source: Source | None = None,
    test_source: Source | None = None,
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cluttered-fashion`` in VOC layout (see the module docstring).

    Image ``k`` of a split depends only on ``(seed, split, k)``, so a larger ``config`` extends a
    smaller one instead of reshuffling it.

    Args:
        out: Output folder; created; must be empty or absent.
        config: Sizes (default :class:`ClutteredFashionConfig`).
        seed: Random seed.
        train_source: Objects for train (first 5/6) and val (last 1/6); default Fashion-MNIST train.
        test_source: Objects for test; default Fashion-MNIST test.
        classes: Name of each source label.
        progress: Called with ``(done, total)`` after each image.

    Returns:
        ``out``.
    """
    config = config or ClutteredFashionConfig()
    train_source = train_source if train_source is not None else load_fashion_mnist("train")
    test_source = test_source if test_source is not None else load_fashion_mnist("test")
    out = prepare_out(out)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cut = len(train_source[0]) * 5 // 6
    plan = [
        ("train", 0, config.num_train, train_source[0][:cut], train_source[1][:cut]),
        ("val", 1, config.num_val, train_source[0][cut:], train_source[1][cut:]),
        ("test", 2, config.num_test, test_source[0], test_source[1]),
    ]
    total, done = sum(p[2] for p in plan), 0
    ids: dict[str, list[str]] = {}
    for split, code, count, images, labels in plan:
        ids[split] = []
        for k in range(count):
            rng = np.random.default_rng([seed, code, k])
            image, objects = render_cluttered_image(
                rng, images, labels, config.image_size, config.max_objects
            )
            image_id = f"{split}_{k:06d}"
            Image.fromarray(image).save(out / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (out / "Annotations" / f"{image_id}.xml").write_text(
                _voc_xml(image_id, config.image_size, objects, classes)
            )
            ids[split].append(image_id)
            done += 1
            if progress is not None:
                progress(done, total)
    ids["trainval"] = ids["train"] + ids["val"]
    for split, names in ids.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    write_meta(
        out, "cluttered-fashion", seed, {**vars(config), "counts": {s: len(v) for s, v in ids.items()}}
    )
    return out
