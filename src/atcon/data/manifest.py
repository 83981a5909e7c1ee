"""Images listed in a CSV manifest, one row per image.

Format: a CSV file with a header row; column names are matched case-insensitively and other columns are
ignored::

    path,labels,subject,split,boxes
    xr/001.png,effusion|nodule,p07,train,"[[10, 5, 30, 25, ""nodule""]]"
    xr/002.png,no finding,p07,train,
    /data/xr/003.png,effusion,p12,test,"[[0, 0, 64, 48, ""effusion"", 1]]"

- ``path`` (required): the image file, relative to the manifest's folder or absolute. It is also the
  image's id in split files, as written.
- ``labels`` (required; ``label`` is accepted too): the image's classes, several separated by ``|``
  (``label_sep``). Multi-label when any row has several, single-label otherwise (``multi_label``
  forces either). An empty cell is an image without a class (a negative, multi-label only).
- ``subject`` (optional): subject (patient) id, for subject-disjoint splits.
- ``split`` (optional): ``train``, ``val`` or ``test`` (``valid``/``validation`` mean ``val``) in every
  row: the sets are given, not drawn.
- ``boxes`` (optional): a JSON list with one ``[x1, y1, x2, y2, "class"]`` entry per box, optionally a
  sixth entry ``1``/``true`` marking the box difficult. Coordinates are 0-based continuous pixels
  (``x2 - x1`` is the width; a box over pixel columns 10..29 inclusive is ``x1 = 10, x2 = 30``), the
  convention of :class:`~atcon.data.voc.VOCDataset` and COCO. A class with a box must be one of the row's
  labels unless all its boxes in the row are difficult (then it is neither positive nor negative).
  Inside a CSV cell the JSON's quotes are doubled, as any CSV writer does
  (``csv.writer``, ``pandas.DataFrame.to_csv`` of ``json.dumps`` strings).
- ``avoid`` (optional): regions the model must not use (a marker, a text token), in the same JSON
  format, ``[x1, y1, x2, y2]`` or ``[x1, y1, x2, y2, "name"]`` (the name is a note: it is not a
  class). ``atcon evaluate`` reports the share of Grad-CAM mass inside them; box supervision
  (``--box-weight``) pushes the maps out of them.
- ``group`` (optional): the image's group, any text (``aligned``/``conflicting`` when a shortcut
  is known, a hospital, a scanner); ``atcon evaluate`` reports accuracy and F1 per group.

A ``classes.txt`` beside the manifest (one name per line) fixes the label order; otherwise it is the
sorted set of names used.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atcon.data._common import DataError, bad_csv, not_found, not_utf8
from atcon.data.images import AnnotatedImageDataset, ImageRecord, read_class_list, split_name
from atcon.data.reading import ReaderKeywords, ReaderOptions, reader_options
from atcon.data.voc import Region, VOCObject

if TYPE_CHECKING:
    from typing_extensions import Unpack

LABEL_SEP = "|"
"""Default separator of several labels in one ``labels`` cell."""

_OPTIONAL = ("subject", "split", "boxes", "avoid", "group")


def parse_box_list(text: str) -> tuple[VOCObject, ...]:
    """Parse a manifest's ``boxes`` cell (see the module docstring).

    Args:
        text: JSON list of ``[x1, y1, x2, y2, "class"]`` or ``[x1, y1, x2, y2, "class", difficult]``.

    Returns:
        The boxes in the cell's order.

    Raises:
        ValueError: Not JSON, not a list of such entries, a coordinate that is not a finite number,
            or an inverted box (``x2 < x1`` or ``y2 < y1``); the message says which box.
    """
    objects = []
    for k, entry in enumerate(_json_list(text, "boxes", '[x1, y1, x2, y2, "class"]'), 1):
        if not isinstance(entry, list) or len(entry) not in (5, 6):
            raise ValueError(f'box {k} is {entry!r}, not [x1, y1, x2, y2, "class"] (+ optional difficult)')
        name = entry[4]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"box {k} has no class name: {entry!r}")
        difficult = entry[5] if len(entry) == 6 else False
        if difficult not in (0, 1, True, False):
            raise ValueError(f"box {k}: difficult must be 0, 1, true or false, got {difficult!r}")
        objects.append(VOCObject(name.strip(), _coords(entry, f"box {k}"), bool(difficult)))
    return tuple(objects)


def parse_region_list(text: str) -> tuple[Region, ...]:
    """Parse a manifest's ``avoid`` cell: ``[x1, y1, x2, y2]`` or ``[x1, y1, x2, y2, "name"]`` entries.

    Raises:
        ValueError: Not JSON, not a list of such entries, a coordinate that is not a finite number,
            or an inverted region; the message says which.
    """
    regions = []
    for k, entry in enumerate(_json_list(text, "avoid", "[x1, y1, x2, y2]"), 1):
        if (
            not isinstance(entry, list)
            or len(entry) not in (4, 5)
            or (len(entry) == 5 and not isinstance(entry[4], str))
        ):
            raise ValueError(f'region {k} is {entry!r}, not [x1, y1, x2, y2] or [x1, y1, x2, y2, "name"]')
        regions.append(_coords(entry, f"region {k}"))
    return tuple(regions)


def _json_list(text: str, column: str, entry: str) -> list[Any]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{column} is not JSON ({err.msg}): {text!r}") from err
    if not isinstance(entries, list):
        raise ValueError(f"{column} must be a JSON list of {entry}, got {text!r}")
    return entries


def _coords(entry: list[Any], what: str) -> Region:
    coords = entry[:4]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in coords):
        raise ValueError(f"{what} has a coordinate that is not a finite number: {entry!r}")
    x1, y1, x2, y2 = (float(v) for v in coords)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what} is inverted (x2 < x1 or y2 < y1): {entry!r}")
    if x2 == x1 or y2 == y1:
        raise ValueError(f"{what} has zero area: {entry!r}")
    return (x1, y1, x2, y2)


def _labels(cell: str, sep: str) -> tuple[str, ...]:
    names = (n.strip() for n in cell.split(sep))
    return tuple(dict.fromkeys(n for n in names if n))  # dedupe, keep order


def read_image_manifest(path: str | Path, *, label_sep: str = LABEL_SEP) -> list[ImageRecord]:
    """Read an image manifest into records.

    A problem confined to one row (empty path, malformed box, bad split value, duplicate path, a boxed
    class missing from the labels) is stored in the record's ``problem`` and reported, naming the file
    and line, when a dataset serves the row; a problem with the whole file is raised at once.

    Args:
        path: The CSV file.
        label_sep: Separator of several labels in one cell.

    Returns:
        One record per data row, in file order.

    Raises:
        FileNotFoundError: No such file.
        DataError: No header, or a required column is missing (message lists the columns found).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise not_found("manifest", path)
    if not label_sep:
        raise ValueError("label_sep must be a non-empty string")
    try:
        return _read_rows(path, label_sep)
    except UnicodeDecodeError as err:
        raise not_utf8(err, path, "manifest") from None


