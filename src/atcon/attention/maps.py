"""Grad-CAM and Guided Backpropagation, batched and differentiable (paper Eq. 3-5).

All functions take a batch ``x`` of shape ``(B, C, *spatial)`` -- ``(B, C, H, W)`` images or
``(B, C, T, H, W)`` clips -- and return maps for every sample in one forward and one backward
pass. Targets are per sample (``None`` = each sample's top-1 class). Nothing is left on the
model: hooks are scoped to the call, train/eval flags, ``requires_grad`` and BatchNorm statistics
are restored, and ``param.grad`` is never written (gradients come from ``torch.autograd.grad``).

Per-sample independence holds when no layer mixes samples: BatchNorm layers must be in eval mode
(a training-mode BatchNorm makes each sample's map depend on the rest of the batch); LayerNorm,
GroupNorm and attention act within a sample, so ConvNeXts and Vision Transformers are
batch-independent in train mode too (dropout and stochastic depth aside).

Token models work the same way: a Vision Transformer's target layer outputs tokens
``(B, P + h*w, D)`` and a Swin stage ``(B, H, W, C)``; both are read as ``(B, D, h, w)`` feature
maps (:mod:`atcon.attention.tokens`), so the maps are ``(B, h, w)`` on the patch grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from atcon.attention.guided import GuidedState, guided_mode, require_activations, twice_differentiable
from atcon.attention.hooks import LayerSpec, capture_features, preserve_model, unwrap_model

Targets = int | Tensor | None


def check_input(x: Tensor) -> None:
    """Raise a clear error unless ``x`` is a floating batch of images or clips."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.device.type == "meta":
        raise ValueError(
            "x is a meta tensor (a shape without data): move real data to the model's device first"
        )
    if x.ndim not in (4, 5):
        hint = " (add the batch dimension with x.unsqueeze(0))" if x.ndim in (3, 4) else ""
        raise ValueError(
            f"x must be a batch shaped (B, C, H, W) for images or (B, C, T, H, W) for clips; "
            f"got {x.ndim} dims {tuple(x.shape)}{hint}"
        )


def as_logits(output: object, batch: int) -> Tensor:
    """Return the ``(B, num_classes)`` logits of a model output.

    torchvision's ``InceptionOutputs`` / ``GoogLeNetOutputs`` (train mode, auxiliary heads) are
    unwrapped to their main ``logits``.
    """
    logits = getattr(output, "logits", output)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits shaped (B, num_classes) = ({batch}, K); got {shape}. "
            "Wrap models with other outputs so that forward returns the class scores."
        )
    return logits


def select_targets(logits: Tensor, targets: Targets) -> Tensor:
    """Per-sample target classes as a LongTensor ``(B,)`` on the logits' device.

    Args:
        logits: ``(B, K)``.
        targets: None (each sample's top-1 class), an int (same class for all), or ``(B,)``.
    """
    batch, classes = logits.shape
    if targets is None:
        return logits.detach().argmax(dim=1)
    if isinstance(targets, bool) or (not isinstance(targets, (int, Tensor))):
        raise TypeError(
            f"targets must be None, an int or a LongTensor of shape ({batch},), got {type(targets).__name__}"
        )
    if isinstance(targets, int):
        targets = torch.full((batch,), targets, dtype=torch.long, device=logits.device)
    elif targets.shape != (batch,):
        raise ValueError(
            f"targets must be None, an int or a LongTensor of shape ({batch},), got {tuple(targets.shape)}"
        )
    elif targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        # .long() would truncate 2.7 to class 2 without a word.
        raise TypeError(f"targets must be class indices (an integer tensor), got {targets.dtype}")
    targets = targets.to(device=logits.device, dtype=torch.long)
    # A user-given target is checked once here (one host sync); top-1 targets need no check.
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= classes:
        raise ValueError(
            f"target class out of range: got {lo if lo < 0 else hi}, the model has {classes} classes"
        )
    return targets


