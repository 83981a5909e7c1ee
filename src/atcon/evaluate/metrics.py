"""Classification metrics of the paper's Tables 1-2: per-class F1, macro/micro F1 and mAP, and the
top-1 accuracy of single-label (multi-class) tasks.

Point estimates come from torchmetrics' functional implementations. The same quantities are
also computed here from item *weights* (multiplicities), which is what the bootstrap needs to
evaluate 1000 resamples at once: a resample of the test items is a weight vector on the
original items, and every metric below is a function of weighted counts (F1) or weighted
cumulative sums along the score order (average precision).

Conventions (shared by both code paths and tested to agree):

- ``scores`` are logits by default (``from_logits=True``): multi-label predictions are
  ``sigmoid(logit) > threshold`` (0.5), multi-class predictions are the argmax. Pass
  ``from_logits=False`` when the scores are already probabilities (multi-label: sigmoid
  outputs; multi-class: softmax outputs); the thresholds then apply to them directly.
- Average precision is one-vs-rest per class, on sigmoid (multi-label) or softmax
  (multi-class) scores, with every distinct score as a threshold (no interpolation), as in
  torchmetrics/scikit-learn.
- A class without any positive test item has an undefined AP: it is ``nan`` in
  ``ap_per_class`` and left out of ``map``; ``n_positives`` reports the count. (torchmetrics
  itself returns 0 for such a class in the multi-label path and ``nan`` in the multi-class
  path; we make both ``nan``.)
- Targets equal to ``IGNORE`` (-1) are left out: in multi-label targets, that (item, class)
  entry only (PASCAL VOC's classes present only as difficult objects, ``target["ignore"]`` of
  :mod:`atcon.data.voc`: pass ``labels.masked_fill(ignore, -1)``); in multi-class targets,
  the whole item. This is torchmetrics' ``ignore_index=-1``.
- F1 of a class with no true positives is 0 (``zero_division=0``). ``f1_macro`` follows
  torchmetrics: the plain mean over all classes for multi-label, the mean over classes that
  appear in the targets or the predictions for multi-class. ``f1_micro`` pools the counts of
  all classes (for multi-class this equals accuracy).
- ``accuracy`` (multi-class only) is the share of items whose argmax is their class; it is
  reported under its own name because readers of single-label results look for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_average_precision,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_average_precision,
    multiclass_f1_score,
    multilabel_average_precision,
    multilabel_f1_score,
)

Task = Literal["multilabel", "multiclass"]
_TASKS = ("multilabel", "multiclass")
IGNORE = -1
"""Target value of entries (multi-label) or items (multi-class) left out of every metric."""


def labels_of(target: Mapping[str, Any], task: Task) -> Tensor:
    """The metric targets of a collated :mod:`atcon.data` batch.

    Args:
        target: collated targets: ``labels`` (multi-hot) and optionally ``ignore`` (entries of
            classes present only as difficult objects) for images, ``label`` for clips.
        task: ``"multilabel"`` or ``"multiclass"``.

    Returns:
        (B, C) float multi-hot with ``IGNORE`` at ignored entries, or (B,) long class indices.
    """
    if task == "multiclass":
        return torch.as_tensor(target["label"]).long()
    labels = torch.as_tensor(target["labels"]).float()
    ignore = target.get("ignore")
    return labels.masked_fill(torch.as_tensor(ignore).bool(), IGNORE) if ignore is not None else labels


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")


def _check_inputs(scores: Tensor, targets: Tensor, task: str) -> None:
    _check_task(task)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    if task == "multilabel" and targets.shape != scores.shape:
        raise ValueError(f"multilabel targets must be (N, C) like scores, got {tuple(targets.shape)}")
    if task == "multiclass" and targets.shape != scores.shape[:1]:
        raise ValueError(f"multiclass targets must be (N,) class indices, got {tuple(targets.shape)}")


def probabilities(scores: Tensor, task: Task = "multilabel", *, from_logits: bool = True) -> Tensor:
    """Class probabilities from scores.

    Args:
        scores: logits (``from_logits=True``) or probabilities.
        task: ``"multilabel"`` (independent sigmoids) or ``"multiclass"`` (softmax).
        from_logits: whether ``scores`` are logits.

    Returns:
        Probabilities in [0, 1], same shape, float.

    Shape:
        scores: (N, C) -> (N, C).
    """
    _check_task(task)
    scores = scores.float()
    if not from_logits:
        return scores
    return scores.sigmoid() if task == "multilabel" else scores.softmax(dim=-1)


def binary_predictions_and_targets(
    scores: Tensor,
    targets: Tensor,
    task: Task = "multilabel",
    *,
    from_logits: bool = True,
    threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """One-vs-rest 0/1 predictions, targets and validity, the common form of both tasks.

    Args:
        scores: logits or probabilities, see the module docstring.
        targets: multi-hot (multi-label) or class indices (multi-class); ``IGNORE`` (-1)
            marks entries (multi-label) or items (multi-class) to leave out.
        task: ``"multilabel"`` or ``"multiclass"``.
        from_logits: whether ``scores`` are logits.
        threshold: multi-label decision threshold on the probability (ignored for multi-class).

    Returns:
        ``(pred, target, valid)``, all bool; ``pred`` and ``target`` are False where not valid.

    Shape:
        scores: (N, C); targets: (N, C) or (N,); outputs: (N, C).
    """
    _check_inputs(scores, targets, task)
    num_classes = scores.shape[1]
    if task == "multilabel":
        valid = targets != IGNORE
        pred = probabilities(scores, task, from_logits=from_logits) > threshold
        return pred & valid, targets == 1, valid
    classes = torch.arange(num_classes, device=scores.device)
    valid = (targets != IGNORE).unsqueeze(1).expand(-1, num_classes)
    pred = scores.argmax(dim=1, keepdim=True) == classes
    return pred & valid, targets.long().unsqueeze(1) == classes, valid


def classification_metrics(
    scores: Tensor,
    targets: Tensor,
    task: Task = "multilabel",
    *,
    from_logits: bool = True,
    threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Per-class F1, macro F1, micro F1, per-class AP and mAP (torchmetrics).

    Args:
        scores: logits (default) or probabilities, see ``from_logits``.
        targets: multi-label: multi-hot {0, 1}; multi-class: class indices; ``IGNORE`` (-1)
            where an entry (multi-label) or item (multi-class) is left out.
        task: ``"multilabel"`` (sigmoid > threshold) or ``"multiclass"`` (argmax).
        from_logits: whether ``scores`` are logits (``sigmoid``/``softmax`` applied here).
        threshold: multi-label decision threshold on the probability.

    Returns:
        ``f1_per_class`` (C,), ``f1_macro`` (), ``f1_micro`` (), ``ap_per_class`` (C,) with
        ``nan`` for classes without positives, ``map`` () the mean AP over the other classes
        (``nan`` if none), ``n_positives`` (C,) the number of positive items per class, and
        for multi-class ``accuracy`` () the share of items whose argmax is their class.
        Float tensors on the input's device, values in [0, 1].

    Shape:
        scores: (N, C); targets: (N, C) multi-label or (N,) multi-class.
    """
    _check_inputs(scores, targets, task)
    num_classes = scores.shape[1]
    probs = probabilities(scores, task, from_logits=from_logits)
    _, onehot, _ = binary_predictions_and_targets(scores, targets, task, from_logits=from_logits)
    n_pos = onehot.sum(0)
    ign = IGNORE
    # torchmetrics warns about classes without positives; they are handled explicitly below.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(No positive samples|was `nan`).*")
        if task == "multilabel" and num_classes == 1:
            # A single label is the binary task (torchmetrics' multilabel needs two or more).
            p1, t1 = probs[:, 0], targets[:, 0].long()
            f1_pc = binary_f1_score(p1, t1, threshold=threshold, ignore_index=ign).reshape(1)
            f1_macro = f1_micro = f1_pc[0]
            ap = binary_average_precision(p1, t1, ignore_index=ign).reshape(1)
        elif task == "multilabel":
            t = targets.long()
            f1_pc, f1_macro, f1_micro = (
                multilabel_f1_score(
                    probs, t, num_labels=num_classes, threshold=threshold, average=avg, ignore_index=ign
                )
                for avg in (None, "macro", "micro")
            )
            ap = multilabel_average_precision(
                probs, t, num_labels=num_classes, average=None, ignore_index=ign
            )
        else:
            t = targets.long()
            f1_pc, f1_macro, f1_micro = (
                multiclass_f1_score(probs, t, num_classes=num_classes, average=avg, ignore_index=ign)
                for avg in (None, "macro", "micro")
            )
            ap = multiclass_average_precision(
                probs, t, num_classes=num_classes, average=None, ignore_index=ign
            )
    ap = torch.where(n_pos > 0, ap.float(), torch.full_like(ap.float(), float("nan")))
    out = {
        "f1_per_class": f1_pc.float(),
        "f1_macro": f1_macro.float(),
        "f1_micro": f1_micro.float(),
        "ap_per_class": ap,
        "map": ap.nanmean(),
        "n_positives": n_pos.float(),
    }
    if task == "multiclass":
        t = targets.long()
        out["accuracy"] = multiclass_accuracy(
            probs, t, num_classes=num_classes, average="micro", ignore_index=ign
        ).float()
    return out


