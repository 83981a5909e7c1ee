"""Tell which format a dataset path holds, and open image datasets of any format.

Formats (:data:`FORMATS`):

- ``voc``: a VOC layout (``Annotations/*.xml``), in the folder, a ``VOC*`` folder, or ``VOCdevkit/VOC*``;
- ``folders``: image class folders, ``<root>/<class>/<image>`` (or ``<root>/<set>/<class>/<image>``);
- ``csv``: a CSV image manifest (:mod:`atcon.data.manifest`);
- ``coco``: a COCO JSON file (:mod:`atcon.data.coco`);
- ``clips-csv``: a CSV clip manifest (:mod:`atcon.data.video`);
- ``clip-folders``: video class folders, ``<root>/<class>/<video>``.

A ``.csv`` is an image or a clip manifest according to the suffixes of the files its ``path`` column
names (image or video files); when none has a known suffix, according to its columns (``labels``: images;
``start``/``end``: clips). A folder holding a ``manifest.csv`` is read as that manifest.
Built-in benchmark names are not paths: callers check them first.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from atcon.data._common import DataError, bad_csv, not_utf8
from atcon.data.files import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from atcon.data.images import AnnotatedImageDataset
from atcon.data.reading import ReaderKeywords, ReaderOptions, reader_options
from atcon.data.voc import VOCDataset

if TYPE_CHECKING:
    from typing_extensions import Unpack

DataFormat = Literal["voc", "folders", "csv", "coco", "clips-csv", "clip-folders"]

FORMATS: dict[str, str] = {
    "voc": "a VOC layout (Annotations/*.xml, JPEGImages/, ImageSets/Main/*.txt)",
    "folders": "image class folders (<root>/<class>/<image>)",
    "csv": "a CSV image manifest (path, labels[, subject, split, boxes, avoid, group])",
    "coco": "a COCO JSON file (images, annotations, categories)",
    "clips-csv": "a CSV clip manifest (path, label, subject[, start, end, boxes])",
    "clip-folders": "video class folders (<root>/<class>/<video>)",
}
"""Every format :func:`detect_data` recognises, with what it looks like."""

IMAGE_FORMATS: tuple[str, ...] = ("voc", "folders", "csv", "coco")
"""Formats that hold images (the others hold video clips)."""

_SAMPLE_ROWS = 200
_JSON_PREFIX = 1 << 20


@dataclass(frozen=True)
class DetectedData:
    """What a path holds.

    Attributes:
        format: One of :data:`FORMATS`.
        path: What to read: the path itself, or a folder's ``manifest.csv``.
    """

    format: DataFormat
    path: Path

    @property
    def description(self) -> str:
        """What the format looks like, e.g. "image class folders (<root>/<class>/<image>)"."""
        return FORMATS[self.format]

    @property
    def video(self) -> bool:
        """Whether the data are video clips."""
        return self.format not in IMAGE_FORMATS

    def __str__(self) -> str:
        return f"{self.path}: {self.description}"


def _looked_for(path: Path, found: str) -> DataError:
    wanted = "; ".join(FORMATS.values())
    return DataError(f"cannot tell the data format: {found}. Looked for {wanted}", path)


def _csv_format(path: Path) -> DataFormat:
    try:
        return _csv_format_of(path)
    except UnicodeDecodeError as err:
        raise not_utf8(err, path, "manifest") from None
    except csv.Error as err:
        raise bad_csv(err, path) from None


def _csv_format_of(path: Path) -> DataFormat:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if "path" not in header:
            raise _looked_for(path, f"a CSV without a path column (columns: {', '.join(header) or 'none'})")
        j = header.index("path")
        images: list[int] = []
        videos: list[int] = []
        for k, row in enumerate(reader):
            if k >= _SAMPLE_ROWS:
                break
            suffix = Path(row[j].strip()).suffix.lower() if j < len(row) else ""
            if suffix in IMAGE_SUFFIXES:
                images.append(reader.line_num)
            elif suffix in VIDEO_SUFFIXES:
                videos.append(reader.line_num)
    if images and videos:
        raise DataError(
            f"the manifest lists both images (line {images[0]}) and videos (line {videos[0]}); "
            "write one manifest for each",
            path,
        )
    if images or videos:
        return "csv" if images else "clips-csv"
    if "labels" in header:
        return "csv"
    if "start" in header or "end" in header:
        return "clips-csv"
    raise _looked_for(
        path,
        f"a CSV whose paths have no image ({', '.join(IMAGE_SUFFIXES)}) or video "
        f"({', '.join(VIDEO_SUFFIXES)}) suffix",
    )


def _json_format(path: Path) -> DataFormat:
    with path.open("rb") as fh:
        head = fh.read(_JSON_PREFIX).decode("utf-8", errors="replace")
    if any(f'"{key}"' in head for key in ("images", "annotations", "categories")):
        return "coco"
    if '"protocol"' in head and '"train"' in head:
        raise DataError(
            "this is a split file; pass it as the split and the dataset it was drawn from as the data", path
        )
    if path.stat().st_size <= _JSON_PREFIX:
        try:
            json.loads(head)
        except json.JSONDecodeError as err:
            raise DataError(f"not a JSON file ({err})", path) from err
        raise _looked_for(path, "a JSON file without images, annotations or categories")
    return "coco"  # a large JSON: the COCO reader says precisely what is wrong, if anything


def _first_media(root: Path) -> str | None:
    """``"image"`` or ``"video"``: the kind of the first media file found inside a subfolder of ``root``."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if Path(folder) == root:
            continue  # files directly in root belong to no class
        for name in sorted(files):
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                return "image"
            if suffix in VIDEO_SUFFIXES:
                return "video"
    return None