def class_score(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over the batch of each sample's target logit (a scalar whose gradient is per-sample)."""
    return logits.gather(1, targets[:, None]).sum()


def gradcam_from(features: Tensor, grads: Tensor, relu: bool = False) -> Tensor:
    """Grad-CAM from a feature map and its gradient (paper Eq. 3-4).

    ``alpha_k = mean over positions of dy/df_k``; ``map = sum_k alpha_k f_k``.

    Shape:
        features, grads: ``(B, K, *spatial)``. Returns ``(B, *spatial)``.
    """
    dims = tuple(range(2, features.ndim))
    alpha = grads.mean(dim=dims, keepdim=True)
    cam = (alpha * features).sum(dim=1)
    return cam.clamp(min=0) if relu else cam


@dataclass
class ForwardPass:
    """One forward pass with the feature map captured (and, optionally, guided activations)."""

    x: Tensor
    logits: Tensor
    layer: str
    features: Tensor  # empty when the pass captured no layer
    guide: GuidedState | None

    def gradients(
        self,
        targets: Tensor,
        wrt: tuple[Tensor, ...],
        *,
        guided: bool,
        create_graph: bool,
        retain_graph: bool | None = None,
    ) -> tuple[Tensor, ...]:
        """``autograd.grad`` of the target scores w.r.t. ``wrt`` with the chosen activation rule."""
        if guided:
            if self.guide is None:
                raise RuntimeError("the forward pass was run without guided activations")
            require_activations(self.guide)
        if self.guide is None:
            return torch.autograd.grad(
                class_score(self.logits, targets), wrt, create_graph=create_graph, retain_graph=retain_graph
            )
        # The switch must be off again afterwards: a later backward through this forward graph
        # (the loss's, for the parameters) needs the true derivatives.
        self.guide.guided = guided
        try:
            return torch.autograd.grad(
                class_score(self.logits, targets), wrt, create_graph=create_graph, retain_graph=retain_graph
            )
        finally:
            self.guide.guided = False


@contextlib.contextmanager
def forward_pass(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    *,
    guided: bool,
    capture: bool = True,
    create_graph: bool = False,
) -> Iterator[ForwardPass]:
    """Run ``model(x)`` with the target layer captured (unless ``capture=False``); restores the model on exit.

    ``x`` is used as is when it already requires grad (so the maps stay differentiable w.r.t.
    an upstream graph); otherwise a leaf copy requiring grad is made (needed for input gradients).

    Args:
        guided: run the activations through the switchable guided rule
            (:func:`atcon.attention.guided_mode`); ordinary gradients stay available.
        capture: capture the target layer's feature map.
        create_graph: the gradients of this pass will be differentiated again: run attention and
            hardsigmoid through twice-differentiable kernels for the forward
            (:func:`atcon.attention.twice_differentiable`).
    """
    check_input(x)
    inner = unwrap_model(model)  # rejects nn.DataParallel early
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserve_model(model))
        stack.enter_context(torch.enable_grad())
        if create_graph:
            stack.enter_context(twice_differentiable())
        cap = stack.enter_context(capture_features(model, target_layer, x)) if capture else None
        # The function mode covers the model call only, not the backward passes that follow.
        with guided_mode(inner) if guided else contextlib.nullcontext() as guide:
            logits = as_logits(model(x), x.shape[0])
        layer, features = cap.features() if cap is not None else ("", x.new_empty(0))
        yield ForwardPass(x=x, logits=logits, layer=layer, features=features, guide=guide)


def gradcam(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec = None,
    targets: Targets = None,
    *,
    relu: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """Grad-CAM of ``model`` for ``x`` at ``target_layer`` (paper Eq. 3-4).

    Args:
        model: a classifier returning ``(B, K)`` logits.
        x: input batch.
        target_layer: dotted name (``"layer4"``, ``"blocks.11.norm1"``), submodule, None for the
            default (the last spatial feature map before global pooling; the last block's first
            norm of a Vision Transformer, see :func:`atcon.attention.find_target_layer`), or a
            :class:`~atcon.attention.TargetLayer` that also fixes how token outputs are read
            (patch grid, prefix tokens, channels-last).
        targets: None (top-1 per sample), an int, or a LongTensor ``(B,)``.
        relu: apply ReLU to the map (classic Grad-CAM for display and localization); the
            consistency loss uses the signed map.
        create_graph: keep the graph so the map can be differentiated w.r.t. the model's
            parameters (and ``x``); otherwise the map is returned detached.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``. Returns ``(B, h, w)`` or ``(B, t, h, w)``,
        the spatial size of the target layer (its patch grid for token layers).
    """
    with forward_pass(model, x, target_layer, guided=False, create_graph=create_graph) as fp:
        t = select_targets(fp.logits, targets)
        (g,) = fp.gradients(t, (fp.features,), guided=False, create_graph=create_graph)
        cam = gradcam_from(fp.features, g, relu)
    return cam if create_graph else cam.detach()


def guided_backprop(
    model: nn.Module,
    x: Tensor,
    targets: Targets = None,
    *,
    create_graph: bool = False,
) -> Tensor:
    """Guided Backpropagation: the input gradient with the guided rule (paper Eq. 5).

    Every rectifying activation -- ReLU and ReLU6 as in Springenberg et al., and LeakyReLU, ELU,
    SiLU, GELU, Hardswish, Mish... by the rule ``max(g, 0) * max(phi'(x), 0)`` of
    :mod:`atcon.attention.guided` -- passes only positive gradients.

    Args:
        model: a classifier with rectifying activations (modules or functional calls).
        x: input batch.
        targets: None (top-1 per sample), an int, or a LongTensor ``(B,)``.
        create_graph: keep the graph for second-order gradients; otherwise detached.

    Returns:
        The raw (signed) gradient, same shape as ``x``.

    Raises:
        ValueError: the model calls no rectifying activation.
    """
    with forward_pass(model, x, None, guided=True, capture=False, create_graph=create_graph) as fp:
        t = select_targets(fp.logits, targets)
        (g,) = fp.gradients(t, (fp.x,), guided=True, create_graph=create_graph)
    return g if create_graph else g.detach()


def gradcam_and_guided_backprop(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec = None,
    targets: Targets = None,
    *,
    relu: bool = False,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM and Guided Backprop from one shared forward pass.

    Returns:
        ``(gradcam, guided_backprop, targets)`` with shapes ``(B, *layer spatial)``,
        ``x.shape`` and ``(B,)``.
    """
    with forward_pass(model, x, target_layer, guided=True, create_graph=create_graph) as fp:
        t = select_targets(fp.logits, targets)
        (gf,) = fp.gradients(t, (fp.features,), guided=False, create_graph=create_graph, retain_graph=True)
        (gx,) = fp.gradients(t, (fp.x,), guided=True, create_graph=create_graph)
        cam = gradcam_from(fp.features, gf, relu)
    if not create_graph:
        cam, gx = cam.detach(), gx.detach()
    return cam, gx, t
