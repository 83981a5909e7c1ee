"""From a config to datasets: task type, classes, split, transforms, unlabeled images or clips.

Training needs labeled ``train``, ``val`` (model selection) and ``test`` sets drawn from one
split file, so that every method in an experiment sees exactly the same items. Items are
``(x, target)`` as produced by :mod:`atcon.data` (``target["labels"]`` multi-hot for images,
``target["label"]`` class index for clips and single-label images).

The task follows the data: multi-label (sigmoid outputs, BCE, mAP selection) for VOC folders,
the image benchmark and manifests or COCO files with several labels on an image; single-label
(softmax, cross-entropy, macro-F1 selection) for clips, class folders and manifests or COCO
files with one label per image (``multi_label`` forces either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from atcon import data as D
from atcon.data.sources import (
    DEFAULT_FRAME_SIZE,
    BenchmarkClips,
    BenchmarkImages,
    DataSource,
    Kind,
    ManifestBenchmark,
    UserClips,
    UserImages,
    VOCFolder,
)
from atcon.data.unlabeled import UnlabeledFolder
from atcon.evaluate.metrics import Task
from atcon.models import model_preprocess, model_spec
from atcon.train.config import TrainConfig, pool_size


@dataclass
class TaskData:
    """The datasets of one run (see module docstring)."""

    task: Task
    classes: tuple[str, ...]
    video: bool
    split: D.Split
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    unlabeled: Dataset[Any] | None
    image_size: int
    holdout: Dataset[Any] | None = None  # label-free selection's held-out slice (labels never read)


_SUBJECT_SOURCES = (
    "a CSV manifest's subject column, class folders <class>/<subject>/<image>, or a COCO image's "
    "'subject' key"
)


def data_path(cfg: TrainConfig) -> str:
    """``cfg.data``, or the built manifest of a built-in benchmark written as one (``shortcut-fashion``,
    generated on first use), which is then read like the user's own images."""
    if cfg.data in D.BENCHMARKS and D.BENCHMARKS[cfg.data].layout == "manifest":
        return str(D.build_benchmark(cfg.data, seed=cfg.data_seed, size=cfg.data_size) / "manifest.csv")
    return cfg.data


def data_source(cfg: TrainConfig, *, frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> DataSource:
    """The source ``cfg.data`` names (the format is detected, :func:`atcon.data.detect_data`),
    with the config's options checked against it.

    Args:
        cfg: the run's config (``data``, ``data_seed``, ``data_size``, ``multi_label``,
            ``on_bad_file``; ``val_size`` and ``group_by`` are checked here).
        frame_size: clips' ``(H, W)`` (clip sources only).
    """
    source: DataSource
    if cfg.data in D.BENCHMARKS:
        name, seed, size = cfg.data, cfg.data_seed, cfg.data_size
        layout = D.BENCHMARKS[name].layout
        if layout == "manifest":
            source = ManifestBenchmark(
                name, data_seed=seed, size=size, multi_label=cfg.multi_label, on_error=cfg.on_bad_file
            )
        elif layout == "clips":
            source = BenchmarkClips(name, data_seed=seed, size=size, frame_size=frame_size)
        else:
            source = BenchmarkImages(name, data_seed=seed, size=size)
    else:
        path = Path(cfg.data).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data {cfg.data!r} is neither a built-in benchmark ({', '.join(D.BENCHMARKS)}) nor an "
                "existing path"
            )
        found = D.detect_data(path)
        if found.video:
            source = UserClips(cfg.data, on_error=cfg.on_bad_file, frame_size=frame_size)
        elif found.format == "voc":
            source = VOCFolder(cfg.data, on_error=cfg.on_bad_file)
        else:
            source = UserImages(cfg.data, multi_label=cfg.multi_label, on_error=cfg.on_bad_file)
    _check_options(cfg, source.kind)
    return source


