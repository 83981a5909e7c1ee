"""Small, shared training glue: losses per strategy, one optimizer step, prediction.

Each step makes exactly one ordinary ``backward()``; the consistency loss's second-order terms
come from ``torch.autograd.grad`` inside it, which is what DistributedDataParallel supports.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.attention.hooks import eval_mode
from atcon.consistency import ConsistencyConfig, ConsistencyResult, attention_consistency
from atcon.evaluate import IGNORE
from atcon.train.distributed import world_size


def unpack_output(output: Any) -> tuple[Tensor, Tensor | None]:
    """``(logits, aux_logits or None)`` of a model output (Inception's train-mode namedtuple)."""
    return getattr(output, "logits", output), getattr(output, "aux_logits", None)


def classification_loss(logits: Tensor, labels: Tensor, task: str) -> Tensor:
    """BCE-with-logits (multi-label, entries equal to ``IGNORE`` left out) or cross-entropy."""
    if task == "multiclass":
        return F.cross_entropy(logits.float(), labels)
    keep = labels != IGNORE
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none")
    return (bce * keep).sum() / keep.sum().clamp(min=1)


def supervised_loss(
    model: nn.Module, x: Tensor, labels: Tensor, task: str, aux_weight: float = 0.4
) -> Tensor:
    """Classification loss of one batch; Inception's auxiliary logits add ``aux_weight`` times theirs."""
    return output_loss(model(x), labels, task, aux_weight)


def output_loss(output: Any, labels: Tensor, task: str, aux_weight: float = 0.4) -> Tensor:
    """Classification loss of a model output (Inception's auxiliary logits weighted by ``aux_weight``)."""
    logits, aux = unpack_output(output)
    loss = classification_loss(logits, labels, task)
    if aux is not None:
        loss = loss + aux_weight * classification_loss(aux, labels, task)
    return loss


def consistency_loss(
    model: nn.Module,
    x: Tensor,
    config: ConsistencyConfig,
    target_layer: str | None,
    mask_model: nn.Module | None = None,
) -> Tensor:
    """Mean attention-consistency loss of a batch, computed with the model in eval mode."""
    return consistency_result(model, x, config, target_layer, mask_model).loss.mean()


def consistency_result(
    model: nn.Module,
    x: Tensor,
    config: ConsistencyConfig,
    target_layer: str | None,
    mask_model: nn.Module | None = None,
) -> ConsistencyResult:
    """Everything one consistency-loss evaluation of a batch produced (model in eval mode)."""
    with eval_mode(model):
        return attention_consistency(model, x, config, target_layer=target_layer, mask_model=mask_model)


def touch_parameters(loss: Tensor, model: nn.Module) -> Tensor:
    """Add an exact zero that depends on every trainable parameter.

    Under DistributedDataParallel every parameter must receive a gradient in every step; the
    consistency loss never depends on the output bias, and SimCLR/consistency steps leave heads
    unused. Zero-weighted terms keep the reducer in step without ``find_unused_parameters``.
    """
    if world_size() == 1:
        return loss
    return loss + sum((p.sum() * 0.0 for p in model.parameters() if p.requires_grad), loss.new_zeros(()))


def optimizer_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float = 0.0,
    parameters: list[nn.Parameter] | None = None,
) -> None:
    """One update: zero grads, one ``backward()``, optional unscale + clip, step (and scaler update)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters or [], clip_grad)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(parameters or [], clip_grad)
    optimizer.step()


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16/fp16 autocast on GPU (bf16 also on CPU); a null context for ``amp="none"``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type != "cuda" and dtype is torch.float16:
        raise ValueError("fp16 autocast needs a CUDA device; use --amp bf16 or none")
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict(
    model: nn.Module, loader: Any, device: torch.device, task: str, amp: str = "none"
) -> tuple[Tensor, Tensor]:
    """Logits and labels of a whole loader, in eval mode; both on the CPU.

    Returns:
        ``(scores (N, C), labels)`` with labels ``(N, C)`` multi-hot (``IGNORE`` for difficult-only
        classes) or ``(N,)`` class indices.
    """
    from atcon.evaluate.metrics import labels_of

    scores, labels = [], []
    with eval_mode(model):
        for x, target in loader:
            with autocast(device, amp):
                logits, _ = unpack_output(model(x.to(device, non_blocking=True)))
            scores.append(logits.float().cpu())
            labels.append(labels_of(target, task))  # type: ignore[arg-type]
    return torch.cat(scores), torch.cat(labels)
