"""The ``shortcut-fashion`` benchmark: an object and a class-correlated cue (a shortcut to learn).

Each image holds one Fashion-MNIST object (its class is the label) on smooth colour noise, and a
small *cue* elsewhere in the image, drawn from a class of its own. In the training and validation
images the cue's class is the label's in a share ``rho`` of the images and one of the other
classes (uniformly) otherwise, so a network can reach ``rho`` accuracy by reading the cue alone;
in the test images the cue's class is uniform over all classes (conflicting with the label in
about 90% of them), plus a cue-aligned test set, so the gap between the two shows how much a
network relies on the cue. The medical case it stands for: a hospital's marker or text token on
an X-ray that predicts the finding.

Cue kinds (``cue``):

* ``"patch"``: a solid square in the colour of its class (ten hues);
* ``"marker"``: a bright glyph of its class (the digits 0-9 in a 5 x 7 font) on a dark square,
  like a radiograph's lead marker.

Written as a CSV image manifest (:mod:`atcon.data.manifest`), so every reader of the user's own
data takes it unchanged::

    <root>/images/<id>.jpg     RGB, image_size x image_size (128), JPEG quality 95
    <root>/manifest.csv        path, labels, split (train/val/test), boxes (the object's),
                               avoid (the cue's square), group (aligned/conflicting)
    <root>/reference-val.csv   a cue-free validation set (cue uniform, split "val"): a labeled
                               reference for what selection on unbiased labels would choose
    <root>/classes.txt         the 10 Fashion-MNIST classes
    <root>/meta.json           generator, version, seed, settings (written last: marks completion)

Ids: ``train_000000``, ``val_...``, ``test_...`` (cue uniform), ``testaligned_...`` (cue = label,
also in the test split) and ``valfree_...`` (``reference-val.csv``). Objects of ``train`` come
from Fashion-MNIST training images 0-49999, of ``val`` and ``valfree`` from 50000-59999, of the
test sets from the test split.
"""

from __future__ import annotations

import colorsys
import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from atcon.data._common import prepare_out, write_meta
from atcon.data.drawing import Source, background, ink_box, ink_layer, paste, random_colour
from atcon.data.fashion import FASHION_MNIST_CLASSES, load_fashion_mnist

CueKind = Literal["patch", "marker"]
CUE_KINDS: tuple[CueKind, ...] = ("patch", "marker")

# The glyphs of the marker cue: digits in a 5 x 7 bitmap font, one row per string.
_GLYPHS = (
    ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
)


@dataclass(frozen=True)
class ShortcutFashionConfig:
    """Settings of ``shortcut-fashion``.

    Attributes:
        num_train: Images in ``train`` (few-shot pool and unlabeled pool).
        num_val: Images in ``val`` (biased like ``train``).
        num_test: Test images whose cue is uniform over the classes.
        num_test_aligned: Test images whose cue matches the label.
        num_val_free: Images of the cue-free reference validation set (``reference-val.csv``).
        image_size: Side in pixels.
        rho: Share of ``train``/``val`` images whose cue is the label's (the cue's strength).
        cue: ``"patch"`` (a square in its class's colour) or ``"marker"`` (a bright glyph).
        cue_size: Side of the cue's square in pixels (at ``image_size``).
    """

    num_train: int = 3000
    num_val: int = 500
    num_test: int = 1500
    num_test_aligned: int = 500
    num_val_free: int = 500
    image_size: int = 128
    rho: float = 0.95
    cue: CueKind = "patch"
    cue_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        if self.cue not in CUE_KINDS:
            raise ValueError(f"cue must be one of {', '.join(CUE_KINDS)}, got {self.cue!r}")
        if not 4 <= self.cue_size <= self.image_size // 4:
            raise ValueError(f"cue_size must be in [4, image_size / 4], got {self.cue_size}")

    def scaled(self, size: float) -> ShortcutFashionConfig:
        """Counts multiplied by ``size`` (at least 1 each); the other settings kept."""
        counts = ("num_train", "num_val", "num_test", "num_test_aligned", "num_val_free")
        return replace(self, **{k: max(1, round(getattr(self, k) * size)) for k in counts})


def cue_colour(cls: int, num_classes: int = 10) -> np.ndarray:
    """The patch cue's colour of class ``cls``: evenly spaced hues, full saturation."""
    r, g, b = colorsys.hsv_to_rgb(cls / num_classes, 1.0, 1.0)
    return np.array([r, g, b], np.float32) * 255


