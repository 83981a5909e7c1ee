"""Weakly-supervised localization of Grad-CAM maps: IoU with boxes (Table 3) and pointing games.

The protocol (paper Section 4.4, Table 3), every step a field of :class:`LocalizationProtocol`:

1. Only true-positive (item, class) pairs are scored (:func:`true_positive_pairs`).
2. The class's map (ReLU'd Grad-CAM at layer resolution) is upsampled to the image size:
   bilinear for images, trilinear (time included) for clips, ``align_corners=False``. The image
   size is the network's input size (``measure_at="input"``, boxes rescaled with the image), or
   each image's original size (``"original"``, the boxes as annotated: PASCAL VOC's protocol).
3. Each map is min-max rescaled to [0, 1] over all its pixels (over the whole clip for clips).
   A map whose range is at most ``eps`` times its largest magnitude (all-zero, constant or
   non-finite) is *degenerate*: it has no localization, its values are ``nan`` and it is
   flagged in ``degenerate``, never counted as a number.
4. IoU: the pixels with rescaled value ``>= threshold`` against the union of the class's
   ground-truth boxes.
5. Pointing game (Zhang et al. 2016): a hit when the map's maximum pixel (first in row-major
   order on ties) has its centre within ``pointing_tolerance`` pixels (Euclidean distance to
   the box, 0 inside) of one of the class's boxes.
6. Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the rescaled map's
   mass (mass above the map's minimum; for ReLU'd Grad-CAM, whose minimum is 0, the positive
   mass) that lies inside the union of boxes.
7. Energy in the regions to avoid (``energy_avoid``, when the data mark regions a model must
   not use, such as a marker or a text token): the share of the same mass inside the union of
   the item's regions to avoid, on the pairs where the energy is defined (images only). Lower is
   better; a network that reads a shortcut puts its mass there.

Box convention: boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates of the image the maps
are upsampled to: pixel (row i, column j) spans ``[j, j + 1) x [i, i + 1)`` and is covered by
a box when its centre ``(j + 0.5, i + 0.5)`` satisfies ``x1 <= j + 0.5 < x2`` and
``y1 <= i + 0.5 < y2``. A box with integer corners thus covers ``(x2 - x1) * (y2 - y1)``
pixels and ``(0, 0, W, H)`` covers the whole image. (PASCAL VOC's 1-based inclusive
``xmin..xmax`` become ``x1 = xmin - 1, x2 = xmax``.) Per pair, the class's boxes come as a
``nan``-padded (K, 4) tensor; ``nan`` rows cover nothing.

Clips: boxes are given per frame, (T, K, 4). IoU, pointing and energy are computed per frame
from the clip's upsampled, clip-normalised map, then averaged over the *annotated* frames
(frames with at least one box of the class); frames where a quantity is undefined (a frame
whose map slice is constant, for pointing; a frame without map mass, for energy; a frame whose
union of boxes and thresholded map are both empty, for IoU) are left out of that quantity's average. A clip with no
frame left gets ``nan`` for that quantity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from atcon.evaluate.metrics import Task, probabilities


@dataclass(frozen=True)
class LocalizationProtocol:
    """Parameters of the localization protocol; ``str()`` gives the line printed under tables.

    Args:
        threshold: Localization: a pixel of the rescaled map is in the IoU mask at or above
            it (the paper's 0.5; tune it, if at all, on validation data only).
        pointing_tolerance: Pointing-game margin in pixels around the boxes.
        eps: relative range below which a map is degenerate (see the module docstring).
        chunk_size: pairs upsampled at a time, to bound memory.
        measure_at: Image size localization is measured at: input (the network's input size,
            boxes resized with the image) or original (each image's own size before any
            transform, boxes as annotated; needs orig_size in the targets, images only). The
            evaluation pass (atcon.evaluate.evaluate_model) chooses the size from it.
    """

    threshold: float = field(default=0.5, metadata={"key": "iou_threshold"})
    pointing_tolerance: float = field(default=15.0, metadata={"key": "tolerance"})
    eps: float = 1e-6
    chunk_size: int = 64
    measure_at: Literal["input", "original"] = "input"

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.pointing_tolerance < 0:
            raise ValueError(f"pointing_tolerance must be >= 0, got {self.pointing_tolerance}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.measure_at not in ("input", "original"):
            raise ValueError(f"measure_at must be 'input' or 'original', got {self.measure_at!r}")

    def as_dict(self) -> dict[str, float | int]:
        """The fields, for run folders and reports."""
        return asdict(self)

    @property
    def size_text(self) -> str:
        """Which image size localization is measured at, in words (every table says it)."""
        if self.measure_at == "original":
            return "each image's original size (maps upsampled to it, boxes as annotated)"
        return "the network's input size (boxes resized with the image)"

    def __str__(self) -> str:
        return (
            f"Localization protocol, measured at {self.size_text}: true-positive (item, class) pairs; "
            "ReLU'd Grad-CAM upsampled to that size (bilinear; trilinear over time for clips; "
            "align_corners=False); min-max rescaled "
            f"to [0, 1] per map (maps with relative range <= {self.eps:g} are degenerate, reported apart); "
            f"IoU of pixels >= {self.threshold:g} with the union of the class's boxes (x1, y1, x2, y2 in "
            "pixels; a pixel is inside when its centre is); pointing game with a "
            f"{self.pointing_tolerance:g} px tolerance; energy = share of rescaled map mass inside the boxes; "
            "clips: per annotated frame, then averaged."
        )


@dataclass(frozen=True)
class LocalizationResult:
    """Per-pair localization values; ``nan`` where undefined (degenerate maps included).

    Attributes:
        iou: IoU of the thresholded map with the union of boxes, (P,).
        pointing: pointing-game hit (1.0 / 0.0; for clips the share of frames hit), (P,).
        energy: share of map mass inside the boxes, (P,).
        degenerate: maps that were constant, all-zero or non-finite, (P,) bool.
        annotated_frames: frames with at least one box of the class, (P,) long (1 or 0 for
            images); pairs with none have ``nan`` values without being degenerate.
        energy_avoid: share of map mass inside the item's regions to avoid, (P,); ``nan`` where
            the energy is undefined or the item has no such region (all ``nan`` without them).
    """

    iou: Tensor
    pointing: Tensor
    energy: Tensor
    degenerate: Tensor
    annotated_frames: Tensor
    energy_avoid: Tensor = None  # type: ignore[assignment]  # all nan when not given (__post_init__)

    def __post_init__(self) -> None:
        if self.energy_avoid is None:
            object.__setattr__(self, "energy_avoid", torch.full_like(self.energy, math.nan))

    @property
    def n_pairs(self) -> int:
        return int(self.degenerate.numel())

    @property
    def n_degenerate(self) -> int:
        return int(self.degenerate.sum())

    def summary(self) -> dict[str, float]:
        """Means over defined values, with the pair and degenerate counts."""
        out: dict[str, float] = {"n_pairs": float(self.n_pairs), "n_degenerate": float(self.n_degenerate)}
        for name in ("iou", "pointing", "energy", "energy_avoid"):
            v = getattr(self, name)
            out[name] = float(v.nanmean()) if v.numel() else math.nan
        return out

    @staticmethod
    def cat(results: list[LocalizationResult]) -> LocalizationResult:
        """Concatenate the results of several batches."""
        if not results:
            raise ValueError("nothing to concatenate")
        return LocalizationResult(
            *(torch.cat([getattr(r, f.name) for r in results]) for f in fields(LocalizationResult))
        )


def true_positive_pairs(
    scores: Tensor,
    targets: Tensor,
    task: Task = "multilabel",
    *,
    from_logits: bool = True,
    threshold: float = 0.5,
) -> Tensor:
    """The (item, class) pairs that are true positives, the pairs scored in Table 3.

    Multi-label: probability ``> threshold`` and label 1 (ignored entries, -1, are never true
    positives). Multi-class: the argmax equals the label.

    Args:
        scores: logits (default) or probabilities.
        targets: multi-hot labels (multi-label) or class indices (multi-class).
        task: ``"multilabel"`` or ``"multiclass"``.
        from_logits: whether ``scores`` are logits.
        threshold: multi-label threshold on the probability.

    Returns:
        Long tensor (P, 2) of ``(item, class)`` rows, sorted by item then class.

    Shape:
        scores: (N, C); targets: (N, C) or (N,).
    """
    if task == "multilabel":
        if targets.shape != scores.shape:
            raise ValueError(f"multilabel targets must be (N, C), got {tuple(targets.shape)}")
        hit = (probabilities(scores, task, from_logits=from_logits) > threshold) & (targets == 1)
        return hit.nonzero()
    if task == "multiclass":
        if targets.shape != scores.shape[:1]:
            raise ValueError(f"multiclass targets must be (N,), got {tuple(targets.shape)}")
        items = (scores.argmax(dim=1) == targets).nonzero()[:, 0]
        return torch.stack([items, targets[items].long()], dim=1)
    raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")


def boxes_for_pairs(boxes: list[Tensor], labels: list[Tensor], pairs: Tensor) -> Tensor:
    """Gather each pair's class boxes from per-item box lists, ``nan``-padded.

    Args:
        boxes: per item, its boxes ``(x1, y1, x2, y2)`` in pixels, (M_i, 4); for clips
            per-frame boxes (M_i, T, 4) with ``nan`` rows in frames where the object is absent.
        labels: per item, the class of each box, (M_i,).
        pairs: ``(item, class)`` rows, e.g. from :func:`true_positive_pairs`.

    Returns:
        (P, K, 4) for images or (P, T, K, 4) for clips, K the largest box count of an item (1
        when no item has a box); rows of other classes and padding are ``nan``.
    """
    if len(boxes) != len(labels):
        raise ValueError("boxes and labels must have one entry per item")
    device = pairs.device
    padded = pad_sequence([b.float().to(device) for b in boxes], batch_first=True, padding_value=math.nan)
    lab = pad_sequence([lb.long().to(device) for lb in labels], batch_first=True, padding_value=-1)
    if padded.shape[1] == 0:  # no item has a box: one nan row each, so every pair is unannotated
        padded = padded.new_full((padded.shape[0], 1, *padded.shape[2:]), math.nan)
        lab = lab.new_full((lab.shape[0], 1), -1)
    item, cls = pairs[:, 0], pairs[:, 1]
    keep = lab[item] == cls[:, None]  # (P, K)
    b = padded[item]  # (P, K, 4) or (P, K, T, 4)
    keep = keep.view(*keep.shape, *([1] * (b.ndim - 2)))
    b = torch.where(keep, b, torch.full_like(b, math.nan))
    return b if b.ndim == 3 else b.transpose(1, 2)


def box_coverage(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Union of boxes as a pixel mask (pixel centre inside a box, see the module docstring).

    Args:
        boxes: ``(x1, y1, x2, y2)`` in pixels, ``nan`` rows ignored.
        size: ``(H, W)`` of the image.

    Returns:
        Bool mask.

    Shape:
        boxes: (*B, K, 4) -> (*B, H, W).
    """
    h, w = size
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    in_x = (xs >= x1) & (xs < x2)  # (*B, K, W); nan compares False
    in_y = (ys >= y1) & (ys < y2)  # (*B, K, H)
    # Counting covering boxes per pixel with a matmul avoids a (K, H, W) intermediate per pair.
    count = torch.einsum("...kh,...kw->...hw", in_y.to(boxes.dtype), in_x.to(boxes.dtype))
    return count > 0


def upsample_maps(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Upsample maps to an image/clip size (bilinear or trilinear, ``align_corners=False``).

    Args:
        maps: maps at layer resolution, with or without a singleton channel dim.
        size: ``(H, W)`` or ``(T, H, W)``.

    Returns:
        Float maps of shape (P, *size).

    Shape:
        maps: (P, h, w) / (P, 1, h, w) for images, (P, t, h, w) / (P, 1, t, h, w) for clips.
    """
    if len(size) not in (2, 3):
        raise ValueError(f"size must be (H, W) or (T, H, W), got {size}")
    if maps.ndim == len(size) + 2 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != len(size) + 1:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match size {size}")
    mode = "bilinear" if len(size) == 2 else "trilinear"
    x = maps.unsqueeze(1)
    x = x if x.is_floating_point() else x.float()
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False)
    return x[:, 0]


def minmax_rescale(maps: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Rescale each map to [0, 1] over all its pixels, flagging degenerate maps.

    Args:
        maps: (P, ...) maps.
        eps: a map is degenerate when ``max - min <= eps * max(|max|, |min|)`` (constant, all
            zero) or it has a non-finite value.

    Returns:
        ``(rescaled, degenerate)``: rescaled maps (``nan`` for degenerate ones) and a (P,) bool.
    """
    flat = maps.reshape(maps.shape[0], -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # nan propagates, so non-finite maps show here
    span = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    degenerate = ~(lo.isfinite() & hi.isfinite()) | ~(span > eps * scale)
    view = (-1,) + (1,) * (maps.ndim - 1)
    # The clamp keeps the division finite for degenerate rows, which become nan below.
    out = ((maps - lo.view(view)) / span.clamp_min(torch.finfo(maps.dtype).tiny).view(view)).clamp_(0, 1)
    out[degenerate] = math.nan
    return out, degenerate


def _distance_to_boxes(px: Tensor, py: Tensor, boxes: Tensor) -> Tensor:
    """Euclidean distance from points (*B,) to the nearest of boxes (*B, K, 4); inf if none."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    dx = torch.maximum(torch.maximum(x1 - px[..., None], px[..., None] - x2), torch.zeros_like(x1))
    dy = torch.maximum(torch.maximum(y1 - py[..., None], py[..., None] - y2), torch.zeros_like(y1))
    d = torch.sqrt(dx**2 + dy**2)
    return torch.where(d.isnan(), torch.full_like(d, math.inf), d).amin(dim=-1)


def _frame_values(
    rescaled: Tensor, degenerate: Tensor, boxes: Tensor, protocol: LocalizationProtocol
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """IoU, pointing, energy and annotated flag per (pair, frame); frames on dim 1.

    rescaled: (P, F, H, W), nan for degenerate maps; degenerate: (P,); boxes: (P, F, K, 4).
    """
    h, w = rescaled.shape[-2:]
    gt = box_coverage(boxes, (h, w)).flatten(-2)  # (P, F, H*W)
    annotated = ~boxes.isnan().any(-1).all(-1)  # (P, F): at least one box in the frame
    flat = rescaled.flatten(-2)  # nan rows (degenerate) give nan everywhere and are masked below
    pred = flat >= protocol.threshold
    inter = (pred & gt).sum(-1).float()
    union = pred.sum(-1).float() + gt.sum(-1).float() - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, math.nan))

    fmax, arg = flat.max(dim=-1)
    py = (arg // w).to(boxes.dtype) + 0.5
    px = (arg % w).to(boxes.dtype) + 0.5
    hit = (_distance_to_boxes(px, py, boxes) <= protocol.pointing_tolerance).float()
    if flat.shape[1] > 1:
        # A constant frame of a clip has no maximum to point with (a whole map cannot be).
        hit = torch.where(fmax > flat.amin(-1), hit, torch.full_like(hit, math.nan))

    # Rescaled maps have minimum 0 over the whole map, so their values are the mass above it.
    total = flat.sum(-1)
    inside = torch.where(gt, flat, torch.zeros_like(flat)).sum(-1)
    energy = torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), math.nan)

    undefined = degenerate[:, None] | ~annotated
    iou, hit, energy = (torch.where(undefined, math.nan, v) for v in (iou, hit, energy))
    return iou, hit, energy, annotated


def _mass_inside(rescaled: Tensor, regions: Tensor, defined: Tensor) -> Tensor:
    """Share of each rescaled map's mass inside the union of its regions (P,); ``nan`` where not
    ``defined`` or without a region. rescaled: (P, H, W); regions: (P, M, 4), ``nan``-padded."""
    flat = rescaled.flatten(-2)
    inside = box_coverage(regions, tuple(rescaled.shape[-2:])).flatten(-2)  # type: ignore[arg-type]
    total = torch.where(flat.isnan(), 0.0, flat).sum(-1)
    mass = torch.where(inside & ~flat.isnan(), flat, torch.zeros_like(flat)).sum(-1)
    has = ~regions.isnan().any(-1).all(-1)
    share = mass / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.where(defined & has & (total > 0), share, math.nan)


def localization_metrics(
    maps: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int] | tuple[int, int, int],
    protocol: LocalizationProtocol | None = None,
    avoid: Tensor | None = None,
) -> LocalizationResult:
    """IoU, pointing game and energy pointing game for (item, class) pairs.

    Args:
        maps: the class's ReLU'd Grad-CAM per pair at layer resolution (or any resolution).
        boxes: the class's ground-truth boxes per pair, ``nan``-padded (see
            :func:`boxes_for_pairs`), in pixels of ``image_size``.
        image_size: ``(H, W)`` for images, ``(T, H, W)`` for clips.
        protocol: the protocol; the default is the paper's (threshold 0.5, 15 px tolerance).
        avoid: images only: each pair's item's regions to avoid, ``nan``-padded, in pixels of
            ``image_size``; gives ``energy_avoid`` (all ``nan`` without it).

    Returns:
        A :class:`LocalizationResult` of (P,) tensors on the maps' device.

    Shape:
        images: maps (P, h, w) or (P, 1, h, w); boxes (P, K, 4); avoid (P, M, 4).
        clips: maps (P, t, h, w) or (P, 1, t, h, w); boxes (P, T, K, 4).
    """
    protocol = protocol or LocalizationProtocol()
    is_clip = len(image_size) == 3
    if boxes.ndim != (4 if is_clip else 3) or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must be {'(P, T, K, 4)' if is_clip else '(P, K, 4)'}, got {tuple(boxes.shape)}"
        )
    if boxes.shape[0] != maps.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps but {boxes.shape[0]} box sets")
    if is_clip and boxes.shape[1] != image_size[0]:
        raise ValueError(f"clip boxes have {boxes.shape[1]} frames, image_size has {image_size[0]}")
    if avoid is not None and (is_clip or avoid.ndim != 3 or avoid.shape[-1] != 4 or len(avoid) != len(maps)):
        raise ValueError(f"avoid must be (P, M, 4) for images, got {tuple(avoid.shape)}")
    parts: list[LocalizationResult] = []
    for start in range(0, maps.shape[0], protocol.chunk_size):
        m = upsample_maps(maps[start : start + protocol.chunk_size], image_size)
        rescaled, degenerate = minmax_rescale(m, protocol.eps)
        b = boxes[start : start + protocol.chunk_size].to(device=m.device, dtype=m.dtype)
        if not is_clip:  # a one-frame clip
            rescaled, b = rescaled.unsqueeze(1), b.unsqueeze(1)
        iou, hit, energy, annotated = _frame_values(rescaled, degenerate, b, protocol)
        energy = energy.nanmean(1)
        in_avoid = torch.full_like(energy, math.nan)
        if avoid is not None:
            a = avoid[start : start + protocol.chunk_size].to(device=m.device, dtype=m.dtype)
            in_avoid = _mass_inside(rescaled[:, 0], a, defined=~energy.isnan())
        # Mean over the frames where each value is defined; nan when none is.
        parts.append(
            LocalizationResult(iou.nanmean(1), hit.nanmean(1), energy, degenerate, annotated.sum(1), in_avoid)
        )
    if not parts:
        empty = maps.new_zeros(0, dtype=torch.float)
        return LocalizationResult(empty, empty, empty, empty.bool(), empty.long())
    return LocalizationResult.cat(parts)


def values_by_item(values: Tensor, items: Tensor, n_items: int, fill: float = math.nan) -> Tensor:
    """Arrange per-pair values as an (N, K) table, one row per item, ``fill``-padded.

    Makes the item (image) the bootstrap unit for pair-level quantities, so that two models
    with different true-positive pairs can be compared on the same resampled images with
    :class:`~atcon.evaluate.MeanMetric` and :func:`~atcon.evaluate.paired_bootstrap_test`.

    Args:
        values: one value per pair, (P,).
        items: the item of each pair, (P,) long.
        n_items: number of items N (items without pairs get an all-``fill`` row).
        fill: padding value.

    Returns:
        (N, K) with K the largest number of pairs of one item (at least 1).
    """
    counts = torch.bincount(items, minlength=n_items)
    k = max(int(counts.max()) if counts.numel() else 0, 1)
    order = torch.sort(items, stable=True).indices
    sorted_items = items[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(items.numel(), device=items.device) - starts[sorted_items]
    out = torch.full((n_items, k), fill, dtype=values.dtype, device=values.device)
    out[sorted_items, slot] = values[order]
    return out
