"""Deletion and insertion AUC of saliency maps (Petsiuk et al. 2018, RISE).

Pixels are ranked by the map (highest first). *Deletion* replaces the top-ranked pixels of the
input by a baseline, *insertion* starts from the baseline and restores the top-ranked pixels of
the input; after each of ``steps`` equal steps the model's probability of the target class is
recorded. The AUC (trapezoid rule over the fraction of pixels, 0 to 1) is low for deletion and
high for insertion when the map points at what the model uses. RISE's baselines are the
defaults: zeros for deletion, a blurred copy of the input for insertion.

A "pixel" is a spatial position (all channels together); for clips a (t, h, w) voxel. Maps at
layer resolution are upsampled to the input size (bilinear/trilinear, ``align_corners=False``)
before ranking; ties are broken by position (row-major, stable sort). Constant, all-zero or
non-finite maps rank nothing: their AUCs are ``nan`` and they are flagged in ``degenerate``.

Every perturbed input of a batch is built on the input's device and the model runs on chunks of
``batch_size`` of them, so memory is bounded by ``batch_size`` inputs whatever ``steps`` is.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.attention.hooks import eval_mode
from atcon.evaluate.localization import minmax_rescale, upsample_maps

BaselineName = Literal["zero", "blur", "mean"]
Baseline = BaselineName | float | Tensor
ProbFn = Literal["softmax", "sigmoid"]


def gaussian_blur(x: Tensor, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur over the last two (spatial) dims, replicate padding.

    Args:
        x: input; frames of clips are blurred independently.
        sigma: standard deviation in pixels; the kernel spans ``+-ceil(3 sigma)``.

    Returns:
        Blurred tensor of the same shape, dtype and device.

    Shape:
        x: (..., H, W) -> (..., H, W).
    """
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, k.view(1, 1, 1, -1))
    flat = F.conv2d(flat, k.view(1, 1, -1, 1))
    return flat.reshape(x.shape)


def make_baseline(x: Tensor, baseline: Baseline, blur_sigma: float = 5.0) -> Tensor:
    """The input that perturbed pixels take.

    Args:
        x: inputs.
        baseline: ``"zero"``, ``"blur"`` (Gaussian, ``blur_sigma``), ``"mean"`` (per-sample,
            per-channel mean), a constant, or a tensor broadcastable to ``x``.
        blur_sigma: blur standard deviation in pixels.

    Returns:
        A tensor of ``x``'s shape.

    Shape:
        x: (B, C, H, W) or (B, C, T, H, W).
    """
    if isinstance(baseline, Tensor):
        return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    raise ValueError(f"baseline must be 'zero', 'blur', 'mean', a number or a tensor, got {baseline!r}")


def _target_probability(logits: Tensor, targets: Tensor, prob: ProbFn) -> Tensor:
    p = logits.float().softmax(dim=1) if prob == "softmax" else logits.float().sigmoid()
    return p.gather(1, targets[:, None])[:, 0]


def _resolve_targets(model: nn.Module, x: Tensor, targets: Tensor | int | None, batch_size: int) -> Tensor:
    if targets is None:
        top = [model(chunk).argmax(dim=1) for chunk in x.split(batch_size)]
        return torch.cat(top)
    if isinstance(targets, int):
        return torch.full((x.shape[0],), targets, dtype=torch.long, device=x.device)
    if targets.shape != (x.shape[0],):
        raise ValueError(f"targets must be (B,), got {tuple(targets.shape)}")
    return targets.to(device=x.device, dtype=torch.long)


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Tensor | int | None = None,
    *,
    steps: int = 32,
    deletion_baseline: Baseline = "zero",
    insertion_baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    prob: ProbFn = "softmax",
    eps: float = 1e-6,
) -> dict[str, Tensor]:
    """Deletion and insertion curves and AUCs of saliency maps, batched on the input's device.

    Args:
        model: classifier returning logits (B, num_classes); run in eval mode without
            gradients (its train/eval flags are restored afterwards).
        x: inputs.
        maps: one saliency map per input at any resolution (upsampled here).
        targets: class whose probability is tracked: None (top-1 on the unperturbed input),
            an int, or a LongTensor (B,).
        steps: number of equal steps K; curves have K + 1 points (0 to all pixels).
        deletion_baseline: value of deleted pixels (see :func:`make_baseline`).
        insertion_baseline: starting image of insertion.
        blur_sigma: standard deviation of the ``"blur"`` baseline in pixels.
        batch_size: perturbed inputs per forward pass.
        prob: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label) probabilities.
        eps: relative range below which a map is degenerate (see
            :func:`~atcon.evaluate.minmax_rescale`).

    Returns:
        ``deletion`` and ``insertion`` AUCs (B,) (``nan`` for degenerate maps),
        ``deletion_curve`` and ``insertion_curve`` (B, K + 1), ``fractions`` (K + 1,) the
        fraction of pixels deleted/inserted at each point, ``targets`` (B,) and
        ``degenerate`` (B,) bool.

    Shape:
        images: x (B, C, H, W), maps (B, h, w) or (B, 1, h, w).
        clips: x (B, C, T, H, W), maps (B, t, h, w) or (B, 1, t, h, w).
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, T, H, W), got {tuple(x.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if prob not in ("softmax", "sigmoid"):
        raise ValueError(f"prob must be 'softmax' or 'sigmoid', got {prob!r}")
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {maps.shape[0]} maps")
    b, spatial = x.shape[0], tuple(x.shape[2:])
    n_pix = math.prod(spatial)
    dev = x.device

    saliency = upsample_maps(maps.to(dev), spatial)
    _, degenerate = minmax_rescale(saliency, eps)
    # rank[b, p] = position of pixel p in the descending order of sample b's map.
    order = saliency.reshape(b, n_pix).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n_pix, device=dev).expand(b, n_pix))
    fractions = torch.linspace(0, 1, steps + 1, device=dev)
    n_changed = torch.round(fractions * n_pix).long()

    with eval_mode(model), torch.no_grad():
        tgt = _resolve_targets(model, x, targets, batch_size)
        base_del = make_baseline(x, deletion_baseline, blur_sigma)
        base_ins = make_baseline(x, insertion_baseline, blur_sigma)
        curves: dict[str, list[Tensor]] = {"deletion": [], "insertion": []}
        n_jobs = b * (steps + 1)
        # Jobs are (sample, step) pairs in sample-major order; chunks bound memory.
        for start in range(0, n_jobs, batch_size):
            job = torch.arange(start, min(start + batch_size, n_jobs), device=dev)
            sb, sk = job // (steps + 1), job % (steps + 1)
            changed = (rank[sb] < n_changed[sk, None]).view(job.shape[0], 1, *spatial)
            xs = x[sb]
            deleted = torch.where(changed, base_del[sb], xs)
            inserted = torch.where(changed, xs, base_ins[sb])
            curves["deletion"].append(_target_probability(model(deleted), tgt[sb], prob))
            curves["insertion"].append(_target_probability(model(inserted), tgt[sb], prob))

    out: dict[str, Tensor] = {}
    nan = torch.tensor(math.nan, device=dev)
    for name, parts in curves.items():
        curve = torch.cat(parts).view(b, steps + 1)
        auc = torch.trapezoid(curve, fractions, dim=1)
        out[name] = torch.where(degenerate, nan, auc)
        out[f"{name}_curve"] = curve
    out["fractions"] = fractions
    out["targets"] = tgt
    out["degenerate"] = degenerate
    return out