def draw_cue(canvas: np.ndarray, kind: CueKind, cls: int, left: int, top: int, side: int) -> None:
    """Draw the cue of class ``cls`` in place, its square's top-left corner at ``(left, top)``."""
    region = canvas[top : top + side, left : left + side]
    if kind == "patch":
        region[:] = cue_colour(cls)
        return
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[cls % len(_GLYPHS)]], np.float32)
    scaled = np.asarray(
        Image.fromarray((glyph * 255).astype(np.uint8)).resize(
            (max(1, side * 5 // 8), max(1, side * 7 // 8)), Image.Resampling.NEAREST
        ),
        np.float32,
    )
    region[:] = 20.0  # the marker's dark plate
    h, w = scaled.shape
    y0, x0 = (side - h) // 2, (side - w) // 2
    region[y0 : y0 + h, x0 : x0 + w][scaled > 127] = 250.0


def _cue_position(
    rng: np.random.Generator, box: np.ndarray, image_size: int, side: int, margin: int = 2
) -> tuple[int, int]:
    """A uniformly drawn top-left corner of a cue square that stays clear of the object's box."""
    starts = np.arange(image_size - side + 1)
    x1, y1, x2, y2 = box
    clear_x = (starts + side + margin <= x1) | (starts >= x2 + margin)
    clear_y = (starts + side + margin <= y1) | (starts >= y2 + margin)
    ok = clear_x[None, :] | clear_y[:, None]  # (top, left): clear of the box along one axis
    tops, lefts = np.nonzero(ok)
    if tops.size == 0:  # the object fills the image: any corner
        return 0, 0
    k = int(rng.integers(tops.size))
    return int(lefts[k]), int(tops[k])


def render_shortcut_image(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    cue_class: Callable[[int], int],
    config: ShortcutFashionConfig,
) -> tuple[np.ndarray, int, np.ndarray, int, np.ndarray]:
    """Render one image.

    Args:
        rng: Random generator (the image is a pure function of its state).
        images: Source images ``uint8`` ``(N, h, w)``.
        labels: Source class per image ``(N,)``.
        cue_class: Maps the drawn object's class to the cue's class (called once, after the object
            is drawn, so it may draw from ``rng``).
        config: Sizes and cue kind.

    Returns:
        ``(image, label, box, cue, cue_box)``: ``uint8`` ``(S, S, 3)``, the object's class, its
        0-based ``(x1, y1, x2, y2)`` box, the cue's class and its square's box.
    """
    size, scale = config.image_size, config.image_size / 128
    canvas = background(rng, size, size, contrast=0.35, grain=8.0)
    k = int(rng.integers(len(images)))
    label = int(labels[k])
    side = int(rng.integers(round(48 * scale), round(80 * scale) + 1))
    ink = ink_layer(images[k], (side, side))
    top, left = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
    box = paste(canvas, ink, random_colour(rng), top, left)
    if box is None:  # an image without ink: its whole square is the object
        box = ink_box(ink) + np.array([left, top, left, top], np.float32)
    cue = cue_class(label)
    cx, cy = _cue_position(rng, box, size, config.cue_size)
    draw_cue(canvas, config.cue, cue, cx, cy, config.cue_size)
    cue_box = np.array([cx, cy, cx + config.cue_size, cy + config.cue_size], np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), label, box, cue, cue_box


def _biased(rng: np.random.Generator, rho: float, num_classes: int) -> Callable[[int], int]:
    def pick(label: int) -> int:
        if rng.uniform() < rho:
            return label
        other = int(rng.integers(num_classes - 1))
        return other + (other >= label)  # uniform over the other classes

    return pick


def generate_shortcut_fashion(
    out: str | Path,
    *,
    config: ShortcutFashionConfig | None = None,
    seed: int = 0,
    train_source: Source | None = None,
    test_source: Source | None = None,
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``shortcut-fashion`` (see the module docstring).

    Image ``k`` of a set depends only on ``(seed, set, k)`` and the settings.

    Args:
        out: Output folder; created; must be empty or absent.
        config: Settings (default :class:`ShortcutFashionConfig`).
        seed: Random seed.
        train_source: Objects of train (first 5/6) and of val and valfree (last 1/6); default
            Fashion-MNIST train.
        test_source: Objects of the test sets; default Fashion-MNIST test.
        classes: Name of each source label.
        progress: Called with ``(done, total)`` after each image.

    Returns:
        ``out``.
    """
    config = config or ShortcutFashionConfig()
    train_source = train_source if train_source is not None else load_fashion_mnist("train")
    test_source = test_source if test_source is not None else load_fashion_mnist("test")
    out = prepare_out(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = len(classes)
    cut = len(train_source[0]) * 5 // 6
    held = (train_source[0][cut:], train_source[1][cut:])

    def uniform(rng: np.random.Generator) -> Callable[[int], int]:
        return lambda label: int(rng.integers(n))

    plan = [
        ("train", "train", 0, config.num_train, (train_source[0][:cut], train_source[1][:cut]), config.rho),
        ("val", "val", 1, config.num_val, held, config.rho),
        ("test", "test", 2, config.num_test, test_source, None),
        ("testaligned", "test", 3, config.num_test_aligned, test_source, 1.0),
        ("valfree", "val", 4, config.num_val_free, held, None),
    ]
    total, done = sum(p[3] for p in plan), 0
    rows: dict[str, list[list[str]]] = {"manifest": [], "reference": []}
    counts: dict[str, int] = {}
    for prefix, split, code, count, (images, labels), rho in plan:
        counts[prefix] = count
        for k in range(count):
            rng = np.random.default_rng([seed, code, k])
            pick = uniform(rng) if rho is None else _biased(rng, rho, n)
            image, label, box, cue, cue_box = render_shortcut_image(rng, images, labels, pick, config)
            image_id = f"{prefix}_{k:06d}"
            Image.fromarray(image).save(out / "images" / f"{image_id}.jpg", quality=95)
            boxes = json.dumps([[*(int(v) for v in box), classes[label]]])
            avoid = json.dumps([[*(int(v) for v in cue_box), f"cue {classes[cue]}"]])
            group = "aligned" if cue == label else "conflicting"
            target = "reference" if prefix == "valfree" else "manifest"
            rows[target].append([f"images/{image_id}.jpg", classes[label], split, boxes, avoid, group])
            done += 1
            if progress is not None:
                progress(done, total)
    for name, file in (("manifest", "manifest.csv"), ("reference", "reference-val.csv")):
        with (out / file).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "labels", "split", "boxes", "avoid", "group"])
            writer.writerows(rows[name])
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    write_meta(out, "shortcut-fashion", seed, {**vars(config), "counts": counts})
    return out