CSV_FIELD_LIMIT = 16 * 2**20
"""Largest manifest cell read (Python's csv default, 128 KiB, is less than a long box list)."""


def _read_rows(path: Path, label_sep: str) -> list[ImageRecord]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    # utf-8-sig: spreadsheet programs often start the file with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, strict=True)
        header = next(reader, None)
        if header is None:
            raise DataError("empty manifest: expected a header row with path and labels columns", path)
        names = [name.strip().lower() for name in header]
        repeated = sorted({n for n in names if n and names.count(n) > 1})
        if repeated:
            where = ", ".join(str(j + 1) for j, n in enumerate(names) if n == repeated[0])
            raise DataError(
                f"column {repeated[0]!r} appears more than once (columns {where}); keep one", path
            )
        columns = {name: j for j, name in enumerate(names)}
        label_col = "labels" if "labels" in columns else "label"
        missing = [c for c in ("path", label_col) if c not in columns]
        if missing:
            raise DataError(
                f"manifest lacks column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
                "an image manifest needs path and labels",
                path,
            )
        seen: dict[str, int] = {}
        records: list[ImageRecord] = []
        rows: list[tuple[int, list[str]]] = []
        try:
            for row in reader:
                rows.append((reader.line_num, row))
        except csv.Error as err:
            raise bad_csv(err, path, reader.line_num) from None
        for line, row in rows:
            if not any(cell.strip() for cell in row):
                continue  # blank line

            def cell(name: str, row: list[str] = row) -> str:
                j = columns.get(name)
                return row[j].strip() if j is not None and j < len(row) else ""

            records.append(_record(path, line, cell, label_col, label_sep, "split" in columns, seen))
    if not records:
        raise DataError("the manifest has a header but no data rows", path)
    return records


