"""Guarded attention-consistency fine-tuning with the Hugging Face ``Trainer``.

    pip install transformers accelerate
    python examples/hf_trainer.py                    # synthetic data, CPU
    python examples/hf_trainer.py --data my_images/  # your image folder

``ConsistencyTrainer.compute_loss`` returns :class:`atcon.GuardedConsistencyLoss`'s loss; a
``TrainerCallback`` feeds the label-free signals of a held-out unlabeled slice to
:class:`atcon.LabelFreeSelector` after every epoch, keeps the best weights and stops training.
The network is any ``nn.Module`` whose forward takes the image batch (here a torchvision
ResNet-18 behind ``pixel_values``); a transformers vision model works the same way when its
Grad-CAM layer is named (``target_layer=``) and its forward returns logits (or has ``.logits``).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atcon
from common import accuracy, arguments, classifier, datasets, pretrain, report


class PixelValues(Dataset):
    """``{"pixel_values": x}`` items, the Trainer's input format; labels are dropped."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.data[i][0]}


class ConsistencyTrainer(Trainer):
    """A ``Trainer`` whose loss is the guarded consistency loss of the batch's images."""

    def __init__(self, *args: Any, start: nn.Module, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = copy.deepcopy(start).eval().requires_grad_(False)  # the anchor's reference
        self.losses: dict[int, atcon.GuardedConsistencyLoss] = {}

    def loss_fn(self, model: nn.Module) -> atcon.GuardedConsistencyLoss:
        # The Trainer may hand a wrapped model (DDP, DataParallel): one loss object per wrapper.
        if id(model) not in self.losses:
            self.losses[id(model)] = atcon.GuardedConsistencyLoss(model, self.start, anchor_weight=1.0)
        return self.losses[id(model)]

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        out = self.loss_fn(model)(inputs["pixel_values"])
        return (out.loss, {"logits": out.logits}) if return_outputs else out.loss


class LabelFreeSelection(TrainerCallback):
    """After each epoch: the held-out signals to the selector; keep the best, stop when it says."""

    def __init__(
        self, loss_fn: atcon.GuardedConsistencyLoss, held_out: DataLoader, patience: int = 3
    ) -> None:
        self.loss_fn, self.held_out = loss_fn, held_out
        self.selector = atcon.LabelFreeSelector(patience=patience)
        self.best = copy.deepcopy(loss_fn.model.state_dict())

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.selector.update(self.loss_fn.signals(self.held_out))  # the starting network

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        decision = self.selector.update(self.loss_fn.signals(self.held_out))
        if decision.best:
            self.best = copy.deepcopy(self.loss_fn.model.state_dict())
        control.should_training_stop = decision.stop

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.loss_fn.model.load_state_dict(self.best)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    torch.manual_seed(args.seed)
    labeled, unlabeled, held_out, classes = datasets(args)
    net = classifier(classes)
    pretrain(net, labeled, args.pretrain_epochs, args.batch_size)
    start_accuracy = accuracy(net, held_out)
    start = copy.deepcopy(net.state_dict())

    training = TrainingArguments(
        output_dir=str(Path(args.out, "hf")),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        remove_unused_columns=False,  # the model's forward is not a transformers signature
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        use_cpu=not torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = ConsistencyTrainer(model=net, args=training, train_dataset=PixelValues(unlabeled), start=net)
    selection = LabelFreeSelection(trainer.loss_fn(net), DataLoader(held_out, batch_size=64))
    trainer.add_callback(selection)
    trainer.train()
    return report(net, held_out, start_accuracy, start, selection.selector, args.out)


if __name__ == "__main__":
    main()
