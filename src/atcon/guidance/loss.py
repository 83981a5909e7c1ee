"""Attention supervision from a few boxes: pull Grad-CAM into the boxes, out of regions to avoid.

Two forms, each added to the classification loss of a labeled batch with weight ``W``
(``--box-weight``); items without boxes or regions to avoid add nothing.

**Grad-CAM form** (``"gradcam"``). For every supervised pair (item ``i``, true class ``c``, see
:func:`~atcon.guidance.regions.supervised_pairs`), ``A`` is the signed Grad-CAM of ``c`` at the
target layer (paper Eq. 3-4, differentiable), ``q = softmax(vec A)`` its spatial softmax over
the ``n`` cells of the layer's grid, ``b_j`` and ``v_j`` the shares of cell ``j`` covered by the
class's boxes and by the item's regions to avoid. With ``mu_in = sum_j q_j b_j`` and
``mu_av = sum_j q_j v_j``::

    L_cam(i, c) = -log(mu_in)            (when the item has a box of c)
                  - log(1 - mu_av)       (when it has regions to avoid)
    L = L_sup + W / B * sum_pairs L_cam

The softmax makes the term scale-free in the right way: a constant or all-zero map gives
``mu_in = `` the boxes' share of the image, not a minimum, so there is no degenerate optimum (a
ReLU'd "mass outside / total mass" ratio is minimised by a map of zeros). Its resolution is the
layer's grid (4 x 4 for ``small`` at 64 px).

**Input-gradient form** (``"input_gradient"``, Ross et al. 2017, "Right for the Right Reasons"):
the squared input gradient of the summed log-probabilities, over the pixels a box says are
irrelevant, at pixel resolution::

    g_i = d/dx_i sum_k log p_k(x_i)      (softmax; log sigmoid per class for multi-label)
    L_rrr(i) = sum_{channels, pixels} (a_i * g_i)^2
    L = L_sup + W / B * sum_i L_rrr(i)

with ``a_i = 1`` outside the union of the item's boxes (when it has any) and inside its regions
to avoid, ``0`` elsewhere (:func:`~atcon.guidance.regions.irrelevant_pixels`).

Both run inside the supervised forward pass (one forward; the Grad-CAM form adds a backward
through the head, the input-gradient form a double backward through the network) and leave the
one ordinary ``backward()`` of the step to the caller, as DistributedDataParallel requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.attention.hooks import LayerSpec, capture_features
from atcon.attention.maps import as_logits, check_input, gradcam_from
from atcon.guidance.regions import cell_coverage, irrelevant_pixels, pair_masks, supervised_pairs

BoxLoss = Literal["gradcam", "input_gradient"]
BOX_LOSSES: tuple[BoxLoss, ...] = get_args(BoxLoss)

_EPS = 1e-6


def box_attention_loss(cam: Tensor, inside: Tensor, avoid: Tensor) -> Tensor:
    """``L_cam`` of each pair (module docstring) from its signed map and cell coverages.

    Args:
        cam: signed Grad-CAM per pair (differentiable).
        inside: share of each cell inside the pair's boxes, in ``[0, 1]``.
        avoid: share of each cell inside the item's regions to avoid, in ``[0, 1]``.

    Returns:
        ``(P,)``; a pair without boxes (all-zero ``inside``) has no in-box term, one without
        regions (all-zero ``avoid``) no avoid term.

    Shape:
        cam, inside, avoid: ``(P, *grid)``.
    """
    if not cam.shape == inside.shape == avoid.shape:
        raise ValueError(
            f"cam, inside and avoid must have one shape, got {cam.shape}, {inside.shape}, {avoid.shape}"
        )
    q = torch.softmax(cam.flatten(1).float(), dim=1)
    b, v = inside.flatten(1).to(q.dtype), avoid.flatten(1).to(q.dtype)
    mu_in, mu_av = (q * b).sum(1), (q * v).sum(1)
    has_in, has_av = b.sum(1) > 0, v.sum(1) > 0
    in_term = torch.where(has_in, -mu_in.clamp_min(_EPS).log(), torch.zeros_like(mu_in))
    av_term = torch.where(has_av, -(1 - mu_av).clamp_min(_EPS).log(), torch.zeros_like(mu_av))
    return in_term + av_term


def input_gradient_penalty(grads: Tensor, irrelevant: Tensor) -> Tensor:
    """``L_rrr`` of each item: the squared input gradient over its irrelevant pixels.

    Shape:
        grads: ``(B, C, H, W)``; irrelevant: ``(B, H, W)``. Returns ``(B,)``.
    """
    if grads.shape[0] != irrelevant.shape[0] or grads.shape[2:] != irrelevant.shape[1:]:
        raise ValueError(f"grads {tuple(grads.shape)} and mask {tuple(irrelevant.shape)} do not match")
    return (irrelevant.unsqueeze(1).to(grads.dtype) * grads).pow(2).sum(dim=(1, 2, 3))


@dataclass
class Guided:
    """A model output and the box-guidance penalty of its batch.

    Attributes:
        output: what the model returned (Inception's train-mode tuple included).
        penalty: ``1/B * sum`` of the per-pair (Grad-CAM form) or per-item (input-gradient form)
            terms: a scalar, differentiable w.r.t. the model's parameters (0 without boxes).
        pairs: the supervised ``(item, class)`` pairs (Grad-CAM form) or the items with
            irrelevant pixels (input-gradient form, as ``(item, -1)``).
    """

    output: Any
    penalty: Tensor
    pairs: Tensor


def _grad_rounds(pairs: Tensor) -> tuple[Tensor, int]:
    """Rank of each pair among its item's pairs (sorted by item), and the most pairs of one item."""
    if pairs.numel() == 0:
        return pairs.new_zeros(0), 0
    counts = torch.bincount(pairs[:, 0])
    starts = counts.cumsum(0) - counts
    rank = torch.arange(pairs.shape[0]) - starts[pairs[:, 0]]
    return rank, int(counts.max())


def box_guided_forward(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    target: dict[str, Any],
    task: str,
    form: BoxLoss = "gradcam",
    *,
    target_layer: LayerSpec = None,
    use: Tensor | None = None,
) -> Guided:
    """Forward a labeled batch and compute its box-guidance penalty (module docstring).

    The model runs in whatever mode it is in (training mode for supervised steps), with the
    Grad-CAM layer captured for the Grad-CAM form; gradients come from
    :func:`torch.autograd.grad` with ``create_graph=True``, so the penalty is differentiable
    and ``param.grad`` is untouched.

    Args:
        model: classifier returning ``(B, K)`` logits (plain or DistributedDataParallel-wrapped).
        x: ``(B, C, H, W)`` images (after augmentation: the targets' boxes are in its pixels).
        labels: the batch's labels on the CPU, ``(B,)`` class indices or ``(B, C)`` multi-hot.
        target: the collated targets (``boxes``, ``box_labels``, ``avoid``).
        task: ``"multiclass"`` or ``"multilabel"``.
        form: ``"gradcam"`` or ``"input_gradient"``.
        target_layer: Grad-CAM layer (None: the model's default).
        use: ``(B,)`` bool, the items whose annotations may be used (``--boxes-per-class``).

    Returns:
        A :class:`Guided` (model output, penalty, supervised pairs).
    """
    check_input(x)
    if x.ndim != 4:
        raise ValueError("box supervision is for images (B, C, H, W); clips have no boxes to pull maps into")
    if form not in BOX_LOSSES:
        raise ValueError(f"form must be one of {', '.join(BOX_LOSSES)}, got {form!r}")
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if form == "input_gradient":
        irrelevant = irrelevant_pixels(target, size, x.device, use)
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        with torch.enable_grad():
            output = model(xg)
            logits = as_logits(output, x.shape[0]).float()
            logp = F.log_softmax(logits, 1) if task == "multiclass" else F.logsigmoid(logits)
            (g,) = torch.autograd.grad(logp.sum(), xg, create_graph=True)
        penalty = input_gradient_penalty(g, irrelevant).sum() / x.shape[0]
        items = (irrelevant.flatten(1).sum(1) > 0).nonzero()[:, 0]
        return Guided(output, penalty, torch.stack([items, torch.full_like(items, -1)], 1))
    pairs = supervised_pairs(labels, target, task, use)
    with torch.enable_grad(), capture_features(model, target_layer, x) as cap:
        output = model(x)
    logits = as_logits(output, x.shape[0])
    if pairs.numel() == 0:
        return Guided(output, logits.sum() * 0.0, pairs)
    _, features = cap.features()
    rank, rounds = _grad_rounds(pairs)
    cams: list[Tensor] = []
    order: list[Tensor] = []
    for r in range(rounds):
        # Items are independent below the Grad-CAM layer's output, so one backward through the
        # head serves the r-th class of every item.
        sel = (rank == r).nonzero()[:, 0]
        items, classes = pairs[sel, 0].to(x.device), pairs[sel, 1].to(x.device)
        score = logits[items, classes].sum()
        (grad,) = torch.autograd.grad(score, features, create_graph=True, retain_graph=True)
        cams.append(gradcam_from(features[items], grad[items]))
        order.append(sel)
    cam = torch.cat(cams)[torch.argsort(torch.cat(order))]
    inside, avoid = pair_masks(target, pairs, size, x.device)
    grid = tuple(cam.shape[1:])
    loss = box_attention_loss(cam, cell_coverage(inside, grid), cell_coverage(avoid, grid))
    return Guided(output, loss.sum() / x.shape[0], pairs)
