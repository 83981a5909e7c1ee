"""Label-free stopping and model selection for consistency fine-tuning (paper, section 6).

Validation labels decide when the paper's fine-tuning stops; a user fine-tuning on deployment
data has none. After each epoch, four signals are measured on a **held-out slice of unlabeled
data** (never trained on; no label is read):

* ``consistency``: the mean attention-consistency loss (the quantity being optimised, measured on
  items it was not optimised on);
* ``agreement``: the share of items whose top-1 class is the starting network's top-1 class;
* ``class_entropy``: the normalised entropy ``H(q) / log K`` of the marginal distribution ``q`` of
  top-1 classes over the slice. A collapsing network predicts ever fewer classes, the collapse
  signal used in test-time adaptation; 1 means every class equally often;
* ``kl_to_start``: the mean per-item divergence of the predictions from the starting network's
  (:func:`atcon.train.guard.prediction_anchor`).

Five more describe *where* the maps look, for a shortcut warning (a network that comes to rely on
a small cue concentrates its maps on it); they are logged (``lf_cam_entropy``, ...) and read by
no rule unless one asks for them:

* ``cam_entropy``: normalised spatial entropy of the ReLU'd Grad-CAM over the layer's cells
  (1: spread evenly, 0: one cell);
* ``cam_peak``: share of the ReLU'd Grad-CAM's mass (upsampled to the input) in its top 5% of
  pixels;
* ``gb_peak``: the same share for the Guided Backprop saliency ``S = sum_c |GB|``;
* ``gb_in_cam``: share of ``S``'s mass where the rescaled Grad-CAM is at least 0.5 (whether the two
  maps put their mass in the same place);
* ``cam_vs_start``: Pearson correlation of each item's Grad-CAM with the starting network's, for
  the same class (attention drift).

:class:`LabelFreeSelection` turns them into decisions. An evaluation is *admissible* when
``agreement >= min_agreement`` and ``class_entropy >= min_entropy_ratio * class_entropy_0``
(``_0``: the starting network, which is always an admissible candidate). The selected model is
the admissible one with the lowest held-out consistency loss. Fine-tuning stops after
``patience`` evaluations in a row that are inadmissible or improve the best held-out consistency
by less than ``min_delta`` (the plateau).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from atcon.attention.hooks import eval_mode
from atcon.attention.maps import forward_pass, gradcam_from
from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.train.guard import prediction_anchor
from atcon.train.selection import SelectionRule, Verdict

SIGNALS = ("consistency", "agreement", "class_entropy", "kl_to_start")
MAP_SIGNALS = ("cam_entropy", "cam_peak", "gb_peak", "gb_in_cam", "cam_vs_start")
"""The map-shape signals (module docstring), logged beside :data:`SIGNALS`."""
PEAK_SHARE = 0.05


def _flat(maps: Tensor) -> Tensor:
    return maps.detach().float().flatten(1)


def spatial_entropy(maps: Tensor) -> Tensor:
    """Normalised entropy of each map's ReLU'd mass over its positions, in ``[0, 1]``; ``nan`` for
    a map without positive mass.

    Shape:
        maps: ``(B, *spatial)``. Returns ``(B,)``.
    """
    m = _flat(maps).clamp(min=0)
    total = m.sum(1, keepdim=True)
    p = m / total.clamp_min(torch.finfo(m.dtype).tiny)
    h = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(max(m.shape[1], 2))
    return torch.where(total[:, 0] > 0, h, math.nan)


def top_share(maps: Tensor, fraction: float = PEAK_SHARE) -> Tensor:
    """Share of each non-negative map's mass in its top ``fraction`` of positions; ``nan`` without mass.

    Shape:
        maps: ``(B, *spatial)``. Returns ``(B,)``.
    """
    m = _flat(maps).clamp(min=0)
    k = max(1, math.ceil(fraction * m.shape[1]))
    total = m.sum(1)
    top = m.topk(k, dim=1).values.sum(1)
    return torch.where(total > 0, top / total.clamp_min(torch.finfo(m.dtype).tiny), math.nan)


def share_inside(values: Tensor, region: Tensor) -> Tensor:
    """Share of each non-negative map's mass inside a boolean region; ``nan`` without mass.

    Shape:
        values, region: ``(B, *spatial)``. Returns ``(B,)``.
    """
    v, r = _flat(values).clamp(min=0), region.flatten(1)
    total = v.sum(1)
    return torch.where(total > 0, (v * r).sum(1) / total.clamp_min(torch.finfo(v.dtype).tiny), math.nan)


def map_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two maps per item; ``nan`` where either is constant.

    Shape:
        a, b: ``(B, *spatial)``. Returns ``(B,)``.
    """
    x, y = _flat(a), _flat(b)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    den = (x.norm(dim=1) * y.norm(dim=1)).float()
    return torch.where(den > 0, (x * y).sum(1) / den.clamp_min(torch.finfo(den.dtype).tiny), math.nan)


