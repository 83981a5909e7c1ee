"""Model-parameter randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

A saliency method that explains the *model* must change when the model's weights are destroyed.
The cascading test re-initialises the network's parameterised blocks one after another, from the
output down to the input (``fc``, then ``layer4`` as well, then ``layer3`` as well, ...), and after
each step compares the maps of the partly random network with those of the trained one, for the
same inputs and the same target classes (the trained model's top-1 predictions). Similarity that
stays high while the weights are randomised means the map reflects the input (edges) more than
what the model learned; Adebayo et al. found this for Guided Backprop, not for Grad-CAM.

Three maps are checked, each at the input's resolution:

* ``gradcam``: ReLU'd Grad-CAM (as displayed), upsampled to the input;
* ``guided_backprop``: the Guided Backprop saliency ``S = sum_c |GB_c|``;
* ``mask``: the consistency loss's soft mask ``P`` of ``S``. ``P`` is a per-sample increasing
  function of ``S``, so its rank correlation equals that of ``S`` (unless float rounding merges
  close values of ``S``); its SSIM differs.

Two similarities, per sample: Spearman rank correlation (:func:`rank_correlation`) and SSIM of
the min-max normalised maps (:func:`atcon.consistency.similarity.ssim`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from atcon.attention.hooks import LayerSpec, find_target_layer, resolve_layer, unwrap_model
from atcon.attention.maps import Targets, gradcam_and_guided_backprop
from atcon.attention.ops import upsample_to_input
from atcon.consistency.masking import saliency, soft_mask
from atcon.consistency.similarity import _spread, pearson, ssim
from atcon.models import cascade_blocks, reinitialize

MAP_KINDS: tuple[str, ...] = ("gradcam", "guided_backprop", "mask")
METRICS: tuple[str, ...] = ("rank_correlation", "ssim")
KIND_LABELS: dict[str, str] = {"gradcam": "Grad-CAM", "guided_backprop": "Guided Backprop", "mask": "Mask"}
_METRIC_LABELS = {"rank_correlation": "rank corr.", "ssim": "SSIM"}


def average_ranks(v: Tensor) -> Tensor:
    """Ranks ``0 .. N-1`` of each row, tied values sharing the mean of their ranks ("fractional" ranks).

    Shape:
        v: ``(B, N)``. Returns ``(B, N)`` in ``v``'s dtype (at least float32).
    """
    n = v.shape[1]
    sorted_v, order = v.sort(dim=1)
    pos = torch.arange(n, device=v.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = starts.cumsum(dim=1) - 1  # tie-group id of each sorted position
    first = torch.full_like(order, n).scatter_reduce(1, group, pos, "amin")
    last = torch.zeros_like(order).scatter_reduce(1, group, pos, "amax")
    dtype = torch.promote_types(v.dtype, torch.float32)
    sorted_ranks = ((first + last).to(dtype) / 2).gather(1, group)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each sample's flattened maps, in ``[-1, 1]``.

    Ties get their average rank, as in ``scipy.stats.spearmanr``. This matters here rather than
    being a detail: a ReLU'd Grad-CAM is zero over large regions, and breaking those ties by
    position would correlate any two such maps through the raster order of their shared zeros.
    A constant map (spread below float resolution, as in :func:`atcon.consistency.similarity.pearson`)
    gives 0, never ``nan``. Not differentiable (the result is detached).

    Shape:
        a, b: ``(B, *spatial)``. Returns ``(B,)``.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"maps must be batches (B, *spatial) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dtype = torch.promote_types(a.dtype, torch.float32)
    a, b = a.detach().flatten(1).to(dtype), b.detach().flatten(1).to(dtype)
    _, _, a_varies = _spread(a, (1,))
    _, _, b_varies = _spread(b, (1,))
    r = pearson(average_ranks(a), average_ranks(b))
    return torch.where((a_varies & b_varies).squeeze(1), r, torch.zeros_like(r))


@dataclass
class SanityResult:
    """Similarity of the maps of cumulatively randomised networks to the trained network's maps.

    Attributes:
        blocks: the block randomised at each step, top down (``["fc", "layer4", ...]``); step
            ``k`` has ``blocks[:k + 1]`` all re-initialised.
        metrics: ``metrics[kind][metric]`` is a ``(len(blocks), B)`` CPU tensor of per-sample
            values; kinds :data:`MAP_KINDS`, metrics :data:`METRICS`.
        layer: the Grad-CAM layer.
        targets: ``(B,)`` the classes explained (the trained model's top-1 predictions).
        seed: block ``k`` (1-based step) was re-initialised with seed ``seed + k``.
    """

    blocks: list[str]
    metrics: dict[str, dict[str, Tensor]]
    layer: str
    targets: Tensor
    seed: int = 0

    @property
    def n_items(self) -> int:
        return int(self.targets.shape[0])

    def mean(self) -> dict[str, dict[str, Tensor]]:
        """Per-step means over the samples: ``mean()[kind][metric]`` has shape ``(len(blocks),)``."""
        return {k: {m: v.mean(dim=1) for m, v in per.items()} for k, per in self.metrics.items()}

    def std(self) -> dict[str, dict[str, Tensor]]:
        """Per-step standard deviations over the samples (population, so one sample gives 0)."""
        return {k: {m: v.std(dim=1, correction=0) for m, v in per.items()} for k, per in self.metrics.items()}

    def to_markdown(self, digits: int = 3) -> str:
        """Mean similarity per step: rows are "randomised through" blocks, top down."""
        means = self.mean()
        head = ["Randomised through"] + [
            f"{KIND_LABELS[k]} {_METRIC_LABELS[m]}" for k in MAP_KINDS for m in METRICS
        ]
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for i, block in enumerate(self.blocks):
            cells = [f"{float(means[k][m][i]):.{digits}f}" for k in MAP_KINDS for m in METRICS]
            lines.append("| " + " | ".join([f"`{block}`", *cells]) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: one row of means per step, and every per-sample value."""
        means = self.mean()
        return {
            "layer": self.layer,
            "seed": self.seed,
            "n_items": self.n_items,
            "targets": self.targets.tolist(),
            "blocks": list(self.blocks),
            "rows": [
                {
                    "randomized_through": block,
                    **{k: {m: _finite(float(means[k][m][i])) for m in METRICS} for k in MAP_KINDS},
                }
                for i, block in enumerate(self.blocks)
            ],
            "per_item": {
                k: {m: [[_finite(v) for v in row] for row in t.tolist()] for m, t in per.items()}
                for k, per in self.metrics.items()
            },
        }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _maps(model: nn.Module, x: Tensor, layer: str, targets: Targets) -> tuple[dict[str, Tensor], Tensor]:
    """The three compared maps, each ``(B, *input spatial)``, and the targets ``(B,)``."""
    cam, gb, t = gradcam_and_guided_backprop(model, x, layer, targets, relu=True)
    s = saliency(gb)
    return {"gradcam": upsample_to_input(cam, x), "guided_backprop": s, "mask": soft_mask(s)}, t


def cascading_randomization(
    model: nn.Module,
    x: Tensor,
    *,
    target_layer: LayerSpec = None,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
) -> SanityResult:
    """Run the cascading parameter-randomisation test on one batch.

    Works on a deep copy in eval mode: ``model`` (weights, BatchNorm statistics, flags) is left
    untouched. The whole batch is processed at once; every sample is compared with itself.

    Args:
        model: a trained classifier with ReLUs (for Guided Backprop), on ``x``'s device.
        x: input batch.
        target_layer: Grad-CAM layer (name or submodule of ``model``); None for
            :func:`atcon.attention.find_target_layer`'s choice, made once on ``model``.
        seed: the block randomised at step ``k`` (1-based) is re-drawn with seed ``seed + k``.
        blocks: parameterised blocks in input-to-output order (default
            :func:`atcon.models.cascade_blocks`); they are randomised from the last one back.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``.

    Raises:
        ValueError: an unknown block or layer name.
    """
    inner = unwrap_model(model)
    layer = find_target_layer(inner, x) if target_layer is None else resolve_layer(inner, target_layer)[0]
    clone = copy.deepcopy(inner).eval().requires_grad_(False)  # maps need gradients w.r.t. x only
    order = list(cascade_blocks(clone) if blocks is None else blocks)[::-1]
    modules = [resolve_layer(clone, b)[1] for b in order]  # fail on a bad name before any work

    reference, targets = _maps(clone, x, layer, None)
    steps: list[dict[str, dict[str, Tensor]]] = []
    for k, module in enumerate(modules, start=1):
        reinitialize(module, seed + k)
        maps, _ = _maps(clone, x, layer, targets)
        steps.append(
            {
                kind: {"rank_correlation": rank_correlation(ref, maps[kind]), "ssim": ssim(ref, maps[kind])}
                for kind, ref in reference.items()
            }
        )
    batch = x.shape[0]
    metrics = {
        kind: {
            m: torch.stack([s[kind][m] for s in steps]).detach().cpu() if steps else torch.empty(0, batch)
            for m in METRICS
        }
        for kind in MAP_KINDS
    }
    return SanityResult(order, metrics, layer, targets.cpu(), seed)
