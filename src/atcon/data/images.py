"""Labeled images from the user's own formats, served as :class:`~atcon.data.voc.VOCDataset` serves them.

Each reader (class folders :mod:`atcon.data.folders`, CSV manifests :mod:`atcon.data.manifest`, COCO JSON
:mod:`atcon.data.coco`) turns its source into :class:`ImageRecord` s; :class:`AnnotatedImageDataset` turns
records into ``(image, target)`` items with VOC's keys, so training, evaluation, figures and experiments
take them unchanged.

Labels. An image's *positives* are its image-level classes (a manifest's ``labels``, a folder's class,
COCO's categories with a non-crowd annotation). A class that appears in the image only through boxes
marked difficult (COCO: ``iscrowd``) is neither positive nor negative, as in VOC: it is flagged in
``target["ignore"]`` and its label is 0 unless ``difficult_as_positive=True``.

Single- or multi-label. A dataset is multi-label when any image of the source (not only of the served
``ids``, so train, validation and test agree) has several positives, single-label otherwise;
``multi_label`` forces either. Single-label items carry the class index ``target["label"]`` besides the
one-hot ``labels``, and an image without exactly one positive is a bad item (an error, or skipped).

Bad items: a record's parse problem, an unknown class, a wrong number of labels for a single-label set,
or a missing image is an error naming the source file and row (``on_error="raise"``), or the item is
dropped with one warning giving the count (``on_error="skip"``, which also test-decodes every image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch.utils.data import Dataset

from atcon.data._common import (
    DataError,
    broken_link,
    filter_bad,
    finish_item,
    verify_image,
)
from atcon.data.item import Target
from atcon.data.reading import DecodedImages, ReaderKeywords, ReaderOptions, reader_options
from atcon.data.voc import VOCObject, avoid_boxes, object_boxes, outside_image

if TYPE_CHECKING:
    from typing_extensions import Unpack

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
"""Names of the sets a source may assign its images to."""

_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def split_name(value: str) -> str | None:
    """Canonical set name of ``value`` (``train``, ``val``, ``test``; ``valid``/``validation`` mean ``val``).

    Case and surrounding spaces are ignored; anything else gives ``None``.
    """
    return _SPLIT_ALIASES.get(value.strip().lower())


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source, before any checking against classes or label mode.

    Attributes:
        image_id: Stable id used in split files (a manifest's path as written, a file path relative
            to the class-folder root, a COCO ``file_name``).
        path: Image file.
        positives: Image-level classes, in source order, without repeats.
        objects: Boxes, 0-based continuous ``(x1, y1, x2, y2)`` pixels as in VOC (``x2 - x1`` is the
            width in pixels), with class and difficult flag.
        subject: Subject (patient) id, if the source has one.
        split: ``"train"``, ``"val"`` or ``"test"`` if the source assigns one.
        size: ``(H, W)`` as annotated (COCO), if known; the decoded size wins when they differ.
        origin: File named in error messages (manifest, JSON); ``None`` names the image itself.
        where: The row within ``origin`` ("line 7", "image 3 ('a.png')").
        problem: What is wrong with the row, found while parsing; reported when the item is served.
        avoid: Regions the model must not use (a marker, a text token), 0-based continuous
            ``(x1, y1, x2, y2)`` pixels like ``objects``; no class.
        group: The item's group for per-group metrics (e.g. ``"aligned"``/``"conflicting"`` with a
            known shortcut, a hospital), if the source gives one.
    """

    image_id: str
    path: Path
    positives: tuple[str, ...]
    objects: tuple[VOCObject, ...] = ()
    subject: str | None = None
    split: str | None = None
    size: tuple[int, int] | None = None
    origin: Path | None = None
    where: str = ""
    problem: str | None = None
    avoid: tuple[tuple[float, float, float, float], ...] = ()
    group: str | None = None

    def error(self, message: str) -> DataError:
        """A ``DataError`` naming this record's file and row."""
        return DataError(f"{self.where}: {message}" if self.where else message, self.origin or self.path)


def record_classes(records: Iterable[ImageRecord]) -> tuple[str, ...]:
    """Sorted class names used by records (positives and boxes) that parsed without problems."""
    names: set[str] = set()
    for r in records:
        if r.problem is None:
            names.update(r.positives)
            names.update(o.name for o in r.objects)
    return tuple(sorted(names))


def read_class_list(path: Path) -> tuple[str, ...] | None:
    """Classes listed one per line in ``path`` (``classes.txt``), or ``None`` if there is no such file."""
    if not path.is_file():
        return None
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


