"""One small generated image set, written in every format the data layer reads (VOC, CSV, COCO, folders).

Objects are painted as solid rectangles of their class colour over a random background, and regions
to avoid in white, so a box or region read back from any format can be checked against the pixels
themselves.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("effusion", "mass", "nodule")  # not VOC names, so the VOC reader sorts them too
COLOURS = {"effusion": (255, 0, 0), "mass": (0, 255, 0), "nodule": (0, 0, 255)}
AVOID_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class Obj:
    """An object covering pixel columns ``c0 <= x < c1`` and rows ``r0 <= y < r1``."""

    name: str
    c0: int
    r0: int
    c1: int
    r1: int
    difficult: bool = False

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The expected 0-based continuous XYXY box: pixel edges."""
        return (float(self.c0), float(self.r0), float(self.c1), float(self.r1))


@dataclass(frozen=True)
class Img:
    name: str
    width: int
    height: int
    objects: tuple[Obj, ...]
    subject: str
    split: str
    avoid: tuple[Obj, ...] = ()  # regions to avoid (their name is a note, not a class)
    group: str = ""

    @property
    def positives(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.name for o in self.objects if not o.difficult))

    @property
    def file(self) -> str:
        return f"{self.name}.png"


def multilabel_set() -> list[Img]:
    """12 images, several with two classes, difficult-only classes in two, 5 subjects, given sets."""
    e, m, n = CLASSES
    marker = Obj("marker", 33, 1, 38, 6)
    return [
        Img("a01", 40, 30, (Obj(e, 2, 3, 12, 9), Obj(m, 20, 10, 31, 25)), "s1", "train", (marker,), "site-a"),
        Img("a02", 36, 28, (Obj(m, 0, 0, 10, 10),), "s1", "train"),
        Img("a03", 32, 32, (Obj(n, 5, 5, 15, 15), Obj(e, 20, 2, 30, 8, True)), "s2", "train"),
        Img("a04", 30, 40, (Obj(e, 1, 1, 29, 6),), "s2", "train"),
        Img(
            "a05",
            44,
            30,
            (Obj(n, 30, 20, 44, 30), Obj(m, 2, 2, 8, 8)),
            "s3",
            "train",
            (Obj("token", 10, 10, 14, 16), Obj("marker", 16, 1, 20, 4)),
            "site-b",
        ),
        Img("a06", 32, 24, (Obj(e, 10, 10, 20, 20), Obj(n, 0, 0, 6, 6)), "s3", "train"),
        Img("a07", 28, 28, (Obj(m, 3, 3, 25, 25),), "s4", "train"),
        Img("a08", 40, 32, (Obj(n, 1, 20, 9, 31), Obj(e, 15, 1, 39, 9)), "s4", "train"),
        Img("a09", 34, 26, (Obj(e, 4, 4, 14, 14), Obj(m, 20, 10, 30, 20, True)), "s5", "test"),
        Img(
            "a10",
            30,
            30,
            (Obj(m, 0, 15, 15, 30), Obj(n, 16, 0, 30, 14)),
            "s5",
            "test",
            (Obj("", 20, 20, 26, 26),),
        ),
        Img("a11", 36, 36, (Obj(n, 8, 8, 28, 28),), "s5", "test"),
        Img("a12", 32, 28, (Obj(e, 0, 0, 32, 5), Obj(m, 0, 10, 10, 20)), "s5", "test"),
    ]


def single_label_set() -> list[Img]:
    """18 images, one class each (6 per class), 6 subjects of which s2 and s5 span two classes.

    Sorted by (class, subject, name), the order in which class folders list them, so every format
    serves the images in the same order.
    """
    e, m, n = CLASSES
    spec = [
        ("b01", e, "s1"), ("b02", e, "s1"), ("b03", e, "s2"), ("b04", e, "s3"), ("b05", e, "s4"),
        ("b06", e, "s6"), ("b07", m, "s2"), ("b08", m, "s2"), ("b09", m, "s3"), ("b10", m, "s4"),
        ("b11", m, "s5"), ("b12", m, "s6"), ("b13", n, "s1"), ("b14", n, "s5"), ("b15", n, "s5"),
        ("b16", n, "s6"), ("b17", n, "s3"), ("b18", n, "s4"),
    ]  # fmt: skip
    images = []
    for k, (name, cls, subject) in enumerate(spec):
        w, h = 24 + 2 * (k % 4), 20 + 2 * (k % 3)
        objects = [Obj(cls, 1 + k % 5, 2, 12 + k % 5, 14)]
        if k % 4 == 0:  # another class present only as a difficult object
            other = CLASSES[(CLASSES.index(cls) + 1) % 3]
            objects.append(Obj(other, 16, 1, w, 6, True))
        split = "test" if k % 3 == 2 else "train"
        avoid = (Obj("marker", 18, 14, 22, 18),) if k % 3 == 1 else ()
        group = "aligned" if k % 2 else "conflicting"
        images.append(Img(name, w, h, tuple(objects), subject, split, avoid, group))
    return sorted(images, key=lambda im: (im.positives[0], im.subject, im.name))


