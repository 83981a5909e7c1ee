"""Single-label images in class folders (the layout of torchvision's ``ImageFolder``).

Layouts read::

    root/<class>/<image>                  one class per folder
    root/<class>/<subject>/.../<image>    the first folder below the class is the image's subject
    root/<set>/<class>/...                sets given by folder: <set> is train, val (or valid,
                                          validation) or test; every top-level folder must be one

Classes are the folder names in sorted order, or the order of a ``classes.txt`` (one name per line) in
``root``. Image files are those with a suffix in :data:`~atcon.data.files.IMAGE_SUFFIXES`; other
files and anything hidden (a name starting with ``.``) are ignored. An image's id is its path relative
to ``root`` (``cat/001.png``), so split files stay valid when the folder moves.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from atcon.data._common import DataError, require_dir
from atcon.data.files import IMAGE_SUFFIXES
from atcon.data.images import AnnotatedImageDataset, ImageRecord, read_class_list, split_name
from atcon.data.reading import ReaderKeywords, ReaderOptions, reader_options

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_below(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (p.is_file() or (p.is_symlink() and not p.exists()))  # a broken link is a bad file, not no file
    )


def scan_image_folders(root: str | Path) -> list[ImageRecord]:
    """List the images of a class-folder tree (see the module docstring), sorted by path.

    Args:
        root: The folder holding the class folders (or the ``train``/``val``/``test`` folders).

    Returns:
        One record per image, single-label, with ``subject`` and ``split`` where the layout gives them.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds no folders.
        DataError: A class folder holds no image (message names it).
    """
    root = require_dir(Path(root).expanduser(), "image folder")
    top = _visible_dirs(root)
    if not top:
        raise FileNotFoundError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    sets = [split_name(p.name) for p in top]
    by_set: list[tuple[str | None, Path]]
    if all(s is not None for s in sets):
        by_set = [(s, c) for s, d in zip(sets, top) for c in _visible_dirs(d)]
        if not by_set:
            raise FileNotFoundError(
                f"no class folders in the set folders of {root} (expected <set>/<class>/)"
            )
    elif any(s is not None for s in sets):
        # Some top folders are sets and others are not: a typo (``tst/``) or a stray folder, which
        # would otherwise turn every set into a class.
        others = [p.name for p, s in zip(top, sets) if s is None]
        raise DataError(
            f"{', '.join(p.name for p, s in zip(top, sets) if s is not None)} look like set folders but "
            f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not train, val (valid, validation) or "
            "test: rename or remove it (classes really named train, val or test need a CSV manifest)",
            root,
        )
    else:
        by_set = [(None, d) for d in top]
    records = []
    for set_name, class_dir in by_set:
        files = _images_below(class_dir)
        if not files:
            raise DataError(
                f"class folder holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or add images",
                class_dir,
            )
        for file in files:
            inner = file.relative_to(class_dir).parts
            records.append(
                ImageRecord(
                    image_id=file.relative_to(root).as_posix(),
                    path=file,
                    positives=(class_dir.name,),
                    subject=inner[0] if len(inner) > 1 else None,
                    split=set_name,
                )
            )
    return records


class ImageFolderDataset(AnnotatedImageDataset):
    """Single-label images from class folders, as VOC-format items with ``target["label"]``.

    Args:
        root: See :func:`scan_image_folders`.
        options: :class:`~atcon.data.reading.ReaderOptions`, as for
            :class:`~atcon.data.images.AnnotatedImageDataset`: ``ids`` are paths relative to ``root``;
            ``classes`` default to ``root/classes.txt``, else the sorted folder names; the data are
            single-label (``multi_label=True`` is an error).
        **keywords: Fields of ``options`` (:class:`~atcon.data.reading.ReaderKeywords`), overriding it.

    Items have no boxes (``target["boxes"]`` has shape ``(0, 4)``).
    """

    format = "folders"

    def __init__(
        self,
        root: str | Path,
        *,
        options: ReaderOptions | None = None,
        **keywords: Unpack[ReaderKeywords],
    ) -> None:
        opts = reader_options(options, keywords)
        if opts.multi_label:
            raise DataError("class folders hold single-label images; leave multi_label unset", root)
        self.root = Path(root).expanduser()
        records = scan_image_folders(self.root)
        if opts.classes is None:
            opts = replace(opts, classes=read_class_list(self.root / "classes.txt"))
        super().__init__(records, source=self.root, options=replace(opts, multi_label=False))
