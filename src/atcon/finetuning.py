"""Guarded consistency fine-tuning in your own training loop: the loss and the stopping rule.

:class:`GuardedConsistencyLoss` is what ``atcon finetune`` minimises by default, as a module for
any loop (plain PyTorch, Lightning, the Hugging Face ``Trainer``): the attention-consistency loss
(Algorithm 1) plus the prediction anchor that keeps the network's predictions near the starting
network's (:func:`atcon.train.guard.prediction_anchor`), without which the consistency loss alone
destroys a classifier on a pool of unlabeled images. :class:`LabelFreeSelector` is the
label-free selection and stopping rule (:mod:`atcon.train.labelfree`) as a small object fed with
the signals of a held-out slice of unlabeled data::

    loss_fn = atcon.GuardedConsistencyLoss(model, task="multiclass")    # copies the start
    selector = atcon.LabelFreeSelector()
    selector.update(loss_fn.signals(held_out))                          # the start is a candidate
    for epoch in range(epochs):
        for x in unlabeled:
            out = loss_fn(x)                       # out.loss, out.consistency, out.anchor
            optimizer.zero_grad(); out.loss.backward(); optimizer.step()
        decision = selector.update(loss_fn.signals(held_out))
        if decision.best: torch.save(model.state_dict(), "best.pt")
        if decision.stop: break

Both losses work inside ``DistributedDataParallel`` without ``find_unused_parameters``: the loss of
a wrapped model depends (by an exact zero) on every trainable parameter, so the reducer sees a
gradient for each (the consistency loss never reaches the output bias). Under DDP,
:meth:`GuardedConsistencyLoss.signals` returns the mean over the ranks (each may hold its own
share of the held-out data), so every rank's selector takes the same decision.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from atcon.attention.hooks import LayerSpec, eval_mode, unwrap_model
from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.consistency.loss import finite_samples, mean_of_kept, touch_if_distributed
from atcon.train.guard import prediction_anchor
from atcon.train.labelfree import LabelFreeSelection, label_free_signals

Task = Literal["multiclass", "multilabel"]


@dataclass
class GuardedLoss:
    """One evaluation of :class:`GuardedConsistencyLoss` on a batch.

    Attributes:
        loss: ``consistency + anchor_weight * anchor``, a scalar with its graph (call
            ``backward()`` on it).
        consistency: the mean attention-consistency loss of the batch (detached).
        anchor: the mean divergence from the starting network's predictions (detached).
        agreement: share of the batch whose top-1 class is the starting network's (detached).
        logits: ``(B, K)`` logits of the batch (detached).
    """

    loss: Tensor
    consistency: Tensor
    anchor: Tensor
    agreement: Tensor
    logits: Tensor


class GuardedConsistencyLoss(nn.Module):
    """Attention-consistency loss with the collapse guard (the prediction anchor).

    ``loss = mean_b L_con(x_b) + anchor_weight * 1/B sum_b KL(f_0(x_b) || f(x_b))`` with ``f_0`` the
    frozen starting network (softmax KL for single-label tasks, Bernoulli KL summed over classes
    for multi-label ones). It is computed with the model in eval mode (frozen normalisation; the
    model's flags are restored), needs no labels and leaves ``param.grad`` to the caller's one
    ``backward()``.

    The models are referenced, not registered as submodules: ``state_dict()`` of the loss is
    empty and ``loss_fn.to(device)`` moves nothing.

    Args:
        model: the classifier being fine-tuned (plain or DistributedDataParallel-wrapped).
        reference: the starting network; default a frozen copy of ``model`` as it is now.
        anchor_weight: ``lambda`` (0: the paper's unguarded loss).
        task: ``"multiclass"`` (softmax outputs) or ``"multilabel"`` (sigmoids).
        target_layer: Grad-CAM layer (dotted name, module, or None to discover it).
        config: the consistency variant (default: Algorithm 1).
        **overrides: fields of :class:`~atcon.consistency.ConsistencyConfig` replaced in ``config``.

    Samples holding a NaN or infinite value are left out of both terms (no loss, no gradient);
    an empty batch raises ``ValueError``.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``.
    """

    def __init__(
        self,
        model: nn.Module,
        reference: nn.Module | None = None,
        *,
        anchor_weight: float = 1.0,
        task: Task = "multiclass",
        target_layer: LayerSpec = None,
        config: ConsistencyConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
        if not anchor_weight >= 0:
            raise ValueError(f"anchor_weight must be >= 0, got {anchor_weight}")
        known = {f.name for f in dataclasses.fields(ConsistencyConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(unknown)}; ConsistencyConfig fields are {', '.join(sorted(known))}"
            )
        self.config = dataclasses.replace(config or ConsistencyConfig(), **overrides)
        if self.config.mask_source == "random_network":
            raise ValueError(
                "GuardedConsistencyLoss takes the method's mask sources, not the random-network control"
            )
        if reference is None:
            reference = copy.deepcopy(unwrap_model(model))
        reference = reference.eval().requires_grad_(False)
        self.__dict__.update(model=model, reference=reference, target_layer=target_layer)
        self.anchor_weight = float(anchor_weight)
        self.task: Task = task

    model: nn.Module
    reference: nn.Module
    target_layer: LayerSpec

    def forward(self, x: Tensor) -> GuardedLoss:
        """The guarded loss of an unlabeled batch, with its parts."""
        x, keep = finite_samples(x)  # samples with NaN/inf values are left out of both terms
        kept = keep.sum().clamp(min=1)
        with eval_mode(self.model):
            result = attention_consistency(self.model, x, self.config, target_layer=self.target_layer)
        consistency = mean_of_kept(result.loss, keep)
        logits = result.logits
        with torch.no_grad(), eval_mode(self.reference):
            out = self.reference(x)
            z0 = getattr(out, "logits", out)
        # A left-out sample's logits are set to the start's: it adds no divergence and no gradient.
        anchored = torch.where(keep[:, None], logits, z0.to(logits.dtype))
        anchor = prediction_anchor(anchored, z0, self.task) * (x.shape[0] / kept)
        loss = touch_if_distributed(consistency + self.anchor_weight * anchor, self.model)
        agreement = (logits.detach().argmax(1) == z0.argmax(1)).float().mean()
        return GuardedLoss(loss, consistency.detach(), anchor.detach(), agreement, logits.detach())

    def signals(
        self, batches: Iterable[Tensor | tuple[Tensor, Any]], device: torch.device | str | None = None
    ) -> dict[str, float]:
        """The label-free signals of the model on held-out unlabeled data (no label is read).

        Args:
            batches: input tensors ``(B, C, *spatial)``, or ``(x, anything)`` pairs whose second
                element is ignored (a labeled loader's targets are never read).
            device: where to compute (default: the model's).

        Returns:
            ``consistency``, ``agreement``, ``class_entropy``, ``kl_to_start`` and the map-shape
            signals of :mod:`atcon.train.labelfree`.
        """
        if device is None:
            device = next(unwrap_model(self.model).parameters()).device
        inputs = (b[0] if isinstance(b, (tuple, list)) else b for b in batches)
        signals = label_free_signals(
            unwrap_model(self.model), self.reference, inputs, self.config, self.task,
            target_layer=self.target_layer, device=device,  # type: ignore[arg-type]
        )  # fmt: skip
        return _mean_over_ranks(signals, self.model, torch.device(device))

    def extra_repr(self) -> str:
        return f"anchor_weight={self.anchor_weight:g}, task={self.task!r}, {self.config}"


def _mean_over_ranks(signals: dict[str, float], model: nn.Module, device: torch.device) -> dict[str, float]:
    """The ranks' mean of each signal when ``model`` is DDP-wrapped, so that every rank's
    :class:`LabelFreeSelector` takes the same decision (one rank stopping alone would hang the
    others); the signals unchanged otherwise."""
    if not (
        isinstance(model, nn.parallel.DistributedDataParallel)
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    ):
        return signals
    keys = sorted(signals)
    values = torch.tensor([signals[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    values /= torch.distributed.get_world_size()
    return dict(zip(keys, values.tolist()))


@dataclass(frozen=True)
class Decision:
    """What :meth:`LabelFreeSelector.update` decided about one evaluation.

    Attributes:
        best: the model as it is now is the best so far: keep (save) it.
        stop: stop fine-tuning (``patience`` evaluations without progress).
        admissible: its predictions stayed within the agreement and class-entropy floors.
    """

    best: bool
    stop: bool
    admissible: bool


@dataclass
class LabelFreeSelector:
    """The label-free selection rule for a user's loop: feed it each evaluation's signals.

    The first update is the starting network (always admissible and kept until something better
    comes); later ones are admissible when top-1 agreement with the start is at least
    ``min_agreement`` and the predicted-class entropy at least ``min_entropy_ratio`` times the
    start's; the best is the admissible one with the lowest held-out consistency loss; ``stop``
    after ``patience`` evaluations without a gain of ``min_delta`` (0: never). The same rule as
    ``atcon finetune --select label-free``.

    Attributes:
        history: every update's signals, score and verdict.
    """

    min_agreement: float = 0.9
    min_entropy_ratio: float = 0.95
    min_delta: float = 0.002
    patience: int = 3
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rule = LabelFreeSelection(
            self.min_agreement, self.min_entropy_ratio, self.min_delta, self.patience
        )

    def update(self, signals: Mapping[str, float]) -> Decision:
        """Judge one evaluation (:meth:`GuardedConsistencyLoss.signals`)."""
        row = {f"lf_{k}": float(v) for k, v in signals.items()}
        score = self._rule.score(row, self.history)
        verdict = self._rule.judge(score, self.history)
        self.history.append({**row, "selection": score, "best": verdict.best})
        return Decision(verdict.best, verdict.stop, score != float("-inf"))

    @property
    def best_index(self) -> int:
        """Index of the kept evaluation (0: the starting network)."""
        return max(i for i, row in enumerate(self.history) if row["best"])


__all__ = ["Decision", "GuardedConsistencyLoss", "GuardedLoss", "LabelFreeSelector"]
