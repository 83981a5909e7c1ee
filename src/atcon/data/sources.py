"""Where a run's data come from, as objects: one class per kind of source.

Every source answers the same three questions, so a caller never re-dispatches on the kind:

- :meth:`DataSource.split`: the few-shot split drawn from it (``per_class`` items per class, ``seed``).
- :meth:`DataSource.pool_ids`: every id of its training pool outside a split's val and test sets,
  which an unlabeled pool is drawn from (:func:`~atcon.data.split.with_unlabeled_pool`).
- :meth:`DataSource.dataset`: the ``(x, target)`` dataset of some ids, with a transform.

The kinds: a built-in benchmark in VOC layout (:class:`BenchmarkImages`) or of clips
(:class:`BenchmarkClips`), a built-in benchmark written as a CSV manifest and read like the user's
images (:class:`ManifestBenchmark`), a VOC-layout folder (:class:`VOCFolder`), the user's own images
(class folders, CSV manifest, COCO file: :class:`UserImages`) and video clips (:class:`UserClips`).
Benchmarks are generated on first use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch.utils.data import Dataset

from atcon.data._common import OnError
from atcon.data.benchmarks import benchmark_split, build_benchmark, load_benchmark
from atcon.data.fewshot import clip_fewshot_split, voc_fewshot_split
from atcon.data.formats import open_image_dataset
from atcon.data.image_splits import image_fewshot_split
from atcon.data.images import AnnotatedImageDataset
from atcon.data.split import Split
from atcon.data.video import VideoClipDataset
from atcon.data.voc import VOCDataset, find_voc_root, read_image_set

Kind = Literal["benchmark", "voc", "images", "video"]
"""The reader a source needs: a built-in benchmark, a VOC-layout folder, the user's own images
(class folders, CSV manifest, COCO file), or video clips (manifest or class folders)."""

Transform = Callable[..., Any]

DEFAULT_FRAME_SIZE = (80, 80)
"""Clip frames' ``(H, W)`` when a clip source is given none (:class:`~atcon.data.video.VideoClipDataset`'s)."""


class DataSource(ABC):
    """One source of labeled items (module docstring).

    Attributes:
        kind: Which reader it needs (:data:`Kind`).
        clips: Whether its items are clips (video models) rather than images.
    """

    kind: ClassVar[Kind]
    clips: ClassVar[bool] = False

    @abstractmethod
    def split(
        self,
        per_class: int,
        seed: int = 0,
        *,
        val_size: int | float | None = None,
        group_by: Literal["subject"] | None = None,
    ) -> Split:
        """The few-shot split: ``per_class`` training items per class drawn with ``seed``.

        ``val_size`` (validation items drawn from the pool) and ``group_by="subject"``
        (subject-disjoint sets) apply where the source's protocol has them; others ignore them.
        """

    def pool_ids(self, split: Split) -> list[str]:
        """Every id of the training pool (labeled or not), in source order, outside ``split``'s val and test."""
        held = set(split.val) | set(split.test)
        return [i for i in self._pool(split) if i not in held]

    @abstractmethod
    def _pool(self, split: Split) -> list[str]:
        """Every id of the training pool, val and test ids included."""

    @abstractmethod
    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        """The items ``ids``, in this order, each ``transform(x, target)``-ed.

        Args:
            ids: Item ids (of a :class:`~atcon.data.split.Split`).
            transform: Image or clip transform (:mod:`atcon.data.transforms`), or None.
            classes: Label order (a split's ``classes``); built-in benchmarks keep their own.
        """


class BenchmarkImages(DataSource):
    """A built-in benchmark in VOC layout (``cluttered-fashion``): multi-label images with boxes.

    Args:
        name: The benchmark (:data:`~atcon.data.benchmarks.BENCHMARKS`).
        data_seed: Seed that generates its images.
        size: Its size relative to the default.
    """

    kind = "benchmark"

    def __init__(self, name: str, *, data_seed: int = 0, size: float = 1.0) -> None:
        self.name, self.data_seed, self.size = name, data_seed, size

    def folder(self) -> Path:
        """The generated benchmark's folder (generated now if needed)."""
        return build_benchmark(self.name, seed=self.data_seed, size=self.size)

    def split(
        self,
        per_class: int,
        seed: int = 0,
        *,
        val_size: int | float | None = None,
        group_by: Literal["subject"] | None = None,
    ) -> Split:
        # The benchmark has its own val and test sets: val_size and group_by do not apply.
        split: Split = benchmark_split(self.name, per_class, seed, size=self.size, data_seed=self.data_seed)
        return split

    def _pool(self, split: Split) -> list[str]:
        return read_image_set(self.folder(), str(split.meta.get("train_split", "train")))

    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        ds: Dataset[Any] = load_benchmark(
            self.name, ids=list(ids), seed=self.data_seed, size=self.size, transform=transform
        )
        return ds


class BenchmarkClips(BenchmarkImages):
    """A built-in benchmark of clips (``fashion-events``), its pool the generated ``train`` list.

    Args:
        name, data_seed, size: As for :class:`BenchmarkImages`.
        frame_size: ``(H, W)`` of the served frames.
    """

    clips = True

    def __init__(
        self,
        name: str,
        *,
        data_seed: int = 0,
        size: float = 1.0,
        frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    ) -> None:
        super().__init__(name, data_seed=data_seed, size=size)
        self.frame_size = frame_size

    def _pool(self, split: Split) -> list[str]:
        return (self.folder() / "splits" / "train.txt").read_text().split()

    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        # Clips are decoded once and kept: every epoch revisits the same few.
        ds: Dataset[Any] = load_benchmark(
            self.name,
            ids=list(ids),
            seed=self.data_seed,
            size=self.size,
            transform=transform,
            cache=True,
            frame_size=self.frame_size,
        )
        return ds