def weighted_f1(
    pred: Tensor, target: Tensor, weights: Tensor, task: Task = "multilabel"
) -> dict[str, Tensor]:
    """F1 scores under item weights, for many weightings at once.

    With integer weights (bootstrap multiplicities) this equals :func:`classification_metrics`
    on the data with each item repeated ``weight`` times.

    Args:
        pred: one-vs-rest 0/1 predictions, False at left-out entries.
        target: one-vs-rest 0/1 targets, False at left-out entries.
        weights: non-negative weight of each item, one row per weighting.
        task: selects the macro-average rule (see the module docstring).

    Returns:
        ``f1_per_class`` (R, C), ``f1_macro`` (R,), ``f1_micro`` (R,).

    Shape:
        pred, target: (N, C); weights: (R, N).
    """
    _check_task(task)
    p = pred.to(weights.dtype)
    y = target.to(weights.dtype)
    # Weighted confusion counts are matrix products: (R, N) @ (N, C).
    tp = weights @ (p * y)
    fp = weights @ (p * (1 - y))
    fn = weights @ ((1 - p) * y)
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(denom))
    if task == "multilabel":
        macro = f1.mean(-1)
    else:
        present = (denom > 0).to(f1.dtype)
        macro = (f1 * present).sum(-1) / present.sum(-1).clamp_min(1)
    tp_s, fp_s, fn_s = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    d = 2 * tp_s + fp_s + fn_s
    micro = torch.where(d > 0, 2 * tp_s / d.clamp_min(1e-12), torch.zeros_like(d))
    return {"f1_per_class": f1, "f1_macro": macro, "f1_micro": micro}