def map_signals(cam: Tensor, saliency: Tensor | None, cam_start: Tensor) -> dict[str, Tensor]:
    """The per-item map-shape signals (module docstring) of one batch.

    Args:
        cam: signed Grad-CAM ``(B, *layer spatial)``.
        saliency: ``S = sum_c |GB|`` ``(B, *input spatial)``, or None (control masks: the
            Guided Backprop signals are ``nan``).
        cam_start: the starting network's signed Grad-CAM for the same classes.

    Returns:
        ``{name: (B,)}`` for every name of :data:`MAP_SIGNALS`.
    """
    relu = cam.detach().float().clamp(min=0)
    out = {"cam_entropy": spatial_entropy(relu), "cam_vs_start": map_correlation(cam, cam_start)}
    nan = torch.full((cam.shape[0],), math.nan, device=cam.device)
    if saliency is None:
        up = relu
        out.update(gb_peak=nan, gb_in_cam=nan)
    else:
        from atcon.attention.ops import upsample_to_input

        up = upsample_to_input(relu, tuple(saliency.shape[1:]))
        lo = up.flatten(1).amin(1).view(-1, *[1] * (up.ndim - 1))
        hi = up.flatten(1).amax(1).view(-1, *[1] * (up.ndim - 1))
        hot = (up - lo) >= 0.5 * (hi - lo).clamp_min(torch.finfo(up.dtype).tiny)
        out.update(gb_peak=top_share(saliency), gb_in_cam=share_inside(saliency.detach(), hot))
    out["cam_peak"] = top_share(up)
    return {k: out[k] for k in MAP_SIGNALS}


def marginal_entropy(top1: Tensor, num_classes: int) -> Tensor:
    """Normalised entropy of the histogram of predicted classes, in ``[0, 1]``.

    Shape:
        top1: ``(N,)`` class indices. Returns a scalar.
    """
    if num_classes < 2:
        return top1.new_zeros((), dtype=torch.float32)
    q = torch.bincount(top1, minlength=num_classes).float()
    q = q / q.sum().clamp(min=1)
    return -(q * q.clamp(min=1e-12).log()).sum() / math.log(num_classes)


def label_free_signals(
    model: nn.Module,
    reference: nn.Module,
    batches: Iterable[Tensor],
    config: ConsistencyConfig,
    task: str,
    *,
    target_layer: str | None = None,
    device: torch.device | str = "cpu",
    mask_model: nn.Module | None = None,
) -> dict[str, float]:
    """The label-free signals of ``model`` on unlabeled ``batches`` (see the module docstring).

    Args:
        model: the network being fine-tuned (evaluated in eval mode, left as found).
        reference: the frozen starting network.
        batches: input tensors ``(B, C, *spatial)`` of the held-out slice (no labels).
        config: the consistency loss's configuration.
        task: ``"multilabel"`` or ``"multiclass"``.
        target_layer: Grad-CAM layer.
        device: where to compute.
        mask_model: the control mask network, when ``config.mask_source == "random_network"``.

    Returns:
        ``{"consistency", "agreement", "class_entropy", "kl_to_start"}`` and the map-shape signals
        of :data:`MAP_SIGNALS` (means over the items where they are defined), as floats.
    """
    losses, top1, top1_ref, kls, sizes = [], [], [], [], []
    maps: dict[str, list[Tensor]] = {k: [] for k in MAP_SIGNALS}
    with eval_mode(model), eval_mode(reference):
        for x in batches:
            x = x.to(device)
            result = attention_consistency(model, x, config, target_layer=target_layer, mask_model=mask_model)
            z0, cam0 = _reference_pass(reference, x, target_layer, result.targets)
            z = result.logits.detach()
            losses.append(result.loss.detach())
            top1.append(z.argmax(1))
            top1_ref.append(z0.argmax(1))
            kls.append(prediction_anchor(z, z0, task).detach() * x.shape[0])
            sizes.append(x.shape[0])
            assert result.gradcam is not None
            for key, v in map_signals(result.gradcam, result.saliency, cam0).items():
                maps[key].append(v)
    if not losses:
        raise ValueError("label-free signals need at least one held-out batch")
    t, t0 = torch.cat(top1), torch.cat(top1_ref)
    k = int(z.shape[1])
    return {
        "consistency": float(torch.cat(losses).mean()),
        "agreement": float((t == t0).float().mean()),
        "class_entropy": float(marginal_entropy(t, k)),
        "kl_to_start": float(torch.stack(kls).sum()) / sum(sizes),
        **{key: float(torch.cat(v).nanmean()) for key, v in maps.items()},
    }