def _check_options(cfg: TrainConfig, kind: Kind) -> None:
    """Refuse config options that do not apply to a source of ``kind``."""
    if cfg.multi_label is not None and kind != "images":
        what = {"benchmark": "built-in benchmarks", "voc": "VOC-layout data", "video": "clips"}[kind]
        raise ValueError(
            f"multi_label applies to CSV manifests and COCO files; {what} have a fixed task: leave it unset"
        )
    if cfg.val_size is not None and kind in ("benchmark", "video"):
        why = (
            "it has its own validation set"
            if kind == "benchmark"
            else "clips are dealt into three subject-disjoint sets"
        )
        raise ValueError(f"val_size does not apply to {cfg.data!r}: {why}; leave it unset")
    if cfg.group_by == "subject" and kind in ("benchmark", "voc"):
        raise D.DataError(
            f"group_by='subject' needs subject ids ({_SUBJECT_SOURCES}); "
            f"{'a built-in benchmark' if kind == 'benchmark' else 'VOC-layout data'} has none: drop "
            "--group-by, or write a manifest with a subject column",
            None if kind == "benchmark" else cfg.data,
        )


def open_images(cfg: TrainConfig, **kwargs: Any) -> D.AnnotatedImageDataset:
    """The user's images of ``cfg.data`` (class folders, CSV manifest, COCO file), with ``cfg.multi_label``.

    Args:
        cfg: the run's config.
        **kwargs: passed to :func:`atcon.data.open_image_dataset` (``ids``, ``classes``,
            ``transform``, ...).
    """
    return UserImages(data_path(cfg), multi_label=cfg.multi_label).open(**kwargs)


def _split(cfg: TrainConfig, source: DataSource) -> D.Split:
    if cfg.split is not None:
        return D.Split.load(cfg.split)
    return source.split(cfg.per_class, cfg.split_seed, val_size=cfg.val_size, group_by=cfg.group_by)


def task_split(cfg: TrainConfig) -> D.Split:
    """The split ``cfg`` trains on: its ``split`` file, or drawn from ``per_class``/``split_seed``
    (and ``val_size``, ``group_by``)."""
    return _split(cfg, data_source(cfg))


def training_pool_ids(cfg: TrainConfig, split: D.Split) -> list[str]:
    """Every id of the data's training pool (labeled or not), outside ``split``'s val and test.

    Built-in image benchmarks and VOC folders: the ``train`` image set (the split's
    ``train_split``); the user's images: every image not in val or test (a given train set less
    the validation draw, the images left after drawing validation and test, or the training
    third of a subject-disjoint split); clips: every clip of the manifest. This is where an
    experiment's unlabeled pool is drawn from (:func:`atcon.data.with_unlabeled_pool`).
    """
    return data_source(cfg).pool_ids(split)


def _holdout_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(trained, held out)`` index lists of a pool of ``n`` items (held out: at least 1)."""
    if n < 2:
        raise ValueError(
            f"label-free selection holds out part of the unlabeled pool, which has {n} item(s): "
            "give a larger pool, or --select labels"
        )
    k = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


def image_size_for(cfg: TrainConfig) -> int:
    return cfg.image_size or model_spec(cfg.model).input_size


def input_preprocess(cfg: TrainConfig) -> D.Preprocess:
    """The images' normalisation and resize interpolation: the config's ``mean``/``std``/
    ``interpolation`` where set, else the network's own (:func:`atcon.models.model_preprocess`)."""
    from dataclasses import replace

    own = model_preprocess(cfg.model)
    if cfg.mean is None and cfg.std is None and cfg.interpolation is None:
        return own
    return replace(
        own,
        mean=cfg.mean if cfg.mean is not None else own.mean,
        std=cfg.std if cfg.std is not None else own.std,
        interpolation=cfg.interpolation or own.interpolation,
        source="the run's config",
    )


