"""Collapse guards for consistency fine-tuning without labels.

Minimising the attention-consistency loss alone has a degenerate optimum: a network whose
Grad-CAM maps agree with themselves whatever the input, reached long before it forgets how to
classify shows up in any label-free number. On a pool of unlabeled images this happens within
a few hundred steps. The guards below keep the fine-tuned network ``f_theta`` close to the
network it started from, ``f_0``, in what matters:

**Prediction anchor** (weight ``lambda``): the divergence between the starting network's and the
fine-tuned network's predictive distributions on the same unlabeled batch,

* multi-label (independent sigmoids ``p = sigmoid(z)``):
  ``L_pred = lambda / B * sum_b sum_k KL(Bern(p0_bk) || Bern(p_bk))``
  ``= lambda / B * sum_b sum_k [BCE(z_bk, p0_bk) - H(p0_bk)]``;
* single-label (softmax): ``L_pred = lambda / B * sum_b KL(softmax(z0_b) || softmax(z_b))``.

It is zero, with zero gradient, at ``theta = theta_0``, and it uses the logits the consistency
loss's first forward pass already computed (only ``f_0`` costs an extra gradient-free pass).

**Parameter anchor** (weight ``mu``): ``L_par = mu * sum_i w_i (theta_i - theta0_i)^2`` with
``w_i = 1`` (plain L2-SP) or the diagonal Fisher information of the starting network, estimated
without labels, as EATA does for test-time adaptation (Niu et al. 2022): the squared gradient of
the log-likelihood of the network's own predictions, averaged over batches of unlabeled data
and rescaled to mean 1 (so ``mu`` means the same with and without the Fisher weights).

**Top-K blocks**: only the last ``K`` parameterised blocks (:func:`atcon.models.cascade_blocks`,
e.g. ``layer4`` and ``fc``) are trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.attention.hooks import eval_mode, unwrap_model
from atcon.models import cascade_blocks


def prediction_anchor(logits: Tensor, reference: Tensor, task: str) -> Tensor:
    """Mean per-sample KL divergence from the reference predictions to the current ones.

    Args:
        logits: ``(B, K)`` logits of the network being fine-tuned (differentiable).
        reference: ``(B, K)`` logits of the frozen starting network on the same batch.
        task: ``"multilabel"`` (independent sigmoids, KL summed over classes) or
            ``"multiclass"`` (softmax).

    Returns:
        A scalar ``>= 0``, zero when ``logits == reference``.
    """
    if logits.shape != reference.shape or logits.ndim != 2:
        raise ValueError(
            f"logits and reference must both be (B, K); got {tuple(logits.shape)}, {tuple(reference.shape)}"
        )
    z, z0 = logits.float(), reference.detach().float()
    if task == "multiclass":
        return F.kl_div(F.log_softmax(z, 1), F.log_softmax(z0, 1), log_target=True, reduction="batchmean")
    if task != "multilabel":
        raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
    p0 = torch.sigmoid(z0)
    # BCE(z, p0) - BCE(z0, p0) = KL(Bern(p0) || Bern(sigmoid z)), stable in logit space.
    kl = F.binary_cross_entropy_with_logits(z, p0, reduction="none") - F.binary_cross_entropy_with_logits(
        z0, p0, reduction="none"
    )
    return kl.sum(1).mean()


class ParameterAnchor:
    """``sum_i w_i (theta_i - theta0_i)^2`` over named parameters (multiply by ``mu`` yourself).

    Args:
        reference: the frozen starting network; its parameters are ``theta_0`` (read at each
            call, so restoring the reference's state restores the anchor).
        names: the parameter names to anchor (the trainable ones); default: every parameter
            that requires grad in ``reference``'s own counterpart when the anchor is called.
        weights: per-parameter weights ``w_i`` by name (e.g. :func:`fisher_diagonal`), or None
            for ``w_i = 1``.
    """

    def __init__(
        self,
        reference: nn.Module,
        names: Iterable[str] | None = None,
        weights: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.reference = unwrap_model(reference)
        own = dict(self.reference.named_parameters())
        self.names = list(names) if names is not None else None
        unknown = sorted(set(self.names or ()) - set(own))
        if unknown:
            raise ValueError(f"parameter anchor: the reference has no parameter {', '.join(unknown[:3])}")
        self.weights = dict(weights) if weights is not None else None
        if self.weights is not None:
            missing = sorted(set(self.names if self.names is not None else own) - set(self.weights))
            if missing:
                raise ValueError(f"parameter-anchor weights lack {', '.join(missing[:3])}")

    def __call__(self, model: nn.Module) -> Tensor:
        start = dict(self.reference.named_parameters())
        terms = []
        for name, p in unwrap_model(model).named_parameters():
            if (self.names is not None and name not in self.names) or not p.requires_grad:
                continue
            sq = (p - start[name].detach()).square()
            terms.append((sq * self.weights[name].to(sq.device) if self.weights is not None else sq).sum())
        if not terms:
            raise ValueError("the parameter anchor has no trainable parameter to anchor")
        return torch.stack(terms).sum()


@dataclass
class Guard:
    """The collapse guards of one fine-tuning run, as one extra loss term.

    ``penalty = lambda * L_pred + mu * L_par`` (module docstring); terms with weight 0 are skipped.

    Attributes:
        reference: the frozen starting network (eval mode, no gradients).
        task: ``"multilabel"`` or ``"multiclass"``.
        anchor_weight: ``lambda``.
        param_anchor: the parameter anchor, or None.
        param_anchor_weight: ``mu``.
    """

    reference: nn.Module
    task: str
    anchor_weight: float = 0.0
    param_anchor: ParameterAnchor | None = None
    param_anchor_weight: float = 0.0

    def penalty(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor:
        """The guard terms for batch ``x`` whose logits under ``model`` are ``logits`` (B, K)."""
        total = logits.new_zeros((), dtype=torch.float32)
        if self.anchor_weight:
            with torch.no_grad():
                out = self.reference(x)
            total = total + self.anchor_weight * prediction_anchor(
                logits, getattr(out, "logits", out), self.task
            )
        if self.param_anchor is not None and self.param_anchor_weight:
            total = total + self.param_anchor_weight * self.param_anchor(model)
        return total


def fisher_diagonal(
    model: nn.Module,
    batches: Iterable[Tensor],
    task: str,
    *,
    device: torch.device | str = "cpu",
    max_batches: int = 16,
) -> dict[str, Tensor]:
    """Diagonal Fisher information of the model's own predictions, from unlabeled batches.

    For each batch, the gradient of the mean log-likelihood of the predicted labels (top-1 class
    for single-label; each class thresholded at probability 0.5 for multi-label) is squared and
    averaged over batches (the batch-level estimate EATA uses). No label is read. The result is
    rescaled to mean 1 over all trainable entries; a parameter with zero Fisher everywhere keeps
    weight 0 (it does not affect the predictions).

    Args:
        model: the starting network (run in eval mode; left as found).
        batches: input tensors ``(B, C, *spatial)``.
        task: ``"multilabel"`` or ``"multiclass"``.
        device: where to compute.
        max_batches: at most this many batches are used.

    Returns:
        ``{parameter name: weights shaped like the parameter}`` for trainable parameters.
    """
    net = unwrap_model(model)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    sums = {n: torch.zeros_like(p) for n, p in named}
    seen = 0
    with eval_mode(net), torch.enable_grad():
        for i, x in enumerate(batches):
            if i >= max_batches:
                break
            out = net(x.to(device))
            z = getattr(out, "logits", out)
            if task == "multiclass":
                nll = F.cross_entropy(z, z.detach().argmax(1))
            else:
                nll = F.binary_cross_entropy_with_logits(z, (z.detach() > 0).float())
            grads = torch.autograd.grad(nll, [p for _, p in named], allow_unused=True)
            for (n, _), g in zip(named, grads):
                if g is not None:
                    sums[n] += g.detach().square()
            seen += 1
    if seen == 0:
        raise ValueError("fisher_diagonal got no batch")
    total = sum(float(s.sum()) for s in sums.values())
    count = sum(s.numel() for s in sums.values())
    scale = count / total if total > 0 else 1.0
    return {n: s * scale for n, s in sums.items()}


def trainable_top_blocks(model: nn.Module, k: int) -> list[str]:
    """Freeze every parameter outside the last ``k`` blocks of :func:`~atcon.models.cascade_blocks`.

    Args:
        model: the network (its ``requires_grad`` flags are changed in place).
        k: how many blocks, counted from the output, stay trainable (``k >= 1``).

    Returns:
        The names of the trainable blocks, input to output.
    """
    blocks = cascade_blocks(unwrap_model(model))
    if not 1 <= k <= len(blocks):
        raise ValueError(f"trainable_blocks must be between 1 and {len(blocks)} for this model, got {k}")
    keep = blocks[-k:]
    for name, p in unwrap_model(model).named_parameters():
        p.requires_grad_(any(name == b or name.startswith(b + ".") for b in keep))
    return keep


def guard_summary(config: Any) -> str:
    """One line naming the guards a config switches on (for logs)."""
    parts = []
    if getattr(config, "anchor_weight", 0.0):
        parts.append(f"prediction anchor lambda={config.anchor_weight:g}")
    if getattr(config, "param_anchor_weight", 0.0):
        kind = "Fisher-weighted" if getattr(config, "param_anchor_fisher", False) else "L2"
        parts.append(f"{kind} parameter anchor mu={config.param_anchor_weight:g}")
    if getattr(config, "trainable_blocks", 0):
        parts.append(f"top {config.trainable_blocks} blocks")
    return ", ".join(parts) or "no guard"


__all__ = [
    "Guard",
    "ParameterAnchor",
    "fisher_diagonal",
    "guard_summary",
    "prediction_anchor",
    "trainable_top_blocks",
]
