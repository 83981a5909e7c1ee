"""One batched pass of a classifier over a labeled dataset (Tables 1-3).

:func:`evaluate_model` runs over a dataset once, batched on the device, and collects

* the logits of every item (classification metrics of Tables 1-2: per-class F1, macro/micro
  F1, mAP);
* the ReLU'd Grad-CAM of every true-positive (item, class) pair and its localization values
  against that class's boxes (Table 3: IoU; also pointing game and energy) and, where the data
  mark regions to avoid, the share of its mass inside them, see
  :class:`~atcon.evaluate.LocalizationProtocol`;
* the items' groups (``target["group"]``), for per-group accuracy and F1;
* optionally the deletion/insertion AUC of those maps;

then hands them to :func:`~atcon.evaluate.summarize` for the bootstrap intervals.

Maps of several classes of one image come from a single forward pass: the backbone runs without
an autograd graph up to the Grad-CAM layer, whose output becomes a leaf; one small backward per
"round" (the r-th true-positive class of each image) goes through the head only. Nothing is
repeated per item in Python beyond collation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from atcon._progress import interactive, line
from atcon.attention.hooks import FeatureReader, eval_mode, feature_reader, unwrap_model
from atcon.attention.maps import as_logits, gradcam_from
from atcon.devices import resolve_device
from atcon.evaluate.faithfulness import deletion_insertion
from atcon.evaluate.localization import (
    LocalizationProtocol,
    LocalizationResult,
    boxes_for_pairs,
    localization_metrics,
    true_positive_pairs,
)
from atcon.evaluate.metrics import Task, labels_of
from atcon.evaluate.results import EvalSpec, EvaluationResult, as_spec, item_groups, summarize


@contextlib.contextmanager
def _head_graph(model: nn.Module, layer: nn.Module | FeatureReader) -> Iterator[dict[str, Tensor]]:
    """Forward passes inside the block record an autograd graph from ``layer``'s output on only.

    The backbone runs under ``no_grad`` (no activations kept); the layer's output is replaced by
    a leaf that requires grad, and grad mode is switched on for the rest of the forward pass, so
    Grad-CAM gradients cost one backward through the head. Grad mode is restored on exit.
    """
    captured: dict[str, Tensor] = {}
    reader = layer if isinstance(layer, FeatureReader) else None
    module = layer.module if isinstance(layer, FeatureReader) else layer

    def hook(_m: nn.Module, _inp: object, out: object) -> Tensor:
        if not isinstance(out, Tensor):
            raise ValueError(f"the Grad-CAM layer returned {type(out).__name__}, not a tensor")
        torch.set_grad_enabled(True)
        if reader is None:
            leaf = out.detach().requires_grad_(True)
            captured["features"] = leaf
            return leaf.clone()  # downstream inplace ops must not modify the leaf
        # Token or channels-last outputs: the leaf is the (B, K, *grid) map the rest is rebuilt from.
        features, layout = reader.read(out.detach())
        leaf = features.detach().requires_grad_(True)
        captured["features"] = leaf
        return reader.rebuild(leaf.clone(), out, layout)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            yield captured
    finally:
        handle.remove()


def _pair_rounds(pairs: Tensor, batch: int) -> tuple[Tensor, int]:
    """Rank of each pair among its item's pairs (pairs sorted by item), and the largest count."""
    if pairs.numel() == 0:
        return pairs.new_zeros(0), 0
    counts = torch.bincount(pairs[:, 0], minlength=batch)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(pairs.shape[0], device=pairs.device) - starts[pairs[:, 0]]
    return rank, int(counts.max())


