"""Images and boxes from a COCO object-detection file (``instances_*.json``).

Read from the file:

- ``categories`` become the classes, ordered by category ``id`` (the annotation tool's order); names must
  be unique.
- ``images`` (``id``, ``file_name``, ``width``, ``height``) become the items, in file order; an image's id
  in split files is its ``file_name``. Optional per-image keys ``subject`` and ``split``
  (``train``/``val``/``test``) carry a subject id and a given set, as a manifest's columns do;
  ``group`` names the image's group for per-group metrics, and ``avoid``, a list of COCO boxes
  ``[x, y, w, h]``, the regions a model must not use (a marker, a text token), as a manifest's
  ``avoid`` column.
- ``annotations`` (``image_id``, ``category_id``, ``bbox``, optional ``iscrowd``) give the boxes and the
  image-level labels: a class is positive for an image when it has a non-crowd annotation there.
  ``bbox = [x, y, w, h]`` in 0-based continuous pixels becomes ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``,
  the convention of :class:`~atcon.data.voc.VOCDataset`. ``iscrowd`` boxes are treated as VOC's
  difficult ones: a class present only through them is neither positive nor negative.

Images without annotations are negatives for every class in a multi-label dataset; in a single-label one
(every annotated image has one class, see :mod:`atcon.data.images`) they are bad items. Image files
are looked up in ``image_root``; by default the first of: the JSON's folder, its ``images/`` folder, the
parent's ``images/`` folder, and for ``annotations/instances_<name>.json`` the parent's ``<name>/`` folder
(the COCO release layout) that holds the first image.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atcon.data._common import DataError, not_found, not_utf8
from atcon.data.images import AnnotatedImageDataset, ImageRecord, split_name
from atcon.data.reading import ReaderKeywords, ReaderOptions, reader_options
from atcon.data.voc import VOCObject

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise not_found("COCO annotation file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is fine
    except UnicodeDecodeError as err:
        raise not_utf8(err, path, "annotation file") from None
    except json.JSONDecodeError as err:
        raise DataError(f"not a JSON file ({err})", path) from None
    except RecursionError:
        raise DataError("not a COCO annotation file: its JSON is nested too deeply to be one", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError("not a COCO annotation file: no 'images' list", path)
    if not isinstance(data.get("categories"), list):
        raise DataError("not a COCO annotation file: no 'categories' list", path)
    if not isinstance(data.get("annotations", []), list):
        raise DataError("malformed COCO file: 'annotations' is not a list", path)
    return data


def read_categories(data: dict[str, Any], path: Path) -> dict[int, str]:
    """Map category id to name, ordered by id.

    Raises:
        DataError: A category without an integer ``id`` or a ``name``, or a repeated id or name.
    """
    names: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        cid, name = (cat.get("id"), cat.get("name")) if isinstance(cat, dict) else (None, None)
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str) or not name.strip():
            raise DataError(f"malformed category {k}: {cat!r} (needs an integer id and a name)", path)
        if cid in names:
            raise DataError(f"category id {cid} appears twice", path)
        names[cid] = name.strip()
    dup = [n for n in set(names.values()) if list(names.values()).count(n) > 1]
    if dup:
        raise DataError(f"category name {sorted(dup)[0]!r} appears under several ids", path)
    return dict(sorted(names.items()))


def find_image_root(path: Path, first_file: str | None) -> Path:
    """The folder holding a COCO file's images (module docstring); the JSON's folder if none matches."""
    folder = path.parent
    candidates = [folder, folder / "images", folder.parent / "images"]
    if path.stem.startswith("instances_"):
        candidates.append(folder.parent / path.stem.removeprefix("instances_"))
    if first_file is not None:
        for c in candidates:
            if (c / first_file).is_file():
                return c
    return folder


def _bbox(value: Any) -> tuple[float, float, float, float] | str:
    """XYXY box of a COCO ``[x, y, w, h]``, or what is wrong with it."""
    if not isinstance(value, list) or len(value) != 4:
        return f"bbox {value!r} is not [x, y, w, h]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return f"bbox {value!r} has a coordinate that is not a finite number"
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        return f"bbox {value!r} has a negative width or height"
    return (x, y, x + w, y + h)


def read_coco(
    path: str | Path, *, image_root: str | Path | None = None
) -> tuple[tuple[str, ...], list[ImageRecord]]:
    """Read a COCO file into its classes and one record per image.

    A problem confined to one image (a missing ``file_name``, a repeated ``file_name``, an annotation with
    an unknown category or a malformed ``bbox``, a bad ``split``) is stored in its record's ``problem`` and
    reported, naming the file and the image, when a dataset serves it.

    Args:
        path: The JSON file.
        image_root: Folder of the image files (default: see the module docstring).

    Returns:
        ``(classes, records)``: classes ordered by category id, records in the order of ``images``.

    Raises:
        FileNotFoundError: No such file.
        DataError: Not a COCO file, malformed categories, an image without an id or with a repeated id,
            or an annotation whose ``image_id`` is not an image (the message names the file).

    One function on purpose: the file's sections are checked in order, each check naming the
    offending entry; split up, every part would need the same lookup tables.
    """
    path = Path(path).expanduser()
    data = _load(path)
    categories = read_categories(data, path)
    images = data["images"]
    first = next((im.get("file_name") for im in images if isinstance(im, dict)), None)
    root = Path(image_root).expanduser() if image_root is not None else find_image_root(path, first)
    boxes: dict[Any, list[tuple[VOCObject | None, str | None]]] = {}
    ids: set[Any] = set()
    for k, im in enumerate(images):
        iid = im.get("id") if isinstance(im, dict) else None
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise DataError(f"image entry {k} has no integer or string id: {str(im)[:200]}", path)
        if iid in ids:
            raise DataError(f"image id {iid!r} appears twice", path)
        ids.add(iid)
        boxes[iid] = []
    for k, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise DataError(f"annotation entry {k} is not an object: {ann!r}", path)
        name = f"annotation {ann.get('id', k)}"
        iid = ann.get("image_id")
        if not isinstance(iid, (int, str)) or isinstance(iid, bool) or iid not in ids:
            raise DataError(
                f"{name} refers to image id {ann.get('image_id')!r}, which is not in 'images'", path
            )
        cat = ann.get("category_id")
        box = _bbox(ann.get("bbox"))
        if cat not in categories:
            boxes[ann["image_id"]].append((None, f"{name} has unknown category id {cat!r}"))
        elif isinstance(box, str):
            boxes[ann["image_id"]].append((None, f"{name}: malformed {box}"))
        else:
            obj = VOCObject(categories[cat], box, bool(ann.get("iscrowd", 0)))
            boxes[ann["image_id"]].append((obj, None))
    seen: dict[str, Any] = {}
    records = []
    for im in images:
        iid = im["id"]
        file_name = im.get("file_name")
        file_name = file_name.strip() if isinstance(file_name, str) else ""
        where = f"image {iid!r}" + (f" ({file_name!r})" if file_name else "")
        objects = tuple(o for o, _ in boxes[iid] if o is not None)
        problems = [p for _, p in boxes[iid] if p is not None]
        key = os.path.normpath(file_name)
        if not file_name:
            problems.insert(0, "no file_name")
        elif key in seen:
            problems.insert(0, f"duplicate file_name {file_name!r} (also image {seen[key]!r})")
        else:
            seen[key] = iid
        split = None
        if im.get("split") is not None:
            split = split_name(str(im["split"]))
            if split is None:
                problems.append(f"split is {im['split']!r}; expected train, val or test")
        avoid: list[tuple[float, float, float, float]] = []
        raw_avoid = im.get("avoid") or []
        if not isinstance(raw_avoid, list):
            problems.append(f"avoid is {raw_avoid!r}, not a list of [x, y, w, h] boxes")
            raw_avoid = []
        for k, value in enumerate(raw_avoid, 1):
            region = _bbox(value)
            if isinstance(region, str):
                problems.append(f"avoid region {k}: malformed {region}")
            else:
                avoid.append(region)
        group = im.get("group")
        size = None
        if isinstance(im.get("width"), int) and isinstance(im.get("height"), int):
            size = (int(im["height"]), int(im["width"]))
        subject = im.get("subject")
        records.append(
            ImageRecord(
                image_id=file_name,
                path=root / file_name,
                positives=tuple(dict.fromkeys(o.name for o in objects if not o.difficult)),
                objects=objects,
                subject=None if subject is None or str(subject).strip() == "" else str(subject).strip(),
                split=split,
                size=size,
                origin=path,
                where=where,
                problem=problems[0] if problems else None,
                avoid=tuple(avoid),
                group=None if group is None or str(group).strip() == "" else str(group).strip(),
            )
        )
    return tuple(categories.values()), records


class COCODataset(AnnotatedImageDataset):
    """Images and boxes of a COCO file (module docstring), as VOC-format items.

    Args:
        path: The ``instances_*.json`` file.
        image_root: Folder of the image files (default: found as the module docstring says).
        options: :class:`~atcon.data.reading.ReaderOptions`, as for
            :class:`~atcon.data.images.AnnotatedImageDataset` (``iscrowd`` boxes are the difficult
            ones): ``ids`` are ``file_name`` s; ``classes`` default to the categories ordered by id;
            ``multi_label`` defaults to multi-label if any image has several classes, single-label
            otherwise (then an image without annotations is a bad item: pass ``multi_label=True`` to
            keep such images as negatives).
        **keywords: Fields of ``options`` (:class:`~atcon.data.reading.ReaderKeywords`), overriding it.
    """

    format = "coco"

    def __init__(
        self,
        path: str | Path,
        *,
        image_root: str | Path | None = None,
        options: ReaderOptions | None = None,
        **keywords: Unpack[ReaderKeywords],
    ) -> None:
        opts = reader_options(options, keywords)
        path = Path(path).expanduser()
        categories, records = read_coco(path, image_root=image_root)
        super().__init__(
            records,
            source=path,
            options=opts if opts.classes is not None else replace(opts, classes=categories),
        )