def weighted_average_precision(
    scores: Tensor, target: Tensor, weights: Tensor, valid: Tensor | None = None
) -> Tensor:
    """One-vs-rest average precision under item weights, for many weightings at once.

    AP = sum over distinct thresholds of (recall step) x precision, i.e. with item weights
    ``w`` and ``P = sum of w over positives``::

        AP = sum over positive items k of (w_k / P) * precision(last item tied with k)

    where precision at a sorted position is the weighted share of positives among the items
    scored at least as high. Items with equal score form one threshold, so with integer weights
    this equals torchmetrics' AP on the data with each item repeated ``weight`` times. A class
    whose weighted positive count is 0 gets ``nan``.

    Args:
        scores: per-class scores (probabilities or any monotone transform of them).
        target: one-vs-rest 0/1 targets.
        weights: non-negative weight of each item, one row per weighting.
        valid: entries to use (default all); others get weight 0 in their class.

    Returns:
        AP per weighting and class, (R, C).

    Shape:
        scores, target, valid: (N, C); weights: (R, N).
    """
    n_items, num_classes = scores.shape
    nan = torch.tensor(float("nan"), dtype=weights.dtype, device=weights.device)
    out = torch.empty(weights.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    positions = torch.arange(n_items, device=scores.device)
    # One class at a time keeps memory at (R, N); the loop is over classes, not items. Only the
    # cumulative weight over all items is an (R, N) pass; the rest is over positive items only.
    for c in range(num_classes):
        s_sorted, order = scores[:, c].sort(descending=True, stable=True)
        w = weights.index_select(1, order)
        if valid is not None:
            w = w * valid[order, c].to(w.dtype)
        # Sorted position of the last item tied with each position.
        new_run = torch.ones(n_items, dtype=torch.bool, device=scores.device)
        new_run[1:] = s_sorted[1:] != s_sorted[:-1]
        run_id = new_run.cumsum(0) - 1
        run_end = torch.zeros(int(run_id[-1]) + 1, dtype=torch.long, device=scores.device)
        run_end = run_end.scatter_reduce_(0, run_id, positions, reduce="amax")[run_id]
        pos = positions[target[order, c] == 1]
        if pos.numel() == 0:
            out[:, c] = nan
            continue
        w_pos = w[:, pos]
        cum_pos = w_pos.cumsum(dim=1)
        ends = run_end[pos]
        # Positives up to each run end: those whose sorted position is <= the end.
        tp = cum_pos[:, torch.searchsorted(pos, ends, right=True) - 1]
        tot = w.cumsum(dim=1)[:, ends]
        precision = torch.where(tot > 0, tp / tot.clamp_min(1e-12), torch.zeros_like(tot))
        n_pos = cum_pos[:, -1]
        ap = (w_pos * precision).sum(dim=1) / n_pos.clamp_min(1e-12)
        out[:, c] = torch.where(n_pos > 0, ap, nan)
    return out


@dataclass(frozen=True)
class ClassificationMetrics:
    """:func:`classification_metrics` bound to its options, with a vectorised resampled form.

    Calling it gives the torchmetrics point estimates; :meth:`resampled` gives the same
    metrics for many item weightings at once, which :func:`atcon.evaluate.bootstrap_ci` uses.

    Args:
        task: ``"multilabel"`` or ``"multiclass"``.
        from_logits: whether scores are logits.
        threshold: multi-label decision threshold on the probability.
    """

    task: Task = "multilabel"
    from_logits: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        _check_task(self.task)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    def __call__(self, scores: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """See :func:`classification_metrics`."""
        return classification_metrics(
            scores, targets, self.task, from_logits=self.from_logits, threshold=self.threshold
        )

    def resampled(self, scores: Tensor, targets: Tensor, weights: Tensor) -> dict[str, Tensor]:
        """The metrics under each row of item weights.

        Args:
            scores: as for ``__call__``.
            targets: as for ``__call__``.
            weights: item multiplicities, one row per resample.

        Returns:
            The keys of ``__call__`` with a leading resample dim (R, ...).

        Shape:
            scores: (N, C); targets: (N, C) or (N,); weights: (R, N).
        """
        pred, onehot, valid = binary_predictions_and_targets(
            scores, targets, self.task, from_logits=self.from_logits, threshold=self.threshold
        )
        out = weighted_f1(pred, onehot, weights, self.task)
        probs = probabilities(scores, self.task, from_logits=self.from_logits).to(weights.dtype)
        ap = weighted_average_precision(probs, onehot, weights, valid)
        out["ap_per_class"] = ap
        out["map"] = ap.nanmean(dim=1)
        out["n_positives"] = weights @ onehot.to(weights.dtype)
        if self.task == "multiclass":
            # An item is valid as a whole (its row of ``valid`` is constant); correct when its
            # argmax is its class.
            correct = weights @ (pred & onehot).any(dim=1).to(weights.dtype)
            counted = weights @ valid[:, 0].to(weights.dtype)
            out["accuracy"] = torch.where(
                counted > 0, correct / counted.clamp_min(1e-12), torch.full_like(counted, float("nan"))
            )
        return out