def batch_gradcams(
    model: nn.Module, x: Tensor, layer: nn.Module | FeatureReader, pairs_fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of a batch and the ReLU'd Grad-CAM of chosen (item, class) pairs, one forward pass.

    Args:
        model: classifier in eval mode.
        x: input batch.
        layer: the Grad-CAM layer: a module whose output is ``(B, K, *spatial)``, or a
            :class:`~atcon.attention.hooks.FeatureReader` for token and channels-last outputs.
        pairs_fn: maps the batch logits (B, C) to the ``(item, class)`` rows (P, 2) whose maps
            are wanted, sorted by item (e.g. the true positives).

    Returns:
        ``(logits, pairs, maps)``: (B, C) detached logits, the (P, 2) pairs and (P, *layer
        spatial) ReLU'd Grad-CAMs (paper Eq. 3-4).

    Shape:
        x: (B, C, H, W) or (B, C, T, H, W).
    """
    with _head_graph(model, layer) as cap:
        logits = as_logits(model(x), x.shape[0])
        if "features" not in cap:
            raise ValueError("the Grad-CAM layer did not run during the forward pass")
        features = cap["features"]
        pairs = pairs_fn(logits.detach())
        rank, rounds = _pair_rounds(pairs, x.shape[0])
        maps = features.new_zeros(pairs.shape[0], *features.shape[2:])
        for r in range(rounds):
            # Items are independent in eval mode, so one backward serves the r-th class of all.
            sel = rank == r
            items, classes = pairs[sel, 0], pairs[sel, 1]
            targets = torch.zeros(x.shape[0], dtype=torch.long, device=logits.device)
            targets[items] = classes
            score = logits.gather(1, targets[:, None])[items].sum()
            (grad,) = torch.autograd.grad(score, features, retain_graph=r < rounds - 1)
            maps[sel] = gradcam_from(features[items].detach(), grad[items], relu=True)
    return logits.detach(), pairs, maps


def _pair_boxes(target: Mapping[str, Any], pairs: Tensor, clips: bool, device: torch.device) -> Tensor | None:
    """The boxes of each pair's class: (P, K, 4) for images, (P, T, 1, 4) for clips; None if unannotated."""
    boxes = target.get("boxes")
    if boxes is None:
        return None
    if clips:
        if isinstance(boxes, list):  # some clips without boxes: nan frames
            boxes = torch.stack([torch.as_tensor(b).as_subclass(Tensor) for b in boxes])
        b = torch.as_tensor(boxes).as_subclass(Tensor).float().to(device)
        return b[pairs[:, 0]].unsqueeze(2)
    box_list = [torch.as_tensor(b).as_subclass(Tensor).reshape(-1, 4) for b in boxes]
    label_list = [torch.as_tensor(lb).reshape(-1) for lb in target["box_labels"]]
    return boxes_for_pairs(box_list, label_list, pairs)


def _pair_avoid(target: Mapping[str, Any], pairs: Tensor, device: torch.device) -> Tensor | None:
    """Each pair's item's regions to avoid, ``nan``-padded (P, M, 4); None when no item has any."""
    regions = target.get("avoid")
    if not isinstance(regions, list) or not any(len(r) for r in regions):
        return None
    padded = pad_sequence(
        [torch.as_tensor(r).as_subclass(Tensor).float().reshape(-1, 4) for r in regions],
        batch_first=True,
        padding_value=math.nan,
    ).to(device)
    return padded[pairs[:, 0].to(device)]


def _at_original_size(
    maps: Tensor,
    boxes: Tensor,
    pairs: Tensor,
    target: Mapping[str, Any],
    x: Tensor,
    protocol: LocalizationProtocol,
    avoid: Tensor | None = None,
) -> LocalizationResult:
    """Localization of a batch's pairs at each image's original size (``measure_at="original"``).

    The boxes come back to original pixels by the input-to-original scale of each axis (the
    evaluation transform is a resize); each map is upsampled to its image's size. Pairs are
    measured in groups of equal original size, so the maps of a group stack.
    """
    if x.ndim != 4:
        raise ValueError(
            "localization at the original size is for images; clips are measured at their frame size "
            "(measure_at='input')"
        )
    if target.get("orig_size") is None:
        raise ValueError(
            "localization at the original size needs each item's original size (target 'orig_size'), "
            "which this dataset does not give; measure at the input size instead"
        )
    orig = torch.as_tensor(target["orig_size"]).reshape(-1, 2).to(boxes.device)
    sizes = orig[pairs[:, 0]]  # (P, 2): (H, W) of each pair's image
    h_in, w_in = x.shape[-2:]
    sy, sx = sizes[:, 0].to(boxes.dtype) / h_in, sizes[:, 1].to(boxes.dtype) / w_in
    scale = torch.stack([sx, sy, sx, sy], dim=1)[:, None, :]
    boxes = boxes * scale
    avoid = None if avoid is None else avoid * scale
    p = pairs.shape[0]
    nan = maps.new_full((p,), math.nan, dtype=torch.float)
    out = LocalizationResult(
        nan.clone(), nan.clone(), nan.clone(), torch.zeros(p, dtype=torch.bool, device=maps.device),
        torch.zeros(p, dtype=torch.long, device=maps.device), nan.clone(),
    )  # fmt: skip
    for h, w in torch.unique(sizes, dim=0).tolist():
        sel = (sizes[:, 0] == h) & (sizes[:, 1] == w)
        part = localization_metrics(
            maps[sel], boxes[sel], (int(h), int(w)), protocol, None if avoid is None else avoid[sel]
        )
        for f in fields(LocalizationResult):
            getattr(out, f.name)[sel] = getattr(part, f.name).to(getattr(out, f.name).dtype)
    return out


def evaluate_model(
    model: nn.Module,
    dataset: Dataset[Any] | Sequence[Any],
    spec: EvalSpec | Task,
    *,
    name: str = "model",
    collate_fn: Callable[[list[Any]], Any] | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a classifier on a labeled dataset in one batched pass (Tables 1-3).

    ``evaluate_model(model, dataset, "multilabel")`` uses the defaults (the paper's protocol,
    1000 resamples, on the CPU); pass an :class:`~atcon.evaluate.EvalSpec` to change them, e.g.
    ``EvalSpec("multiclass", n_resamples=200, device="auto")``.

    Args:
        model: classifier returning (B, C) logits; moved to the spec's device and run in eval
            mode (its train/eval flags are restored afterwards).
        dataset: items ``(x, target)`` of :mod:`atcon.data`: images with ``labels``/``ignore``
            (multi-label) and ``boxes``/``box_labels`` in pixels of ``x``; or clips with
            ``label`` and per-frame ``boxes`` (T, 4) (``nan`` where absent).
        spec: how to evaluate (task, classes, layer, threshold, protocol, bootstrap, device,
            batching), or just the task. Class names default to ``dataset.classes``.
        name: method name for tables.
        collate_fn: batch collation (default :func:`atcon.data.collate`).
        progress: show a progress bar.

    Returns:
        An :class:`~atcon.evaluate.EvaluationResult` with point estimates and bootstrap intervals.

    One function on purpose: one batched pass accumulating every metric's inputs; split up, each
    part would carry the same accumulators.
    """
    spec = as_spec(spec)
    if collate_fn is None:
        from atcon.data import collate as collate_fn
    names = spec.classes if spec.classes is not None else getattr(dataset, "classes", None)
    if names is not None and spec.classes is None:
        spec = replace(spec, classes=tuple(names))
    task, protocol = spec.task, spec.protocol
    device = resolve_device(spec.device)
    model = model.to(device)
    inner = unwrap_model(model)
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=spec.batch_size,
        shuffle=False,
        num_workers=spec.num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    logits_parts: list[Tensor] = []
    label_parts: list[Tensor] = []
    pair_parts: list[Tensor] = []
    loc_parts: list[LocalizationResult] = []
    faith_parts: dict[str, list[Tensor]] = {"deletion": [], "insertion": []}
    group_of: list[str] = []
    has_boxes = spec.localization
    seen_box = False  # images without any box (class folders) are not scored for localization
    layer_name = ""
    offset = 0
    start = time.perf_counter()
    batches: Any = loader
    live = progress and interactive()
    if live:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=f"evaluate {name}", leave=False)
    with eval_mode(model):
        for x, target in batches:
            x = x.to(device, non_blocking=True)
            labels = labels_of(target, task).to(device)
            # Resolved per batch (cached): the reader knows the batch's grid and token layout.
            reader = feature_reader(inner, spec.target_layer, x)
            layer_name = reader.name
            clips = x.ndim == 5

            def tp(logits: Tensor, labels: Tensor = labels) -> Tensor:
                return true_positive_pairs(logits, labels, task, threshold=spec.threshold)

            logits, pairs, maps = batch_gradcams(model, x, reader, tp)
            group = target.get("group")
            group_of.extend(group if isinstance(group, list) else [""] * x.shape[0])
            logits_parts.append(logits.float().cpu())
            label_parts.append(labels.cpu())
            pair_parts.append(pairs.cpu() + torch.tensor([offset, 0]))
            if has_boxes:
                boxes = _pair_boxes(target, pairs, clips, device)
                if boxes is None:
                    has_boxes = False
                else:
                    seen_box = seen_box or clips or any(len(b) for b in target["box_labels"])
                    avoid = None if clips else _pair_avoid(target, pairs, device)
                    if protocol.measure_at == "original":
                        loc = _at_original_size(maps, boxes, pairs, target, x, protocol, avoid)
                    else:
                        size = tuple(x.shape[2:])
                        loc = localization_metrics(maps, boxes, size, protocol, avoid)  # type: ignore[arg-type]
                    loc_parts.append(LocalizationResult(*(getattr(loc, f.name).cpu() for f in fields(loc))))
            if spec.faithfulness and pairs.shape[0] > 0:
                di = deletion_insertion(
                    model,
                    x[pairs[:, 0]],
                    maps,
                    pairs[:, 1],
                    steps=spec.faithfulness_steps,
                    batch_size=spec.batch_size,
                    prob="sigmoid" if task == "multilabel" else "softmax",
                    eps=protocol.eps,
                )
                faith_parts["deletion"].append(di["deletion"].cpu())
                faith_parts["insertion"].append(di["insertion"].cpu())
            offset += x.shape[0]
    if offset == 0:
        raise ValueError("the dataset is empty")
    seconds = time.perf_counter() - start
    if progress and not live:  # in a log file: one line for the stage
        line(f"evaluate {name}: {offset} items, {seconds:.0f} s")
    faith = None
    if spec.faithfulness:
        faith = {k: torch.cat(v) if v else torch.zeros(0) for k, v in faith_parts.items()}
    all_logits = torch.cat(logits_parts)
    finite = torch.isfinite(all_logits).all(1)
    if not bool(finite.all()):
        raise ValueError(
            f"{name or 'the model'}: {int((~finite).sum())} of {offset} items have non-finite logits (first: item "
            f"{int((~finite).nonzero()[0])}); F1 and mAP of NaN scores would be meaningless: check the weights "
            "and the inputs (a NaN pixel, an overflow in --amp)"
        )
    groups, group_names = item_groups(group_of)
    return summarize(
        all_logits,
        torch.cat(label_parts),
        torch.cat(pair_parts).long(),
        LocalizationResult.cat(loc_parts) if has_boxes and seen_box and loc_parts else None,
        faith,
        spec,
        name=name,
        layer=layer_name,
        seconds=seconds,
        groups=groups,
        group_names=group_names,
    )