def with_preprocess(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the preprocessing it resolves to written out (image models), so that the run's
    config and checkpoints record the statistics used."""
    if model_spec(cfg.model).video:
        return cfg
    p = input_preprocess(cfg)
    return cfg.replace(mean=p.mean, std=p.std, interpolation=p.interpolation)


def build_task_data(cfg: TrainConfig, split: D.Split | None = None) -> TaskData:
    """Build the datasets a run needs (benchmarks are generated on first use).

    Args:
        cfg: the run's config (``data``, ``split``/``per_class``, ``model``, ``augment``, ...).
        split: use this split instead of reading or drawing one.
    """
    source = data_source(cfg)  # the config is checked against the data before the model is looked up
    video = model_spec(cfg.model).video
    split = split or _split(cfg, source)
    n_pool = pool_size(cfg.unlabeled)
    if n_pool is not None and len(split.unlabeled) != n_pool:
        split = D.with_unlabeled_pool(split, source.pool_ids(split), n_pool, seed=cfg.split_seed)
    size = image_size_for(cfg)
    if isinstance(source, (BenchmarkClips, UserClips)):
        source.frame_size = (size, size)
    if source.clips != video:
        raise ValueError(
            f"model {cfg.model!r} is {'a video' if video else 'an image'} model but data {cfg.data!r} holds "
            f"{'clips' if source.clips else 'images'}; choose e.g. --model {'small3d' if source.clips else 'small'}"
        )

    def make(ids: Sequence[str], tf: Any) -> Dataset[Any]:
        return source.dataset(ids, tf, classes=split.classes)

    train_tf, eval_tf = _transforms(cfg, size, video)
    return _assemble(cfg, split, make, train_tf, eval_tf, video=video, size=size)


def _transforms(cfg: TrainConfig, size: int, video: bool) -> tuple[Any, Any]:
    """``(training, evaluation)`` transforms of the run's images or clips."""
    if not video:
        pre = input_preprocess(cfg)
        train_tf = (
            D.image_train_transform(size, preprocess=pre)
            if cfg.augment
            else D.image_eval_transform(size, pre)
        )
        return train_tf, D.image_eval_transform(size, pre)

    from atcon.train.strategies import strategy_class

    if not cfg.augment:
        clip_train = D.clip_eval_transform()
    elif strategy_class(cfg.strategy).two_views:  # contrastive views need SimCLR's stronger augmentation
        clip_train = D.clip_simclr_transform(size)
    else:
        clip_train = D.clip_train_transform()
    return clip_train, D.clip_eval_transform()


def _assemble(
    cfg: TrainConfig,
    split: D.Split,
    make: Any,
    train_tf: Any,
    eval_tf: Any,
    *,
    video: bool,
    size: int,
) -> TaskData:
    """The run's datasets from ``make(ids, transform)``, the pool and the label-free holdout."""
    train, val, test = make(split.train, train_tf), make(split.val, eval_tf), make(split.test, eval_tf)
    unlabeled, holdout = _pool(
        cfg,
        split,
        lambda tf: UnlabeledFolder(cfg.unlabeled, tf, video=video, frame_size=size),  # type: ignore[arg-type]
        make,
        train_tf,
        eval_tf,
    )
    # Clips are single-label; so are single-label images (class folders, manifests with one
    # label each), which train with softmax.
    task: Task = (
        "multiclass" if video else train.task if isinstance(train, D.AnnotatedImageDataset) else "multilabel"
    )
    return TaskData(
        task, tuple(split.classes), video, split, train, val, test, unlabeled, size,
        holdout if holdout is not None else _val_holdout(cfg, val),
    )  # fmt: skip


def _val_holdout(cfg: TrainConfig, val: Dataset[Any]) -> Dataset[Any] | None:
    # Without an unlabeled pool, label-free selection reads the validation images, not their labels.
    return val if cfg.select == "label-free" else None


def _pool(
    cfg: TrainConfig,
    split: D.Split,
    folder: Any,
    by_ids: Any,
    train_tf: Any,
    eval_tf: Any,
) -> tuple[Dataset[Any] | None, Dataset[Any] | None]:
    """``(unlabeled training stream, label-free holdout)`` from ``--unlabeled`` or the split's pool.

    With ``select="label-free"`` a seeded ``holdout`` share of the pool is taken out of training
    and served with the evaluation transform for the label-free signals.
    """
    if cfg.unlabeled is not None and pool_size(cfg.unlabeled) is None:
        make = folder
    elif split.unlabeled:
        ids = list(split.unlabeled)

        def make(tf: Any) -> Dataset[Any]:
            return by_ids(ids, tf)
    else:
        return None, None
    stream = make(train_tf)
    if cfg.select != "label-free":
        return stream, None
    trained, held = _holdout_indices(len(stream), cfg.holdout, cfg.seed)
    return Subset(stream, trained), Subset(make(eval_tf), held)