class VOCFolder(DataSource):
    """A VOC-layout folder (:mod:`atcon.data.voc`): multi-label images with boxes.

    Args:
        root: The folder (:func:`~atcon.data.voc.find_voc_root`).
        on_error: What to do with a bad image (:class:`~atcon.data.reading.ReaderOptions`).
    """

    kind = "voc"

    def __init__(self, root: str | Path, *, on_error: OnError = "raise") -> None:
        self.root, self.on_error = root, on_error

    def split(
        self,
        per_class: int,
        seed: int = 0,
        *,
        val_size: int | float | None = None,
        group_by: Literal["subject"] | None = None,
    ) -> Split:
        # A folder with its own test list (VOC2007, generated benchmarks) keeps its test set, and its
        # val list when it has one; otherwise (VOC2012) the paper's protocol: validation drawn from
        # train, val as test.
        main = find_voc_root(self.root) / "ImageSets" / "Main"
        if (main / "test.txt").is_file():
            has_val = (main / "val.txt").is_file()
            return voc_fewshot_split(
                self.root,
                per_class,
                seed,
                val_size=val_size,
                val_split="val" if has_val else None,
                test_split="test",
            )
        return voc_fewshot_split(self.root, per_class, seed, val_size=val_size)

    def _pool(self, split: Split) -> list[str]:
        return read_image_set(self.root, str(split.meta.get("train_split", "train")))

    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        return VOCDataset(
            self.root, ids=list(ids), classes=classes, transform=transform, on_error=self.on_error
        )


class UserImages(DataSource):
    """The user's images: class folders, a CSV manifest or a COCO file (:mod:`atcon.data.formats`).

    Args:
        path: The folder or file.
        multi_label: Force multi- or single-label (CSV, COCO); default decided from the labels.
        on_error: What to do with a bad image when serving a dataset; splits and pools read every
            image's labels strictly.
    """

    kind = "images"

    def __init__(
        self, path: str | Path, *, multi_label: bool | None = None, on_error: OnError = "raise"
    ) -> None:
        self._path, self.multi_label, self.on_error = path, multi_label, on_error

    @property
    def path(self) -> str | Path:
        """The folder or file read."""
        return self._path

    def open(self, **keywords: Any) -> AnnotatedImageDataset:
        """The images as a dataset; ``keywords`` as for :func:`~atcon.data.formats.open_image_dataset`."""
        ds = open_image_dataset(self.path, multi_label=self.multi_label, **keywords)
        assert isinstance(ds, AnnotatedImageDataset)  # VOC folders are a VOCFolder, not this
        return ds

    def split(
        self,
        per_class: int,
        seed: int = 0,
        *,
        val_size: int | float | None = None,
        group_by: Literal["subject"] | None = None,
    ) -> Split:
        images = self.open()
        return image_fewshot_split(
            images, per_class, seed, val_size=val_size, group_by=group_by, meta={"task": images.task}
        )

    def _pool(self, split: Split) -> list[str]:
        return list(self.open().ids)

    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        return self.open(ids=list(ids), classes=classes, transform=transform, on_error=self.on_error)


class ManifestBenchmark(UserImages):
    """A built-in benchmark written as a CSV manifest (``shortcut-fashion``), read as the user's images.

    Args:
        name, data_seed, size: As for :class:`BenchmarkImages`; the benchmark is generated when
            first read.
        multi_label, on_error: As for :class:`UserImages`.
    """

    def __init__(
        self,
        name: str,
        *,
        data_seed: int = 0,
        size: float = 1.0,
        multi_label: bool | None = None,
        on_error: OnError = "raise",
    ) -> None:
        super().__init__(name, multi_label=multi_label, on_error=on_error)
        self.name, self.data_seed, self.size = name, data_seed, size

    @cached_property
    def path(self) -> str | Path:  # type: ignore[override]
        """The generated ``manifest.csv`` (generated now if needed)."""
        return str(build_benchmark(self.name, seed=self.data_seed, size=self.size) / "manifest.csv")


class UserClips(DataSource):
    """Video clips: a clip manifest or class folders (:class:`~atcon.data.video.VideoClipDataset`),
    dealt into three subject-disjoint sets.

    Args:
        path: The manifest or folder.
        on_error: What to do with a bad clip when serving a dataset.
        frame_size: ``(H, W)`` of the served frames.
    """

    kind = "video"
    clips = True

    def __init__(
        self,
        path: str | Path,
        *,
        on_error: OnError = "raise",
        frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    ) -> None:
        self.path, self.on_error, self.frame_size = path, on_error, frame_size

    def split(
        self,
        per_class: int,
        seed: int = 0,
        *,
        val_size: int | float | None = None,
        group_by: Literal["subject"] | None = None,
    ) -> Split:
        # Clips are always subject-disjoint; val_size does not apply.
        full = VideoClipDataset(self.path, probe=False)
        return clip_fewshot_split(
            list(full.ids), list(full.labels), full.subjects, per_class, seed, classes=full.classes
        )

    def _pool(self, split: Split) -> list[str]:
        return list(VideoClipDataset(self.path, probe=False).ids)

    def dataset(
        self, ids: Sequence[str], transform: Transform | None, *, classes: Sequence[str] | None = None
    ) -> Dataset[Any]:
        return VideoClipDataset(
            self.path,
            ids=list(ids),
            classes=classes,
            on_error=self.on_error,
            transform=transform,
            cache=True,
            frame_size=self.frame_size,
        )
