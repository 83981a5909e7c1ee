"""What one evaluation of a run measures and where its row goes.

The validation metrics of the network's class scores (:func:`validation_metrics`), the label-free
signals on the held-out unlabeled slice (:func:`holdout_signals`), and the row's outputs:
``metrics.csv`` and TensorBoard (:class:`RowWriter`). Model selection on the row stays with the
trainer, which owns the run's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from atcon.evaluate import classification_metrics
from atcon.evaluate.metrics import Task
from atcon.train.engine import predict
from atcon.train.labelfree import label_free_signals
from atcon.train.loss_setup import LossSetup
from atcon.train.rundir import tensorboard, write_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss, the weights or the validation outputs became NaN or infinite; the last
    good checkpoint is kept and no non-finite one is written."""

    user_error = True


def validation_metrics(
    net: nn.Module, loader: DataLoader[Any], device: torch.device, task: Task, amp: str
) -> dict[str, float] | None:
    """``val_map``, ``val_f1_macro`` and ``val_f1_micro`` of ``net`` on the validation loader;
    None when an output is NaN or infinite (the caller says why and stops)."""
    scores, labels = predict(net, loader, device, task, amp)
    if not bool(torch.isfinite(scores).all()):
        return None
    m = classification_metrics(scores, labels, task)
    return {
        "val_map": float(m["map"]),
        "val_f1_macro": float(m["f1_macro"]),
        "val_f1_micro": float(m["f1_micro"]),
    }


def holdout_signals(net: nn.Module, loss: LossSetup, device: torch.device) -> dict[str, float]:
    """The label-free signals of ``net`` on the held-out unlabeled slice (``lf_*`` row keys),
    against the run's reference, with its consistency variant and mask model."""
    assert loss.holdout_loader is not None and loss.reference is not None
    signals = label_free_signals(
        net,
        loss.reference,
        (x for x, _ in loss.holdout_loader),  # the targets are never read
        loss.consistency,
        loss.task,
        target_layer=loss.target_layer,
        device=device,
        mask_model=loss.mask_model,
    )
    return {f"lf_{k}": v for k, v in signals.items()}


class RowWriter:
    """Writes a run's evaluation rows: all of them to ``metrics.csv``, each row's numbers to
    TensorBoard at its step. Only the main process writes; the TensorBoard writer is created at
    the first row, so building a trainer writes nothing."""

    def __init__(self, run_dir: Path, is_main: bool) -> None:
        self.run_dir, self.is_main = run_dir, is_main
        self._tensorboard: Any = None

    @property
    def tensorboard(self) -> Any:
        """The TensorBoard writer (main process, ``tensorboard`` installed), else None."""
        if self._tensorboard is None and self.is_main:
            self._tensorboard = tensorboard(self.run_dir / "tensorboard") or False
        return self._tensorboard or None

    def write(self, history: list[dict[str, Any]], step: int) -> None:
        """Rewrite ``metrics.csv`` from ``history`` and log its last row's numbers at ``step``."""
        if not self.is_main:
            return
        write_metrics(self.run_dir / "metrics.csv", history)
        if self.tensorboard is None:
            return
        for key, value in history[-1].items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and key not in ("epoch", "step")
            ):
                self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()
