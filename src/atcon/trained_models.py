"""Trained atcon checkpoints: the model, the items it was tested on, and its evaluation.

:func:`load_model` rebuilds the classifier of a run's ``checkpoints/best.pt`` (or ``last.pt``)
with weights-only loading; :func:`checkpoint_dataset` rebuilds the test (or validation) set of
the run it came from, or reads another data source with the checkpoint's classes and input
size; :func:`evaluate_checkpoint` evaluates it (Tables 1-3 figures with bootstrap intervals).
``atcon evaluate``, ``atcon explain``, ``atcon sanity``, the demo and the experiments all go
through these functions.

Checkpoints here are finished runs' models; resuming a run's training is
:mod:`atcon.train.training_state`. ``atcon.checkpoints``, this module's former name, still imports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset

from atcon.evaluate.metrics import Task

if TYPE_CHECKING:  # pragma: no cover
    from atcon.evaluate.results import EvalSpec, EvaluationResult

_REQUIRED = ("model", "model_name", "num_classes", "classes", "task", "config")


@dataclass
class LoadedModel:
    """A model rebuilt from an atcon checkpoint.

    Attributes:
        model: the classifier, in eval mode on the CPU.
        checkpoint: the checkpoint dict (``config``, ``classes``, ``task``, ...).
        path: the checkpoint file.
        name: a label (the run folder's name).
        sha256: hash of the checkpoint file.
    """

    model: nn.Module
    checkpoint: dict[str, Any]
    path: Path
    name: str
    sha256: str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["classes"])

    @property
    def task(self) -> Task:
        task: Task = self.checkpoint["task"]
        return task

    @property
    def video(self) -> bool:
        return bool(self.checkpoint.get("video", False))

    @property
    def run_dir(self) -> Path:
        """The run folder (``RUN/checkpoints/best.pt`` -> ``RUN``)."""
        parent = self.path.resolve().parent
        return parent.parent if parent.name == "checkpoints" else parent

    @property
    def target_layer(self) -> str | None:
        from atcon.models import model_spec

        layer = self.checkpoint.get("config", {}).get("target_layer")
        return layer or model_spec(self.checkpoint["model_name"]).target_layer

    @property
    def preprocess(self) -> Any:
        """The inputs' normalisation and interpolation (:class:`~atcon.data.Preprocess`): as the
        checkpoint records them, else the network's own."""
        from dataclasses import replace as with_values

        from atcon.models import model_preprocess

        own = model_preprocess(self.checkpoint["model_name"])
        mean, std = self.checkpoint.get("mean"), self.checkpoint.get("std")
        if mean is None or std is None:
            return own
        interpolation = self.checkpoint.get("interpolation") or own.interpolation
        return with_values(
            own, mean=tuple(mean), std=tuple(std), interpolation=interpolation, source="the checkpoint"
        )

    @property
    def image_size(self) -> int | None:
        """Input side the model was trained at (None when the checkpoint does not say)."""
        return int(self.checkpoint.get("image_size") or 0) or None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), as hex."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(path: str | Path, name: str | None = None) -> LoadedModel:
    """Rebuild the model of an atcon training checkpoint (weights-only loading).

    Args:
        path: ``checkpoints/best.pt`` or ``last.pt`` of a run.
        name: label for tables (default: the run folder's name).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an atcon training checkpoint, or its weights are not finite.
    """
    from atcon.models import build_model
    from atcon.train.training_state import load_checkpoint, non_finite_entries

    path = Path(path)
    ckpt = load_checkpoint(path)
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not an atcon training checkpoint (missing {', '.join(missing)})")
    bad = non_finite_entries(ckpt["model"])
    if bad:
        raise ValueError(
            f"{path} holds non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
            "its predictions and maps would be meaningless; use a checkpoint of a run that trained without NaN"
        )
    model = build_model(ckpt["model_name"], int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    loaded = LoadedModel(model.eval(), ckpt, path, name or "", file_sha256(path))
    if not name:
        loaded.name = loaded.run_dir.name
    return loaded


def checkpoint_dataset(loaded: LoadedModel, split: str = "test", data: str | None = None) -> Dataset[Any]:
    """The evaluation items of a checkpoint.

    Without ``data``: the ``split`` (``test`` or ``val``) of the run's ``split.json`` (drawn
    again from the config when the file is missing). With ``data``: that source's own
    ``split`` list -- a built-in benchmark's split, a VOC folder's ``ImageSets/Main/<split>.txt``,
    the images a CSV manifest, COCO file or class-folder tree assigns to ``split`` (all its
    images when it assigns none), or every clip of a video folder/manifest -- with the
    checkpoint's classes, task and input size.

    Args:
        loaded: the checkpoint.
        split: ``"test"`` or ``"val"``.
        data: another data source, or None for the run's own.

    Raises:
        DataError: ``data`` holds clips for an image model (or the reverse), single-label images
            for a multi-label model (or the reverse), or no image of ``split``.
    """
    from atcon import data as D
    from atcon.train.config import TrainConfig
    from atcon.train.data import build_task_data

    cfg = TrainConfig(**loaded.checkpoint["config"])
    if data is None:
        split_file = loaded.run_dir / "split.json"
        task_data = build_task_data(cfg, D.Split.load(split_file) if split_file.is_file() else None)
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val' for a run's own data, got {split!r}")
        ds: Dataset[Any] = task_data.test if split == "test" else task_data.val
        return ds
    classes = list(loaded.classes)
    side = loaded.image_size or 128
    if data in D.BENCHMARKS:
        if loaded.video:
            return D.load_benchmark(  # type: ignore[no-any-return]
                data,
                split,
                seed=cfg.data_seed,
                size=cfg.data_size,
                transform=D.clip_eval_transform(),
                cache=True,
                frame_size=(side, side),
                classes=classes,
            )
        return D.load_benchmark(  # type: ignore[no-any-return]
            data,
            split,
            seed=cfg.data_seed,
            size=cfg.data_size,
            transform=D.image_eval_transform(side, loaded.preprocess),
            classes=classes,
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data {data!r} is neither a built-in benchmark ({', '.join(D.BENCHMARKS)}) nor a path"
        )
    found = D.detect_data(path)
    if found.video != loaded.video:
        kind = "a video" if loaded.video else "an image"
        raise D.DataError(f"holds {found.description}, but {loaded.name} is {kind} model", path)
    if loaded.video:
        return D.VideoClipDataset(
            path, classes=classes, transform=D.clip_eval_transform(), frame_size=(side, side), cache=True
        )
    if found.format == "voc":
        if loaded.task != "multilabel":
            raise D.DataError(
                f"VOC-layout data are multi-label, but {loaded.name} is a single-label model", path
            )
        return D.VOCDataset(
            path, split, classes=classes, transform=D.image_eval_transform(side, loaded.preprocess)
        )
    return _own_images(loaded, found, split, classes, side)


def _own_images(loaded: LoadedModel, found: Any, split: str, classes: list[str], side: int) -> Dataset[Any]:
    """The user's images (class folders, CSV, COCO) of ``split``, read with the checkpoint's task."""
    from atcon import data as D

    multi = loaded.task == "multilabel"
    if found.format == "folders" and multi:
        raise D.DataError(
            f"class folders hold single-label images, but {loaded.name} is a multi-label model", found.path
        )
    kw: dict[str, Any] = {"classes": classes, "multi_label": None if found.format == "folders" else multi}
    every = D.open_image_dataset(found.path, **kw)
    given = [i for i, s in zip(every.ids, getattr(every, "splits", [])) if s is not None]
    ids = [i for i, s in zip(every.ids, getattr(every, "splits", [])) if s == split]
    if given and not ids:
        raise D.DataError(f"no image is in the given {split} set; choose another --split", found.path)
    transform = D.image_eval_transform(side, loaded.preprocess)
    return D.open_image_dataset(found.path, ids=ids or None, transform=transform, **kw)


def display_stats(loaded: LoadedModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean and std of the model's inputs (its own for images, Kinetics for clips)."""
    from atcon.data import KINETICS_MEAN, KINETICS_STD

    if loaded.video:
        return KINETICS_MEAN, KINETICS_STD
    p = loaded.preprocess
    return p.mean, p.std


def evaluate_checkpoint(
    checkpoint: LoadedModel | str | Path,
    dataset: Dataset[Any] | None = None,
    spec: EvalSpec | None = None,
    *,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a trained checkpoint (Tables 1-3 figures with bootstrap intervals).

    The task, the class names and (unless ``spec`` names one) the Grad-CAM layer come from the
    checkpoint; everything else from ``spec``. The result is named after the checkpoint
    (:attr:`LoadedModel.name`).

    Args:
        checkpoint: a loaded checkpoint, or the path of one.
        dataset: the items (default: the test set of the checkpoint's run).
        spec: how to evaluate (default: :class:`~atcon.evaluate.EvalSpec` defaults).
        progress: show a progress bar.

    Returns:
        The :class:`~atcon.evaluate.EvaluationResult`.
    """
    from atcon.evaluate.pipeline import evaluate_model
    from atcon.evaluate.results import EvalSpec

    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    if dataset is None:
        dataset = checkpoint_dataset(loaded, "test")
    spec = spec or EvalSpec()
    spec = replace(
        spec, task=loaded.task, classes=loaded.classes, target_layer=spec.target_layer or loaded.target_layer
    )
    return evaluate_model(loaded.model, dataset, spec, name=loaded.name, progress=progress)
