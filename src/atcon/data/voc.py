"""PASCAL VOC, and any dataset in VOC layout, as a multi-label classification dataset with boxes.

Layout read (``root`` may be ``VOCdevkit``, ``VOCdevkit/VOC2012`` or any folder holding these)::

    JPEGImages/<id>.jpg        (or the file named in the XML's <filename>)
    Annotations/<id>.xml
    ImageSets/Main/<split>.txt (one image id per line)
    classes.txt                optional, one class per line: fixes the label order

Boxes: VOC XML stores 1-based inclusive pixel indices; they are returned as continuous 0-based
``(x1, y1, x2, y2)`` pixel coordinates, ``x1 = xmin - 1``, ``x2 = xmax``, so a box's width is
``xmax - xmin + 1`` pixels, as the annotation means.

Regions a model must not use (a marker, a text token) are optional ``<avoid>`` elements of the
annotation, each with a ``<bndbox>`` in the same 1-based convention; an optional ``<group>``
names the image's group for per-group metrics (e.g. ``aligned``/``conflicting`` with a known
shortcut, or a hospital)::

    <avoid><name>marker</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>18</xmax><ymax>18</ymax></bndbox></avoid>
    <group>conflicting</group>

``difficult`` is honoured the VOC way (VOC2012 development kit, section 3.4): a class whose only
objects in an image are difficult is neither positive nor negative for that image; it is flagged in
``target["ignore"]`` so metrics can leave it out, and its label is 0 unless
``difficult_as_positive=True``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from atcon.data._common import (
    DataError,
    filter_bad,
    finish_item,
    not_found,
    require_dir,
    verify_image,
)
from atcon.data.item import Target as Target  # re-exported: the item type was first defined here
from atcon.data.reading import DecodedImages, ReaderKeywords, ReaderOptions, reader_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 PASCAL VOC classes in the official (alphabetical) order."""


Region = tuple[float, float, float, float]
"""A region to avoid: 0-based continuous ``(x1, y1, x2, y2)`` pixels, like a box without a class."""


BOX_TOLERANCE = 1.0
"""Pixels a box may reach past the image's border (rounding in annotation tools); such boxes are
clipped to the image, anything further is refused."""


def outside_image(
    objects: Sequence[VOCObject], avoid: Sequence[Region], height: int, width: int
) -> str | None:
    """What is wrong when a box or region to avoid lies outside the ``width x height`` image
    (beyond :data:`BOX_TOLERANCE`), else None: it would be scored against pixels that do not
    exist. Boxes are in the pixel coordinates of the image as viewed (EXIF orientation applied)."""
    named = [(f"box {k} ({o.name})", o.box) for k, o in enumerate(objects, 1)]
    named += [(f"avoid region {k}", box) for k, box in enumerate(avoid, 1)]
    t = BOX_TOLERANCE
    for what, (x1, y1, x2, y2) in named:
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
            return (
                f"{what} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width} x {height} image "
                "(pixel coordinates of the image as viewed, EXIF orientation applied)"
            )
    return None


def object_boxes(objects: Sequence[VOCObject], height: int, width: int) -> tv_tensors.BoundingBoxes:
    """An item's object boxes as ``target["boxes"]``: XYXY ``BoundingBoxes`` ``(N, 4)`` clipped to
    the image (boxes past it by more than :data:`BOX_TOLERANCE` are refused before, by
    :func:`outside_image`)."""
    boxes = torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