class AnnotatedImageDataset(DecodedImages, Dataset[tuple[torch.Tensor, Target]]):
    """Labeled images, optionally with boxes, subjects and given splits, as VOC-format items.

    Readers subclass it (:class:`~atcon.data.folders.ImageFolderDataset`,
    :class:`~atcon.data.manifest.ImageManifestDataset`, :class:`~atcon.data.coco.COCODataset`); it can also
    be built from records directly. Records are checked at construction (cheap: no decoding unless
    ``on_error="skip"``), so bad rows surface before training starts.

    Args:
        records: Every image of the source, in source order.
        source: The file or folder the records come from (for messages and ``describe``).
        options: :class:`~atcon.data.reading.ReaderOptions`: ``ids`` to serve (default all),
            ``classes`` (default the sorted names used by the records), ``multi_label`` (default
            decided from the records, see the module docstring), ``transform``, ``on_error``,
            ``difficult_as_positive``, ``cache``.
        **keywords: Fields of ``options`` (:class:`~atcon.data.reading.ReaderKeywords`), overriding it.

    Items are ``(image, target)``, ``image`` ``float32`` ``(3, H, W)`` in ``[0, 1]`` without a transform;
    ``target`` holds exactly the keys of :class:`~atcon.data.voc.VOCDataset` (``labels``, ``ignore``,
    ``boxes``, ``box_labels``, ``difficult``, ``avoid``, ``group``, ``image_id``, ``orig_size``) and,
    when single-label, ``label``: ``int64`` scalar class index.

    Attributes:
        records: The served records, in order.
        ids: Image id of every served item.
        subjects: Subject of every served item (``None`` where the source has none).
        splits: Given set (``train``/``val``/``test``) of every served item (``None`` where none is given).
        groups: Group of every served item (``None`` where none is given).
        skipped: Errors of the items dropped by ``on_error="skip"``.
    """

    format: ClassVar[str] = "records"
    """Name of the source format (``detect_format``'s answer)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        source: str | Path | None = None,
        options: ReaderOptions | None = None,
        **keywords: Unpack[ReaderKeywords],
    ) -> None:
        opts = reader_options(options, keywords)
        ids, classes, multi_label = opts.ids, opts.classes, opts.multi_label
        self.options = opts
        self.on_error = opts.on_error
        self.source = None if source is None else Path(source)
        self.classes: tuple[str, ...] = tuple(classes) if classes is not None else record_classes(records)
        if len(set(self.classes)) != len(self.classes):
            dup = next(c for c, n in Counter(self.classes).items() if n > 1)
            raise ValueError(f"duplicate class name {dup!r} in the class list")
        self.class_to_index = {c: i for i, c in enumerate(self.classes)}
        clean = [r for r in records if r.problem is None]
        self.multi_label = (
            any(len(r.positives) > 1 for r in clean) if multi_label is None else bool(multi_label)
        )
        self.transform = opts.transform
        self.difficult_as_positive = opts.difficult_as_positive
        self.cache = opts.cache
        self._sizes: dict[int, tuple[int, int]] = {}
        served = self._select(records, ids)
        self.records, self.skipped = filter_bad(served, self._check, self.on_error, "images")
        self._label_matrix, self._ignore = self._encode(self.records)
        self.ids: list[str] = [r.image_id for r in self.records]
        self.subjects: list[str | None] = [r.subject for r in self.records]
        self.splits: list[str | None] = [r.split for r in self.records]
        self.groups: list[str | None] = [r.group for r in self.records]

    def _select(self, records: Sequence[ImageRecord], ids: Sequence[str] | None) -> list[ImageRecord]:
        if ids is None:
            return list(records)
        by_id: dict[str, ImageRecord] = {}
        for r in records:
            by_id.setdefault(r.image_id, r)  # a later duplicate carries its own "duplicate" problem
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DataError(
                f"{len(unknown)} image id(s) not in the source, e.g. {unknown[0]!r}; was the split file "
                "drawn from another dataset?",
                self.source,
            )
        return [by_id[i] for i in ids]

    def _check(self, record: ImageRecord) -> None:
        if record.problem is not None:
            raise record.error(record.problem)
        names = (*record.positives, *(o.name for o in record.objects))
        unknown = [n for n in names if n not in self.class_to_index]
        if unknown:
            raise record.error(f"unknown class {unknown[0]!r} (known: {', '.join(self.classes)})")
        if not self.multi_label and len(record.positives) != 1:
            if record.positives:
                raise record.error(
                    f"{len(record.positives)} labels ({', '.join(record.positives)}) in a single-label "
                    "dataset; leave multi_label unset or set it to True"
                )
            raise record.error(
                "no label; a single-label image needs exactly one class (multi_label=True keeps images "
                "without a class as negatives)"
            )
        link = broken_link(record.path)
        if link is not None:
            raise record.error(link)
        if not record.path.is_file():
            raise record.error(f"image not found: {record.path}")
        if self.on_error == "skip":
            try:
                verify_image(record.path)
            except DataError as err:
                raise record.error(str(err)) from err

    def _encode(self, records: Sequence[ImageRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-hot labels and ignore flags of every record, ``(N, C)`` each."""
        labels = torch.zeros(len(records), self.num_classes, dtype=torch.float32)
        present = torch.zeros(len(records), self.num_classes, dtype=torch.bool)
        for i, r in enumerate(records):
            for name in r.positives:
                labels[i, self.class_to_index[name]] = 1.0
            for o in r.objects:
                present[i, self.class_to_index[o.name]] = True
        if self.difficult_as_positive:
            labels[present] = 1.0
        return labels, present & (labels == 0)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    @property
    def task(self) -> Literal["multilabel", "multiclass"]:
        """``"multilabel"`` (sigmoid outputs) or ``"multiclass"`` (single-label, softmax outputs)."""
        return "multilabel" if self.multi_label else "multiclass"

    def where(self, index: int) -> str:
        """Item ``index``'s file and row, as error messages name them ("manifest.csv: line 7")."""
        r = self.records[index]
        return f"{r.origin}: {r.where}" if r.origin is not None and r.where else str(r.path)

    def label_matrix(self) -> torch.Tensor:
        """Multi-hot labels of every item without decoding any image, ``float32`` ``(len(self), C)``."""
        return self._label_matrix.clone()

    def class_indices(self) -> torch.Tensor:
        """Class index of every item of a single-label dataset, ``int64`` ``(len(self),)``.

        Raises:
            ValueError: The dataset is multi-label.
        """
        if self.multi_label:
            raise ValueError("class_indices needs a single-label dataset; use label_matrix()")
        return torch.tensor(
            [self.class_to_index[r.positives[0]] for r in self.records], dtype=torch.int64
        ).reshape(-1)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of item ``index``: as annotated, else read from the file's header (no decoding)."""
        record = self.records[index]
        if record.size is not None:
            return record.size
        if index not in self._sizes:
            from PIL import Image

            with Image.open(record.path) as im:
                # The viewed size: EXIF orientations 5-8 swap width and height.
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                self._sizes[index] = (im.width, im.height) if turned else (im.height, im.width)
        return self._sizes[index]

    def target(self, index: int) -> Target:
        """The target dict of item ``index`` (canvas from :meth:`image_size`), without decoding the image."""
        return self._target(index, *self.image_size(index))

    def _target(self, index: int, height: int, width: int) -> Target:
        r = self.records[index]
        problem = outside_image(r.objects, r.avoid, height, width)
        if problem is not None:
            raise r.error(problem)
        target: Target = {
            "labels": self._label_matrix[index].clone(),
            "ignore": self._ignore[index].clone(),
            "boxes": object_boxes(r.objects, height, width),
            "box_labels": torch.tensor([self.class_to_index[o.name] for o in r.objects], dtype=torch.int64),
            "difficult": torch.tensor([o.difficult for o in r.objects], dtype=torch.bool),
            "avoid": avoid_boxes(r.avoid, height, width),
            "group": r.group or "",
            "image_id": r.image_id,
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }
        if not self.multi_label:
            target["label"] = torch.tensor(self.class_to_index[r.positives[0]], dtype=torch.int64)
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image = self._read(self.records[index].path)
        height, width = image.shape[-2:]
        target = self._target(index, height, width)
        return finish_item(image, target, self.transform)

    def _image_paths(self) -> Iterator[Path]:
        return (r.path for r in self.records)

    def describe(self) -> str:
        """A few lines saying what was found: format, counts, label mode, subjects, given splits, boxes."""
        kind = "multi-label" if self.multi_label else "single-label"
        lines = [f"{self.format} {self.source}: {len(self)} images, {self.num_classes} classes ({kind})"]
        subjects = [s for s in self.subjects if s is not None]
        if subjects:
            lines.append(f"subjects: {len(set(subjects))} ({len(subjects)} of {len(self)} images have one)")
        given = Counter(s for s in self.splits if s is not None)
        if given:
            lines.append("given splits: " + ", ".join(f"{n} {given.get(n, 0)}" for n in SPLIT_NAMES))
        n_boxes = sum(len(r.objects) for r in self.records)
        if n_boxes:
            n_difficult = sum(o.difficult for r in self.records for o in r.objects)
            lines.append(f"boxes: {n_boxes} ({n_difficult} difficult)")
        n_avoid = sum(len(r.avoid) for r in self.records)
        if n_avoid:
            with_avoid = sum(bool(r.avoid) for r in self.records)
            lines.append(f"regions to avoid: {n_avoid} on {with_avoid} images")
        groups = Counter(g for g in self.groups if g is not None)
        if groups:
            lines.append("groups: " + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())))
        if self.skipped:
            lines.append(f"skipped: {len(self.skipped)} bad images")
        return "\n".join(lines)