def pixels(img: Img, seed: int) -> np.ndarray:
    """``uint8`` ``(H, W, 3)``: background values below 200, objects in their class colour."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 200, size=(img.height, img.width, 3), dtype=np.uint8)
    for o in img.objects:
        out[o.r0 : o.r1, o.c0 : o.c1] = COLOURS[o.name]
    for o in img.avoid:
        out[o.r0 : o.r1, o.c0 : o.c1] = AVOID_COLOUR
    return out


def save_png(img: Img, path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(img, seed)).save(path)


def write_voc(root: Path, images: list[Img]) -> Path:
    """VOC layout with image sets ``all`` (every image, in order), ``train`` and ``test`` (given sets)."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        save_png(img, root / "JPEGImages" / img.file, k)
        objs = "".join(
            f"<object><name>{o.name}</name><difficult>{int(o.difficult)}</difficult><bndbox>"
            f"<xmin>{o.c0 + 1}</xmin><ymin>{o.r0 + 1}</ymin><xmax>{o.c1}</xmax><ymax>{o.r1}</ymax>"
            "</bndbox></object>"
            for o in img.objects
        )
        objs += "".join(
            f"<avoid><name>{o.name}</name><bndbox><xmin>{o.c0 + 1}</xmin><ymin>{o.r0 + 1}</ymin>"
            f"<xmax>{o.c1}</xmax><ymax>{o.r1}</ymax></bndbox></avoid>"
            for o in img.avoid
        )
        if img.group:
            objs += f"<group>{img.group}</group>"
        (root / "Annotations" / f"{img.name}.xml").write_text(
            f"<annotation><filename>{img.file}</filename><size><width>{img.width}</width>"
            f"<height>{img.height}</height><depth>3</depth></size>{objs}</annotation>"
        )
    main = root / "ImageSets" / "Main"
    (main / "all.txt").write_text("".join(f"{img.name}\n" for img in images))
    for name in ("train", "test"):
        (main / f"{name}.txt").write_text("".join(f"{img.name}\n" for img in images if img.split == name))
    return root


def box_cell(img: Img) -> str:
    entries = [[o.c0, o.r0, o.c1, o.r1, o.name] + ([1] if o.difficult else []) for o in img.objects]
    return json.dumps(entries)


def avoid_cell(img: Img) -> str:
    """Regions with a note (``[x1, y1, x2, y2, "name"]``) or without one (``[x1, y1, x2, y2]``)."""
    return json.dumps([[o.c0, o.r0, o.c1, o.r1] + ([o.name] if o.name else []) for o in img.avoid])


def write_csv(path: Path, images: list[Img], *, split: bool = False) -> Path:
    """A manifest with images under ``images/``; the ``split`` column only when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "labels", "subject", *(["split"] if split else []), "boxes", "avoid", "group"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for k, img in enumerate(images):
            save_png(img, path.parent / "images" / img.file, k)
            row = [f"images/{img.file}", "|".join(img.positives), img.subject]
            regions = avoid_cell(img) if img.avoid else ""
            writer.writerow([*row, *([img.split] if split else []), box_cell(img), regions, img.group])
    return path


def write_coco(path: Path, images: list[Img], *, split: bool = False) -> Path:
    """A COCO file with images beside it; category ids are not in file order (order is by id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = {"effusion": 7, "mass": 9, "nodule": 12}
    categories = [{"id": ids[c], "name": c} for c in ("nodule", "effusion", "mass")]
    entries, annotations = [], []
    for k, img in enumerate(images):
        save_png(img, path.parent / img.file, k)
        entry = {"id": 100 + k, "file_name": img.file, "width": img.width, "height": img.height}
        entry["subject"] = img.subject
        if img.avoid:
            entry["avoid"] = [[o.c0, o.r0, o.c1 - o.c0, o.r1 - o.r0] for o in img.avoid]
        if img.group:
            entry["group"] = img.group
        if split:
            entry["split"] = img.split
        entries.append(entry)
        for o in img.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + k,
                    "category_id": ids[o.name],
                    "bbox": [o.c0, o.r0, o.c1 - o.c0, o.r1 - o.r0],
                    "area": (o.c1 - o.c0) * (o.r1 - o.r0),
                    "iscrowd": int(o.difficult),
                }
            )
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return path


def write_folders(root: Path, images: list[Img], *, subjects: bool = True, split: bool = False) -> Path:
    """Class folders ``[<set>/]<class>/[<subject>/]<image>`` of a single-label set."""
    for k, img in enumerate(images):
        parts = [img.split] if split else []
        parts += [img.positives[0], *([img.subject] if subjects else []), img.file]
        save_png(img, root.joinpath(*parts), k)
    return root