def avoid_boxes(regions: Sequence[Region], height: int, width: int) -> tv_tensors.BoundingBoxes:
    """An item's regions to avoid as ``target["avoid"]``: XYXY ``BoundingBoxes`` ``(M, 4)`` that
    transforms move with the image (``M = 0`` when it has none)."""
    boxes = torch.tensor(list(regions), dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


@dataclass(frozen=True)
class VOCObject:
    """One annotated object: class name, 0-based ``(x1, y1, x2, y2)`` box in pixels, difficult flag."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VOCAnnotation:
    """The parsed content of one ``Annotations/<id>.xml``."""

    image_id: str
    filename: str
    width: int
    height: int
    objects: tuple[VOCObject, ...]
    avoid: tuple[Region, ...] = ()
    group: str | None = None

    @property
    def names(self) -> set[str]:
        """Class names present in the image (difficult objects included)."""
        return {o.name for o in self.objects}


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"malformed annotation: missing <{tag}>", path)
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    value = _text(node, tag, path)
    try:
        return float(value)
    except ValueError as err:
        raise DataError(f"malformed annotation: <{tag}> is {value!r}, not a number", path) from err


def parse_voc_xml(path: str | Path) -> VOCAnnotation:
    """Parse one VOC annotation file.

    Args:
        path: ``Annotations/<id>.xml``.

    Returns:
        The annotation; ``image_id`` is the file's stem. Objects without ``<difficult>`` are not difficult.

    Raises:
        FileNotFoundError: The file does not exist.
        DataError: The XML is malformed or lacks a required field (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("annotation", path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"malformed XML ({err})", path) from err
    if root.tag != "annotation":
        raise DataError(f"malformed annotation: root element is <{root.tag}>, not <annotation>", path)
    filename = root.findtext("filename", default="").strip() or f"{path.stem}.jpg"
    size = root.find("size")
    if size is None:
        raise DataError("malformed annotation: missing <size>", path)
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        difficult = obj.findtext("difficult", default="0").strip() in ("1", "true", "True")
        objects.append(VOCObject(name, _bndbox(obj, f"object {name!r}", path), difficult))
    avoid = tuple(_bndbox(a, f"avoid region {k}", path) for k, a in enumerate(root.iter("avoid"), 1))
    group = root.findtext("group", default="").strip() or None
    return VOCAnnotation(path.stem, filename, width, height, tuple(objects), avoid, group)


def _bndbox(node: ET.Element, what: str, path: Path) -> Region:
    """The 0-based ``(x1, y1, x2, y2)`` of a node's 1-based inclusive ``<bndbox>``."""
    bnd = node.find("bndbox")
    if bnd is None:
        raise DataError(f"malformed annotation: {what} has no <bndbox>", path)
    xmin, ymin, xmax, ymax = (_number(bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise DataError(f"malformed annotation: {what} has an inverted box", path)
    return (xmin - 1.0, ymin - 1.0, xmax, ymax)


def find_voc_root(root: str | Path) -> Path:
    """Return the folder holding ``Annotations/`` given a VOC root, ``VOCdevkit`` or the folder itself.

    Raises:
        FileNotFoundError: Neither ``root`` nor a ``VOC*`` folder below it holds ``Annotations/``.
    """
    root = Path(root).expanduser()
    require_dir(root, "dataset folder")
    if (root / "Annotations").is_dir():
        return root
    candidates = sorted(p for p in root.glob("VOC*") if (p / "Annotations").is_dir())
    if not candidates and (root / "VOCdevkit").is_dir():
        candidates = sorted(p for p in (root / "VOCdevkit").glob("VOC*") if (p / "Annotations").is_dir())
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise FileNotFoundError(
            f"{root} holds several VOC datasets ({', '.join(p.name for p in candidates)}); pass one of them"
        )
    raise FileNotFoundError(f"no Annotations/ folder in {root}: not a VOC-layout dataset")


def read_image_set(root: str | Path, split: str) -> list[str]:
    """Read the image ids of ``ImageSets/Main/<split>.txt``.

    Raises:
        FileNotFoundError: The split file is missing (the message lists the splits that exist).
    """
    root = find_voc_root(root)
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        existing = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"split file not found: {path} (available: {', '.join(existing) or 'none'})")
    # Per-class files (``aeroplane_train.txt``) hold "id label"; keep the id column only.
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_vocabulary(root: str | Path) -> tuple[str, ...]:
    """Return the class list of a VOC-layout dataset.

    In order of preference: ``classes.txt`` in the root; the 20 VOC classes if every name used by the
    annotations is one of them (so VOC keeps its usual order); else the sorted names found in all of
    ``Annotations/*.xml``.
    """
    root = find_voc_root(root)
    listed = root / "classes.txt"
    if listed.is_file():
        return tuple(line.strip() for line in listed.read_text().splitlines() if line.strip())
    names: set[str] = set()
    for xml in sorted((root / "Annotations").glob("*.xml")):
        try:
            names |= parse_voc_xml(xml).names
        except DataError:
            continue  # reported when the split that holds it is read
    if names <= set(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(sorted(names))


class VOCDataset(DecodedImages, Dataset[tuple[torch.Tensor, Target]]):
    """Multi-label images with boxes from a VOC-layout folder.

    Annotations are parsed once at construction (fast); images are decoded on access.

    Args:
        root: VOC folder (see :func:`find_voc_root`).
        split: Name of an ``ImageSets/Main`` file; ignored when ``ids`` is given.
        options: :class:`~atcon.data.reading.ReaderOptions` (``ids``, ``classes``, ``transform``,
            ``on_error``, ``difficult_as_positive``, ``cache``); each may be given as a keyword instead.
            ``ids`` are served in their order, ``classes`` default to :func:`read_vocabulary`, and
            ``multi_label=False`` is an error (VOC data are multi-label).
        **keywords: Fields of ``options`` (:class:`~atcon.data.reading.ReaderKeywords`), overriding it.

    Items are ``(image, target)``. Without a transform ``image`` is ``float32`` in ``[0, 1]``, shape
    ``(3, H, W)``; ``target`` holds:

    - ``labels``: ``float32`` multi-hot, ``(C,)``.
    - ``ignore``: ``bool`` ``(C,)``, classes present only as difficult objects.
    - ``boxes``: ``tv_tensors.BoundingBoxes`` ``(N, 4)`` ``float32``, XYXY pixels, ``canvas_size=(H, W)``.
    - ``box_labels``: ``int64`` ``(N,)`` class index of each box.
    - ``difficult``: ``bool`` ``(N,)``.
    - ``avoid``: ``tv_tensors.BoundingBoxes`` ``(M, 4)``, the regions a model must not use
      (``<avoid>`` elements; ``M = 0`` without any), moved with the image like ``boxes``.
    - ``group``: ``str``, the ``<group>`` (``""`` without one).
    - ``image_id``: ``str``.
    - ``orig_size``: ``int64`` ``(2,)``, ``(H, W)`` of the file, before any transform.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        options: ReaderOptions | None = None,
        **keywords: Unpack[ReaderKeywords],
    ) -> None:
        opts = reader_options(options, keywords)
        if opts.multi_label is False:
            raise DataError("VOC-layout data are multi-label; leave multi_label unset", root)
        ids, classes = opts.ids, opts.classes
        self.options = opts
        self.on_error = opts.on_error
        # Experiments revisit the same images in many runs: keep them decoded (atcon.data.decoded).
        self.cache = opts.cache
        self.root = find_voc_root(root)
        self.split = split if ids is None else None
        self.classes: tuple[str, ...] = tuple(classes) if classes is not None else read_vocabulary(self.root)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class names in {self.classes}")
        self.class_to_index = {c: i for i, c in enumerate(self.classes)}
        self.transform = opts.transform
        self.difficult_as_positive = opts.difficult_as_positive
        wanted = list(ids) if ids is not None else read_image_set(self.root, split)

        def load(image_id: str) -> VOCAnnotation:
            ann = parse_voc_xml(self.root / "Annotations" / f"{image_id}.xml")
            unknown = sorted(ann.names - self.class_to_index.keys())
            if unknown:
                raise DataError(
                    f"unknown class {unknown[0]!r} (known: {', '.join(self.classes)})",
                    self.root / "Annotations" / f"{image_id}.xml",
                )
            if self.on_error == "skip":
                verify_image(self.image_path(ann))
            return ann

        self.annotations: list[VOCAnnotation] = []

        def check(image_id: str) -> None:
            self.annotations.append(load(image_id))

        _, self.skipped = filter_bad(wanted, check, self.on_error, "images")
        self.ids = [a.image_id for a in self.annotations]
        self.groups: list[str | None] = [a.group for a in self.annotations]

    def image_path(self, ann: VOCAnnotation) -> Path:
        """Path of the image file of an annotation."""
        path = self.root / "JPEGImages" / ann.filename
        if not path.is_file():
            # Some exports name the file differently in <filename>; fall back to <id>.jpg.
            fallback = self.root / "JPEGImages" / f"{ann.image_id}.jpg"
            if fallback.is_file():
                return fallback
        return path

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    def label_matrix(self) -> torch.Tensor:
        """Multi-hot labels of every image without decoding any image.

        Returns:
            ``float32`` tensor, shape ``(len(self), C)``, same convention as ``target["labels"]``.
        """
        return (
            torch.stack([self._labels(a)[0] for a in self.annotations])
            if self.annotations
            else (torch.zeros(0, self.num_classes))
        )

    def _labels(self, ann: VOCAnnotation) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.zeros(self.num_classes, dtype=torch.float32)
        any_obj = torch.zeros(self.num_classes, dtype=torch.bool)
        for obj in ann.objects:
            idx = self.class_to_index[obj.name]
            any_obj[idx] = True
            if self.difficult_as_positive or not obj.difficult:
                labels[idx] = 1.0
        ignore = any_obj & (labels == 0)
        return labels, ignore

    def target(self, index: int) -> Target:
        """The target dict of item ``index`` (canvas from the annotation), without decoding the image."""
        ann = self.annotations[index]
        return self._target(ann, ann.height, ann.width)

    def _target(self, ann: VOCAnnotation, height: int, width: int) -> Target:
        labels, ignore = self._labels(ann)
        problem = outside_image(ann.objects, ann.avoid, height, width)
        if problem is not None:
            raise DataError(problem, self.root / "Annotations" / f"{ann.image_id}.xml")
        return {
            "labels": labels,
            "ignore": ignore,
            "boxes": object_boxes(ann.objects, height, width),
            "box_labels": torch.tensor([self.class_to_index[o.name] for o in ann.objects], dtype=torch.int64),
            "difficult": torch.tensor([o.difficult for o in ann.objects], dtype=torch.bool),
            "avoid": avoid_boxes(ann.avoid, height, width),
            "group": ann.group or "",
            "image_id": ann.image_id,
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        ann = self.annotations[index]
        image = self._read(self.image_path(ann))
        height, width = image.shape[-2:]
        # The decoded size wins over <size>: some annotation tools write it wrong.
        target = self._target(ann, height, width)
        return finish_item(image, target, self.transform)

    def _image_paths(self) -> Iterator[Path]:
        return (self.image_path(ann) for ann in self.annotations)


def collate(batch: Sequence[tuple[torch.Tensor, Mapping[str, Any]]]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Batch ``(image, target)`` items whose number of boxes differs.

    Images are stacked; a target entry is stacked when it is a tensor of the same shape in every item
    (``labels``, ``ignore``, ``orig_size``, per-frame clip boxes) and kept as a list otherwise (``boxes``,
    ``box_labels``, ``difficult``, ids).

    Args:
        batch: Items of :class:`VOCDataset` or :class:`atcon.data.video.VideoClipDataset`.

    Returns:
        ``(images, targets)``; ``images`` has shape ``(B, *item_shape)``.
    """
    images = torch.stack([torch.as_tensor(x) for x, _ in batch])
    targets: dict[str, Any] = {}
    for key in batch[0][1]:
        values = [t[key] for _, t in batch]
        stackable = (
            all(isinstance(v, torch.Tensor) and not isinstance(v, tv_tensors.BoundingBoxes) for v in values)
            and len({tuple(v.shape) for v in values}) == 1
        )
        if isinstance(values[0], int):
            targets[key] = torch.tensor(values)
        elif stackable:
            targets[key] = torch.stack([v.as_subclass(torch.Tensor) for v in values])
        else:
            targets[key] = values
    return images.as_subclass(torch.Tensor), targets


def class_counts(dataset: VOCDataset) -> dict[str, int]:
    """Number of images containing each class (positives under the dataset's difficult rule)."""
    totals = dataset.label_matrix().sum(0)
    return {c: int(n) for c, n in zip(dataset.classes, totals.tolist())}