def _record(
    manifest: Path,
    line: int,
    cell: Callable[[str], str],
    label_col: str,
    label_sep: str,
    has_split: bool,
    seen: dict[str, int],
) -> ImageRecord:
    rel = cell("path")
    image = Path(rel).expanduser()
    image = image if image.is_absolute() else manifest.parent / image
    positives = _labels(cell(label_col), label_sep)
    common: dict[str, Any] = {
        "image_id": rel,
        "path": image,
        "positives": positives,
        "subject": cell("subject") or None,
        "origin": manifest,
        "where": f"line {line}",
        "group": cell("group") or None,
    }
    problem = None
    objects: tuple[VOCObject, ...] = ()
    avoid: tuple[Region, ...] = ()
    split = split_name(cell("split")) if has_split else None
    key = os.path.normpath(image)
    if not rel:
        problem = "empty 'path'"
    elif key in seen:
        problem = f"duplicate path {rel!r} (first on line {seen[key]})"
    elif has_split and split is None:
        problem = f"split is {cell('split')!r}; expected train, val or test"
    elif cell("boxes"):
        try:
            objects = parse_box_list(cell("boxes"))
        except ValueError as err:
            problem = f"malformed boxes: {err}"
        else:
            unlisted = sorted({o.name for o in objects if not o.difficult} - set(positives))
            if unlisted:
                problem = (
                    f"a box of class {unlisted[0]!r}, which is not among the labels "
                    f"({label_sep.join(positives) or 'none'}); add it or mark the box difficult"
                )
    if problem is None and cell("avoid"):
        try:
            avoid = parse_region_list(cell("avoid"))
        except ValueError as err:
            problem = f"malformed avoid: {err}"
    if rel and key not in seen:
        seen[key] = line
    return ImageRecord(objects=objects, split=split, problem=problem, avoid=avoid, **common)


class ImageManifestDataset(AnnotatedImageDataset):
    """Images listed in a CSV manifest (module docstring), as VOC-format items.

    Args:
        path: The CSV file.
        label_sep: Separator of several labels in one cell (``|``).
        options: :class:`~atcon.data.reading.ReaderOptions`, as for
            :class:`~atcon.data.images.AnnotatedImageDataset`: ``ids`` are ``path`` cells as written;
            ``classes`` default to ``classes.txt`` beside the manifest, else sorted; ``multi_label``
            defaults to multi-label if any row has several labels.
        **keywords: Fields of ``options`` (:class:`~atcon.data.reading.ReaderKeywords`), overriding it.
    """

    format = "csv"

    def __init__(
        self,
        path: str | Path,
        *,
        label_sep: str = LABEL_SEP,
        options: ReaderOptions | None = None,
        **keywords: Unpack[ReaderKeywords],
    ) -> None:
        opts = reader_options(options, keywords)
        path = Path(path).expanduser()
        records = read_image_manifest(path, label_sep=label_sep)
        if opts.classes is None:
            opts = replace(opts, classes=read_class_list(path.parent / "classes.txt"))
        super().__init__(
            records,
            source=path,
            options=opts,
        )
