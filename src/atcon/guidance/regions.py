"""Boxes and regions to avoid as masks: which (item, class) pairs a batch supervises, and where.

A collated batch of :mod:`atcon.data` items carries, per item, its boxes (``target["boxes"]``,
with ``box_labels``) and its regions to avoid (``target["avoid"]``), in pixels of the input
after augmentation. :func:`supervised_pairs` turns them into the pairs the Grad-CAM term pulls
(each pair a true class of an item with a box of that class, or with a region to avoid) and
:func:`pair_masks` into pixel masks; :func:`cell_coverage` brings a mask to a feature map's grid
and :func:`irrelevant_pixels` gives the pixels an input-gradient penalty covers. Everything here
is computed from the targets (CPU) and the input's shape: no value is read back from the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from atcon.evaluate.localization import box_coverage, boxes_for_pairs


def _plain(boxes: Any) -> Tensor:
    return torch.as_tensor(boxes).as_subclass(Tensor).float().reshape(-1, 4)


def item_boxes(target: Mapping[str, Any]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per item of a collated batch: its boxes ``(K_i, 4)``, their classes ``(K_i,)`` and its
    regions to avoid ``(M_i, 4)`` (empty where the data have none)."""
    n = len(target["image_id"]) if "image_id" in target else len(target.get("boxes", []))
    boxes = [_plain(b) for b in target.get("boxes", [torch.zeros(0, 4)] * n)]
    labels = [torch.as_tensor(b).long().reshape(-1) for b in target.get("box_labels", [torch.zeros(0)] * n)]
    avoid = [_plain(a) for a in target.get("avoid", [torch.zeros(0, 4)] * n)]
    return boxes, labels, avoid


def supervised_pairs(
    labels: Tensor, target: Mapping[str, Any], task: str, use: Tensor | None = None
) -> Tensor:
    """The ``(item, class)`` pairs whose Grad-CAM the boxes supervise, sorted by item.

    Multi-class: ``(i, y_i)`` for every item with a box of its class ``y_i`` or a region to
    avoid. Multi-label: ``(i, c)`` for every positive class ``c`` of item ``i`` that has a box of
    ``c`` there, or, when the item has regions to avoid, every positive class.

    Args:
        labels: CPU labels of the batch, ``(B,)`` class indices or ``(B, C)`` multi-hot.
        target: the collated targets (boxes, box labels, regions to avoid).
        task: ``"multiclass"`` or ``"multilabel"``.
        use: ``(B,)`` bool, items whose annotations may be used (the others add nothing).

    Returns:
        Long tensor ``(P, 2)`` (CPU).
    """
    _, box_labels, avoid = item_boxes(target)
    n = len(box_labels)
    has_avoid = torch.tensor([len(a) > 0 for a in avoid], dtype=torch.bool).reshape(n)
    keep = torch.ones(n, dtype=torch.bool) if use is None else use.cpu().bool()
    padded = pad_sequence(box_labels, batch_first=True, padding_value=-1).reshape(n, -1)
    if task == "multiclass":
        y = labels.long().reshape(n)
        boxed = (padded == y[:, None]).any(1) | has_avoid
        items = (boxed & keep).nonzero()[:, 0]
        return torch.stack([items, y[items]], dim=1)
    classes = labels.shape[1]
    # (B, C): item i has a box of class c.
    has_box = torch.zeros(n, classes + 1, dtype=torch.bool)
    has_box.scatter_(1, padded.clamp(min=-1) % (classes + 1), True)
    supervised = (labels == 1) & (has_box[:, :classes] | has_avoid[:, None]) & keep[:, None]
    return supervised.nonzero()


def pair_masks(
    target: Mapping[str, Any], pairs: Tensor, size: tuple[int, int], device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """Pixel masks of each pair: inside its class's boxes, and inside its item's regions to avoid.

    Returns:
        ``(inside, avoid)``, bool ``(P, H, W)`` each, on ``device`` (all false where a pair has no
        box of its class, or its item no region).
    """
    boxes, box_labels, avoid = item_boxes(target)
    if pairs.numel() == 0:
        empty = torch.zeros(0, *size, dtype=torch.bool, device=device)
        return empty, empty.clone()
    pairs = pairs.to(device)
    inside = box_coverage(boxes_for_pairs(boxes, box_labels, pairs).to(device), size)
    regions = pad_sequence([a.to(device) for a in avoid], batch_first=True, padding_value=math.nan)
    if regions.shape[1] == 0:
        return inside, torch.zeros_like(inside)
    return inside, box_coverage(regions[pairs[:, 0]], size)


def irrelevant_pixels(
    target: Mapping[str, Any], size: tuple[int, int], device: torch.device | str, use: Tensor | None = None
) -> Tensor:
    """The pixels the input-gradient penalty covers (Ross et al. 2017's annotation matrix A).

    Per item: outside the union of its boxes (when it has any), and inside its regions to avoid;
    nothing for an item without either (or not in ``use``).

    Returns:
        Float ``(B, H, W)`` in ``{0, 1}`` on ``device``.
    """
    boxes, _, avoid = item_boxes(target)
    b = pad_sequence([x.to(device) for x in boxes], batch_first=True, padding_value=math.nan)
    a = pad_sequence([x.to(device) for x in avoid], batch_first=True, padding_value=math.nan)
    n = len(boxes)
    has_box = torch.tensor([len(x) > 0 for x in boxes], device=device)
    outside = (
        ~box_coverage(b, size) & has_box[:, None, None]
        if b.shape[1]
        else torch.zeros(n, *size, dtype=torch.bool, device=device)
    )
    marked = box_coverage(a, size) if a.shape[1] else torch.zeros_like(outside)
    out = outside | marked
    if use is not None:
        out = out & use.to(device)[:, None, None]
    return out.float()


def cell_coverage(mask: Tensor, grid: Sequence[int]) -> Tensor:
    """Share of each feature-map cell covered by a pixel mask (area average).

    Shape:
        mask: ``(P, H, W)``; returns ``(P, *grid)`` float in ``[0, 1]``.
    """
    if mask.shape[0] == 0:
        return mask.new_zeros(0, *grid, dtype=torch.float)
    h, w = grid
    return F.adaptive_avg_pool2d(mask.float().unsqueeze(1), (h, w)).squeeze(1)
