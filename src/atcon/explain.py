"""Attention maps of trained checkpoints, ready to save and to plot (paper Figures 1-2).

:func:`load_inputs` turns what the user names (image files, folders, video files, ``test:N``
for the first N test items of the checkpoint's run) into one normalised batch;
:func:`compute_maps` gives the signed Grad-CAM, Guided Backprop, consistency mask and score of
each item (:class:`RawMaps`, what ``atcon explain`` saves), and :func:`to_model_maps` their
display form for :func:`atcon.viz.comparison_figure`. :func:`attention_examples` draws that
figure for the first items of a dataset (the evaluation and demo reports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from atcon.evaluate.metrics import Task
from atcon.trained_models import LoadedModel, checkpoint_dataset, display_stats

if TYPE_CHECKING:  # pragma: no cover
    from atcon.viz import ModelMaps

_CHUNK = 8  # items per Grad-CAM / Guided Backprop pass: bounds memory on large inputs


def label_text(scores: Tensor, task: Task, classes: tuple[str, ...], threshold: float = 0.5) -> list[str]:
    """Predicted labels as text: classes over the threshold (multi-label, ``"none"`` if none) or the argmax."""
    if task == "multiclass":
        return [classes[int(i)] for i in scores.argmax(dim=1)]
    hits = scores.float().sigmoid() > threshold
    return ["+".join(classes[c] for c in row.nonzero()[:, 0].tolist()) or "none" for row in hits]


def truth_text(target: dict[str, Any], task: Task, classes: tuple[str, ...]) -> list[str]:
    """Ground-truth labels of a collated batch as text."""
    if task == "multiclass":
        return [classes[int(i)] for i in torch.as_tensor(target["label"]).reshape(-1)]
    labels = torch.as_tensor(target["labels"]) > 0.5
    return ["+".join(classes[c] for c in row.nonzero()[:, 0].tolist()) or "none" for row in labels]


@dataclass
class Inputs:
    """A batch to explain: normalised inputs, names and, for test items, ground truth.

    Attributes:
        x: normalised inputs, ``(N, C, H, W)`` or ``(N, C, T, H, W)``.
        names: a name per item (file name, or ``testNNN-<id>``).
        truth: ground-truth text per item (``""`` for files).
        truth_index: (N,) first ground-truth class, -1 when none.
    """

    x: Tensor
    names: list[str]
    truth: list[str]
    truth_index: Tensor | None


def _load_files(paths: list[Path], loaded: LoadedModel) -> Inputs:
    from atcon import data as D

    size = loaded.image_size or 128
    suffixes = D.VIDEO_SUFFIXES if loaded.video else D.IMAGE_SUFFIXES
    files = D.collect_files(paths, suffixes, "video" if loaded.video else "image")
    if loaded.video:
        tf = D.clip_eval_transform()
        clips = []
        for f in files:
            if f.suffix.lower() not in D.VIDEO_SUFFIXES:
                raise ValueError(f"{f} is not a video file, but {loaded.name} is a video model")
            frames, _ = D.decode_clip(f, size=(size, size))
            clips.append(torch.as_tensor(tf(frames)).permute(1, 0, 2, 3))
        x = torch.stack(clips)
    else:
        for f in files:
            if f.suffix.lower() in D.VIDEO_SUFFIXES:
                raise ValueError(f"{f} is a video, but {loaded.name} is an image model")
        pre = loaded.preprocess
        raw, _ = D.load_images(files, size, pre.interpolation)
        x = (raw - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]
    return Inputs(x, [f.name for f in files], [""] * len(files), None)


def _load_test(n: int, loaded: LoadedModel) -> Inputs:
    from atcon.data import collate

    ds = checkpoint_dataset(loaded, "test")
    n = min(n, len(ds))  # type: ignore[arg-type]
    if n < 1:
        raise ValueError("the test set is empty")
    x, target = collate([ds[i] for i in range(n)])
    truth = truth_text(target, loaded.task, loaded.classes)
    if loaded.task == "multiclass":  # clips and single-label images
        first = torch.as_tensor(target["label"]).long()
    else:
        labels = torch.as_tensor(target["labels"]) > 0.5
        first = torch.where(labels.any(1), labels.float().argmax(1), torch.full((n,), -1))
    ids = [str(i) for i in target.get("clip_id", target.get("image_id", range(n)))]
    return Inputs(x, [f"test{i:03d}-{name}" for i, name in enumerate(ids)], truth, first)


def load_inputs(specs: list[str], loaded: LoadedModel) -> Inputs:
    """One batch from image or video files, folders and ``test:N`` (the first N test items).

    Args:
        specs: the inputs as the user wrote them.
        loaded: the checkpoint (its kind, input size and test set).

    Raises:
        FileNotFoundError: a file or folder does not exist, or a folder holds no input.
        ValueError: inputs of the wrong kind or of different sizes.
    """
    parts: list[Inputs] = []
    files: list[Path] = []
    for s in specs:
        m = re.fullmatch(r"test:(\d+)", s)
        if m:
            parts.append(_load_test(int(m.group(1)), loaded))
        else:
            files.append(Path(s))
    if files:
        parts.append(_load_files(files, loaded))
    shapes = {tuple(p.x.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"inputs of different sizes cannot be explained together: {sorted(shapes)}")
    first = [p.truth_index if p.truth_index is not None else torch.full((len(p.names),), -1) for p in parts]
    return Inputs(
        torch.cat([p.x for p in parts]),
        [n for p in parts for n in p.names],
        [t for p in parts for t in p.truth],
        torch.cat(first).long(),
    )


@dataclass
class RawMaps:
    """Signed maps of one model for a batch (layer resolution), with what produced them."""

    gradcam: Tensor
    guided_backprop: Tensor
    mask: Tensor | None
    consistency: Tensor
    targets: Tensor
    logits: Tensor
    layer: str


def compute_maps(
    loaded: LoadedModel, x: Tensor, targets: Tensor | None = None, device: str = "cpu"
) -> RawMaps:
    """Signed Grad-CAM, Guided Backprop, the consistency mask and score (chunked, on ``device``).

    The consistency score is the negated loss of the checkpoint's own consistency settings
    (``1 - loss`` for SSIM), so higher means more consistent.

    Args:
        loaded: the model.
        x: normalised inputs.
        targets: class per item (None: each item's top-1 class).
        device: where to compute.

    Returns:
        The maps, on the CPU.

    Shape:
        x: (N, C, H, W) or (N, C, T, H, W); targets: (N,).
    """
    from atcon.attention import gradcam_and_guided_backprop
    from atcon.consistency import ConsistencyConfig, attention_consistency

    cfg = loaded.checkpoint.get("config", {})
    config = ConsistencyConfig(
        resolution=cfg.get("resolution", "gb_mask"), similarity=cfg.get("similarity", "pearson")
    )
    model = loaded.model.to(device).eval()
    parts: list[RawMaps] = []
    for start in range(0, x.shape[0], _CHUNK):
        xb = x[start : start + _CHUNK].to(device)
        tb = None if targets is None else targets[start : start + _CHUNK].to(device)
        cam, gb, t = gradcam_and_guided_backprop(model, xb, loaded.target_layer, tb)
        res = attention_consistency(model, xb, config, target_layer=loaded.target_layer, targets=t)
        parts.append(
            RawMaps(
                cam.cpu(),
                gb.cpu(),
                None if res.mask is None else res.mask.detach().cpu(),
                (-res.loss).detach().cpu() if config.similarity != "ssim" else (1 - res.loss).detach().cpu(),
                t.cpu(),
                res.logits.detach().cpu(),
                res.layer,
            )
        )
    return RawMaps(
        torch.cat([p.gradcam for p in parts]),
        torch.cat([p.guided_backprop for p in parts]),
        None if parts[0].mask is None else torch.cat([p.mask for p in parts if p.mask is not None]),
        torch.cat([p.consistency for p in parts]),
        torch.cat([p.targets for p in parts]),
        torch.cat([p.logits for p in parts]),
        parts[0].layer,
    )


def to_model_maps(loaded: LoadedModel, x: Tensor, raw: RawMaps) -> ModelMaps:
    """Display maps (ReLU'd Grad-CAM upsampled to the input) for :func:`atcon.viz.comparison_figure`."""
    from atcon.attention import upsample_to_input
    from atcon.viz import ModelMaps

    preds = label_text(raw.logits, loaded.task, loaded.classes)
    shown = [
        f"{p} [map: {loaded.classes[int(t)]}]" if p != loaded.classes[int(t)] else p
        for p, t in zip(preds, raw.targets)
    ]
    cams = upsample_to_input(raw.gradcam.clamp(min=0), x)
    return ModelMaps(loaded.name, cams, raw.guided_backprop, shown, raw.mask, raw.consistency)


def model_maps(
    loaded: LoadedModel, x: Tensor, targets: Tensor | None = None, device: str = "cpu"
) -> ModelMaps:
    """Maps of a model's top-1 (or given) classes ready to plot."""
    return to_model_maps(loaded, x, compute_maps(loaded, x, targets, device))


def attention_examples(models: list[LoadedModel], dataset: Dataset[Any], n: int) -> Any:
    """Comparison figure (paper Figures 1-2) of the first ``n`` items for one or two models.

    Clips are shown by their middle frame.

    Returns:
        A matplotlib figure.
    """
    from atcon.data import collate
    from atcon.viz import comparison_figure

    n = min(n, len(dataset))  # type: ignore[arg-type]
    x, target = collate([dataset[i] for i in range(n)])
    first = models[0]
    truth = truth_text(target, first.task, first.classes)
    maps = [model_maps(m, x) for m in models]
    mean, std = display_stats(first)
    if x.ndim == 5:
        frame = x.shape[2] // 2
        x = x[:, :, frame]
        maps = [m.frame(frame) for m in maps]
    return comparison_figure(x, truth, maps, mean=mean, std=std)
