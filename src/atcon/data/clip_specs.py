"""Which clips a clip dataset holds: :class:`ClipSpec` records from a CSV manifest or class folders.

- a CSV manifest with a header and columns ``path,label,subject`` and optionally ``start,end`` (seconds)
  and ``boxes`` (a per-clip JSON box file, see :func:`read_boxes`); relative paths are relative to the
  manifest's folder; a ``classes.txt`` beside it fixes the label order;
- a folder-per-class tree ``<root>/<label>/<file>`` (subject: the file's stem) or
  ``<root>/<label>/<subject>/<file>``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atcon.data._common import DataError, not_found, require_dir
from atcon.data.files import VIDEO_SUFFIXES

__all__ = ["ClipSpec", "read_boxes", "read_manifest", "scan_class_folders"]


@dataclass(frozen=True)
class ClipSpec:
    """One clip: where it is, its class and subject, its time window and optional box file.

    Attributes:
        path: Video file.
        label: Class name.
        subject: Subject (patient) id; clips of one subject never go to two split sets.
        clip_id: Stable id used in split files (manifest path, plus ``@start`` when a start is given).
        start: First sample time in seconds (default 0).
        end: End of the event in seconds, if known; the clip must fit before it.
        boxes: Per-frame box file (JSON), if any.
    """

    path: Path
    label: str
    subject: str
    clip_id: str
    start: float | None = None
    end: float | None = None
    boxes: Path | None = None


def _float_or_none(value: str | None, column: str, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError as err:
        raise DataError(f"{where}: column {column!r} is {value!r}, not a number") from err


def read_manifest(path: str | Path) -> list[ClipSpec]:
    """Read a CSV clip manifest.

    Args:
        path: CSV file with a header ``path,label,subject[,start,end][,boxes]`` (other columns ignored).

    Returns:
        The clips in file order.

    Raises:
        FileNotFoundError: No such manifest.
        DataError: A required column or value is missing, or a number is malformed (message gives file
            and line).
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("manifest", path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "subject"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"manifest lacks column(s) {', '.join(sorted(missing))}", path)
        clips = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            for col in ("path", "label", "subject"):
                if not (row.get(col) or "").strip():
                    raise DataError(f"{where}: empty {col!r}")
            rel = row["path"].strip()
            start = _float_or_none(row.get("start"), "start", where)
            end = _float_or_none(row.get("end"), "end", where)
            boxes = (row.get("boxes") or "").strip()
            clips.append(
                ClipSpec(
                    path=path.parent / rel,
                    label=row["label"].strip(),
                    subject=row["subject"].strip(),
                    clip_id=rel if not start else f"{rel}@{start:g}",
                    start=start,
                    end=end,
                    boxes=path.parent / boxes if boxes else None,
                )
            )
    return clips


def scan_class_folders(root: str | Path) -> list[ClipSpec]:
    """List the videos of a folder-per-class tree (see the module docstring), sorted by path."""
    root = require_dir(Path(root).expanduser(), "video folder")
    clips = []
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() not in VIDEO_SUFFIXES or not file.is_file():
            continue
        parts = file.relative_to(root).parts
        if len(parts) not in (2, 3):
            continue
        subject = parts[1] if len(parts) == 3 else file.stem
        clips.append(ClipSpec(file, parts[0], subject, "/".join(parts)))
    if not clips:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in class folders under {root}")
    return clips


def read_boxes(path: str | Path) -> tuple[float, int, int, np.ndarray]:
    """Read a per-frame box file.

    Format: JSON ``{"fps": 4, "width": W, "height": H, "boxes": [[x1, y1, x2, y2], ...]}``, one box per
    video frame (frame ``k`` shown at ``k / fps`` s), 0-based pixel coordinates of the source video.

    Returns:
        ``(fps, width, height, boxes)`` with ``boxes`` ``float32`` of shape ``(num_video_frames, 4)``.
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("box file", path)
    try:
        data = json.loads(path.read_text())
        boxes = np.asarray(data["boxes"], dtype=np.float32).reshape(-1, 4)
        return float(data["fps"]), int(data["width"]), int(data["height"]), boxes
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"malformed box file ({err!r})", path) from err