def _reference_pass(
    reference: nn.Module, x: Tensor, target_layer: str | None, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """The starting network's logits and its signed Grad-CAM for ``targets`` (both detached)."""
    with forward_pass(reference, x, target_layer, guided=False) as fp:
        (g,) = fp.gradients(targets, (fp.features,), guided=False, create_graph=False)
        cam = gradcam_from(fp.features, g)
        return fp.logits.detach(), cam.detach()


LF_KEYS = tuple(f"lf_{k}" for k in SIGNALS)
"""The metrics-row keys of the label-free signals (``lf_consistency``, ...)."""


@dataclass(frozen=True)
class LabelFreeSelection(SelectionRule):
    """Select and stop from label-free signals only (see the module docstring).

    Reads the ``lf_*`` keys of the metrics rows (:data:`LF_KEYS`); the first row is the starting
    network. Stateless: everything it needs is in the rows, so a resumed run decides as an
    uninterrupted one.

    Args:
        min_agreement: smallest admissible top-1 agreement with the starting network.
        min_entropy_ratio: smallest admissible ``class_entropy / class_entropy_0``.
        min_delta: an admissible model must lower the best held-out consistency by more than this
            to count as progress (the plateau test).
        patience: stop after this many evaluations in a row without progress (0: never).
    """

    min_agreement: float = 0.9
    min_entropy_ratio: float = 0.95
    min_delta: float = 0.002
    patience: int = 3

    @property
    def name(self) -> str:
        return "label-free"

    def admissible(self, row: Mapping[str, Any], start: Mapping[str, Any]) -> bool:
        """Whether ``row``'s predictions stay close enough to the start's (``start`` itself is)."""
        return float(row["lf_agreement"]) >= self.min_agreement and float(
            row["lf_class_entropy"]
        ) >= self.min_entropy_ratio * float(start["lf_class_entropy"])

    def score(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> float:
        """``-lf_consistency`` when admissible, else ``-inf``; the first row always counts."""
        missing = [k for k in LF_KEYS if k not in row]
        if missing:
            raise KeyError(f"label-free selection needs the signals {', '.join(missing)} in the row")
        if history and not self.admissible(row, history[0]):
            return -math.inf
        return -float(row["lf_consistency"])

    def judge(self, score: float, history: Sequence[Mapping[str, Any]]) -> Verdict:
        """Best: a higher score than every earlier row. Stop: ``patience`` rows in a row, this one
        included, that did not beat the best by more than ``min_delta``."""
        if not history:
            return Verdict(best=True, stop=False)
        best_so_far = max(float(r["selection"]) for r in history)
        best = score > best_so_far
        stale = 0 if score > best_so_far + self.min_delta else 1
        if stale:
            # Count the earlier stale rows back to the last row that made progress.
            running = [float(r["selection"]) for r in history]
            for i in range(len(running) - 1, 0, -1):
                if running[i] > max(running[:i]) + self.min_delta:
                    break
                stale += 1
        return Verdict(best=best, stop=self.patience > 0 and stale >= self.patience)
