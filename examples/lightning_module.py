"""Guarded attention-consistency fine-tuning as a Lightning ``LightningModule``.

    pip install lightning
    python examples/lightning_module.py                    # synthetic data, CPU
    python examples/lightning_module.py --data my_images/  # your image folder

``training_step`` returns :class:`atcon.GuardedConsistencyLoss`'s loss (Lightning calls
``backward``); at each epoch's end the label-free signals of a held-out unlabeled slice go to
:class:`atcon.LabelFreeSelector`, which keeps the best weights and stops the trainer. Everything
is logged to ``CSVLogger`` (``--out``/lightning/version_0/metrics.csv).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atcon
from common import accuracy, arguments, classifier, datasets, pretrain, report


class ConsistencyFinetuning(L.LightningModule):
    """Fine-tunes ``model`` on unlabeled batches; ``held_out`` feeds the label-free selection."""

    def __init__(self, model: nn.Module, held_out: DataLoader, lr: float = 1e-4, patience: int = 3) -> None:
        super().__init__()
        self.model, self.held_out, self.lr = model, held_out, lr
        self.loss_fn = atcon.GuardedConsistencyLoss(model, anchor_weight=1.0)  # freezes the start
        self.selector = atcon.LabelFreeSelector(patience=patience)
        self.best: dict[str, torch.Tensor] = copy.deepcopy(model.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self.selector.update(self.loss_fn.signals(self.held_out, device=self.device))  # the start

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0]  # the label is never read
        out = self.loss_fn(x)
        self.log_dict({"consistency": out.consistency, "anchor": out.anchor, "agreement": out.agreement})
        return out.loss

    def on_train_epoch_end(self) -> None:
        decision = self.selector.update(self.loss_fn.signals(self.held_out, device=self.device))
        signals = self.selector.history[-1]
        self.log_dict(
            {"held_out_" + k.removeprefix("lf_"): v for k, v in signals.items() if k.startswith("lf_")}
        )
        if decision.best:
            self.best = copy.deepcopy(self.model.state_dict())
        if decision.stop:
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.model.load_state_dict(self.best)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    L.seed_everything(args.seed, verbose=False)
    labeled, unlabeled, held_out, classes = datasets(args)
    net = classifier(classes)
    pretrain(net, labeled, args.pretrain_epochs, args.batch_size)
    start_accuracy = accuracy(net, held_out)
    start = copy.deepcopy(net.state_dict())

    module = ConsistencyFinetuning(net, DataLoader(held_out, batch_size=64), lr=args.lr)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(args.out, name="lightning"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, DataLoader(unlabeled, args.batch_size, shuffle=True))
    return report(net, held_out, start_accuracy, start, module.selector, args.out)


if __name__ == "__main__":
    main()
