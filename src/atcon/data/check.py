"""Find the bad files of a dataset before training does: ``atcon data info --check``.

A corrupt JPEG is otherwise found when training first reads it, possibly hours in. :func:`check_files`
opens the dataset as ``on_error="skip"`` does (every image decoded once; every clip probed, then its
frames decoded) and returns what that would drop, each error naming its file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from atcon.data._common import DataError, flat_decode


@dataclass
class FileCheck:
    """The outcome of :func:`check_files`.

    Attributes:
        path: what was checked (the file or folder read).
        what: ``"images"`` or ``"clips"``.
        checked: items checked.
        bad: one error per bad item, naming its file and what is wrong.
    """

    path: Path
    what: str
    checked: int
    bad: list[DataError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad


def check_files(path: str | Path) -> FileCheck:
    """Decode every image (or clip) of a dataset once and collect the bad ones.

    Every format ``--data`` takes is read (:func:`~atcon.data.detect_data`). VOC folders: every
    id of ``Annotations/`` and of the ``ImageSets/Main`` lists (an id without its annotation
    is bad too). The files are those ``--on-bad-file skip`` would drop.

    Args:
        path: a dataset (VOC folder, class folders, CSV manifest, COCO file, clip manifest or
            folder-per-class videos).

    Returns:
        A :class:`FileCheck`.

    Raises:
        FileNotFoundError, DataError: the path is missing or holds no known format.
    """
    from atcon.data.formats import detect_data, open_image_dataset

    found = detect_data(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skip readers warn with a count: the report says more
        if found.video:
            return _check_clips(found.path)
        ids = _voc_ids(found.path) if found.format == "voc" else None
        ds = open_image_dataset(found.path, ids=ids, on_error="skip")
        checked = len(ds) + len(ds.skipped)
        bad = list(ds.skipped)
        for image in _image_paths(ds):
            problem = flat_decode(image)
            if problem is not None:
                bad.append(DataError(problem, image))
        return FileCheck(found.path, "images", checked, bad)


def _image_paths(ds: object) -> list[Path]:
    """The image files a dataset serves (every reader's records or annotations know them)."""
    records = getattr(ds, "records", None)
    if records is not None:
        return [r.path for r in records]
    return [ds.image_path(a) for a in ds.annotations]  # type: ignore[attr-defined]


def _voc_ids(root: Path) -> list[str]:
    ids = {p.stem for p in (root / "Annotations").glob("*.xml")}
    for listing in (root / "ImageSets" / "Main").glob("*.txt"):
        if "_" not in listing.stem:  # per-class lists (aeroplane_train.txt) hold "id 1" rows
            ids.update(line.split()[0] for line in listing.read_text().splitlines() if line.strip())
    return sorted(ids)


def _check_clips(path: Path) -> FileCheck:
    from atcon.data.video import VideoClipDataset

    ds = VideoClipDataset(path, on_error="skip", probe=True)
    bad = list(ds.skipped)
    for i in range(len(ds)):  # a CLI check, not a hot path: one decode per clip
        try:
            ds.frames(i)
        except (DataError, OSError) as err:
            bad.append(err if isinstance(err, DataError) else DataError(str(err), ds.clips[i].path))
    return FileCheck(path, "clips", len(ds) + len(ds.skipped), bad)
