"""What every image reader shares: one options object, and decoding through the process-wide store.

The readers (:class:`~atcon.data.voc.VOCDataset`, :class:`~atcon.data.images.AnnotatedImageDataset`
and its class-folder, CSV and COCO subclasses, :func:`~atcon.data.formats.open_image_dataset`) take
a :class:`ReaderOptions` as ``options=``, or the same settings as keywords (:class:`ReaderKeywords`),
which override the object's fields::

    opts = ReaderOptions(classes=("cat", "dog"), on_error="skip")
    VOCDataset(root, options=opts, ids=split.train)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypedDict

import torch

from atcon.data import decoded
from atcon.data._common import OnError, check_on_error, read_image_rgb


@dataclass(frozen=True)
class ReaderOptions:
    """How an image reader serves its source.

    Attributes:
        ids: Image ids to serve, in this order (e.g. from a split file); default all (VOC: the
            ``split`` list).
        classes: Class names in label order; default the reader's own (a ``classes.txt``, the names
            found). Any other name in an annotation is an error ("unknown class").
        multi_label: Force multi-label (``True``) or single-label (``False``); default decided from the
            source. VOC data are multi-label and class folders single-label: the other is an error.
        transform: Called as ``transform(image, target)`` with a ``uint8`` ``tv_tensors.Image`` and the
            :class:`~atcon.data.item.Target`; returns the pair (:mod:`atcon.data.transforms`).
        on_error: ``"raise"`` stops at the first bad item with an error naming its file; ``"skip"``
            drops bad items (images are then test-decoded at construction) with one warning.
        difficult_as_positive: Count a class present only through difficult boxes as positive.
        cache: Keep decoded images in the process-wide store (:mod:`atcon.data.decoded`).
    """

    ids: Sequence[str] | None = None
    classes: Sequence[str] | None = None
    multi_label: bool | None = None
    transform: Callable[..., Any] | None = None
    on_error: OnError = "raise"
    difficult_as_positive: bool = False
    cache: bool = False

    def __post_init__(self) -> None:
        check_on_error(self.on_error)  # a misspelt strategy fails here, before any file is read


class ReaderKeywords(TypedDict, total=False):
    """:class:`ReaderOptions`' fields as keywords of a reader (each overrides ``options``)."""

    ids: Sequence[str] | None
    classes: Sequence[str] | None
    multi_label: bool | None
    transform: Callable[..., Any] | None
    on_error: OnError
    difficult_as_positive: bool
    cache: bool


def reader_options(options: ReaderOptions | None, keywords: ReaderKeywords) -> ReaderOptions:
    """``options`` (default all defaults) with the given ``keywords`` written over it.

    Raises:
        TypeError: A keyword is not a field of :class:`ReaderOptions`.
    """
    known = {f.name for f in fields(ReaderOptions)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    return replace(options or ReaderOptions(), **keywords)


class DecodedImages:
    """Decoding of a reader's image files, through the process-wide store when ``cache`` is on.

    Subclasses set ``cache`` and say which files they serve (:meth:`_image_paths`).
    """

    cache: bool

    def _image_paths(self) -> Iterable[Path]:
        """Every served image file, in item order."""
        raise NotImplementedError

    def preload(self) -> None:
        """Decode every image into the process-wide store now (turns ``cache`` on; forked workers share it)."""
        self.cache = True
        for path in self._image_paths():
            self._read(path)

    def _read(self, path: Path) -> torch.Tensor:
        """The file as ``uint8`` ``(3, H, W)`` RGB."""
        if not self.cache:
            return read_image_rgb(path)
        return decoded.get_or_decode(("image", str(path)), lambda: read_image_rgb(path))