def detect_data(path: str | Path) -> DetectedData:
    """Tell what ``path`` holds (see the module docstring).

    Raises:
        FileNotFoundError: No such path.
        DataError: None of :data:`FORMATS` matches; the message lists what was looked for and what was
            found.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return DetectedData(_csv_format(path), path)
        if suffix == ".json":
            return DetectedData(_json_format(path), path)
        raise _looked_for(path, f"a {suffix or 'suffix-less'} file")
    if (path / "manifest.csv").is_file():
        return DetectedData(_csv_format(path / "manifest.csv"), path / "manifest.csv")
    if any((p / "Annotations").is_dir() for p in (path, *path.glob("VOC*"), *path.glob("VOCdevkit/VOC*"))):
        from atcon.data.voc import find_voc_root

        return DetectedData("voc", find_voc_root(path))
    kind = _first_media(path)
    if kind == "image":
        return DetectedData("folders", path)
    if kind == "video":
        return DetectedData("clip-folders", path)
    raise _looked_for(
        path,
        f"a folder with no image ({', '.join(IMAGE_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)}) "
        "files in subfolders",
    )


def detect_format(path: str | Path) -> DataFormat:
    """The format of ``path``: ``"voc"``, ``"folders"``, ``"csv"``, ``"coco"``, ``"clips-csv"`` or
    ``"clip-folders"`` (:func:`detect_data` says which file to read as well)."""
    return detect_data(path).format


def open_image_dataset(
    path: str | Path,
    *,
    options: ReaderOptions | None = None,
    split: str = "train",
    label_sep: str = "|",
    image_root: str | Path | None = None,
    **keywords: Unpack[ReaderKeywords],
) -> VOCDataset | AnnotatedImageDataset:
    """Open images in any of :data:`IMAGE_FORMATS` as a dataset of VOC-format items.

    Args:
        path: A VOC folder, class folders, a CSV manifest (or a folder holding ``manifest.csv``), or a
            COCO file.
        options: :class:`~atcon.data.reading.ReaderOptions`, as for every image dataset;
            ``multi_label`` forces multi- or single-label (CSV, COCO): VOC data are multi-label and
            class folders single-label, and asking otherwise is an error.
        split: VOC only: the ``ImageSets/Main`` list to read when ``ids`` is not given.
        label_sep: CSV only: separator of several labels in a cell.
        image_root: COCO only: folder of the image files.

    Returns:
        A :class:`~atcon.data.voc.VOCDataset`, :class:`~atcon.data.folders.ImageFolderDataset`,
        :class:`~atcon.data.manifest.ImageManifestDataset` or :class:`~atcon.data.coco.COCODataset`.

    Raises:
        DataError: The path holds video clips or no known format, or ``multi_label`` contradicts it.
    """
    found = detect_data(path)
    opts = reader_options(options, keywords)
    if found.video:
        raise DataError(
            f"holds video clips ({found.description}), not images; read it with VideoClipDataset", path
        )
    if found.format == "voc":
        if opts.multi_label is False:
            raise DataError("VOC-layout data are multi-label; leave multi_label unset", path)
        return VOCDataset(found.path, split, options=opts)
    if found.format == "folders":
        if opts.multi_label:
            raise DataError("class folders hold single-label images; leave multi_label unset", path)
        from atcon.data.folders import ImageFolderDataset

        return ImageFolderDataset(found.path, options=opts)
    if found.format == "csv":
        from atcon.data.manifest import ImageManifestDataset

        return ImageManifestDataset(found.path, label_sep=label_sep, options=opts)
    from atcon.data.coco import COCODataset

    return COCODataset(found.path, image_root=image_root, options=opts)
