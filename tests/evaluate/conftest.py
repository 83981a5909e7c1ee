"""Synthetic evaluation results shared by the results, comparison and table tests."""

from __future__ import annotations

import torch
from torch import Tensor

from atcon.evaluate import EvalSpec, EvaluationResult, LocalizationResult, summarize


def synthetic(
    n: int = 200, classes: int = 3, noise: float = 0.0, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, classes, generator=g) < 0.4).float()
    logits = (labels * 2 - 1) * 3 + noise * torch.randn(n, classes, generator=g)
    pairs = ((logits > 0) & (labels == 1)).nonzero()
    return logits, labels, pairs


def result(name: str, noise: float, iou_shift: float = 0.0) -> EvaluationResult:
    logits, labels, pairs = synthetic(noise=noise, seed=1)
    p = pairs.shape[0]
    iou = (torch.linspace(0.2, 0.6, p) + iou_shift).clamp(0, 1)
    loc = LocalizationResult(
        iou, (iou > 0.4).float(), iou, torch.zeros(p, dtype=torch.bool), torch.ones(p, dtype=torch.long)
    )
    spec = EvalSpec("multilabel", classes=("x", "y", "z"), n_resamples=300)
    return summarize(logits, labels, pairs, loc, None, spec, name=name)
