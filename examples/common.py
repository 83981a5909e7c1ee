"""Data and a starting classifier shared by the examples (not part of atcon's API).

``--data FOLDER`` reads an image folder with one sub-folder per class (torchvision's
``ImageFolder``); without it, a tiny synthetic set: a bright square on noise whose quadrant is
the class, so the examples run anywhere in seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset


class Squares(Dataset):
    """``n`` images ``(3, size, size)``: noise plus a bright square in quadrant ``label`` (4 classes)."""

    classes = ("top-left", "top-right", "bottom-left", "bottom-right")

    def __init__(self, n: int, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.images = 0.3 * torch.rand(n, 3, size, size, generator=g)
        half, side = size // 2, size // 4
        for i, y in enumerate(self.labels.tolist()):
            top = (y // 2) * half + int(torch.randint(0, half - side + 1, (), generator=g))
            left = (y % 2) * half + int(torch.randint(0, half - side + 1, (), generator=g))
            self.images[i, :, top : top + side, left : left + side] = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


def datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, Dataset, int]:
    """``(labeled, unlabeled, held_out, classes)``: 20% labeled, 60% unlabeled, 20% held out."""
    if args.data:
        tf = torchvision.transforms.Compose(
            [
                torchvision.transforms.Resize((args.image_size, args.image_size)),
                torchvision.transforms.ToTensor(),
                torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )
        full: Dataset = torchvision.datasets.ImageFolder(args.data, transform=tf)
        classes = len(full.classes)  # type: ignore[attr-defined]
    else:
        full, classes = Squares(args.images, args.image_size, seed=args.seed), 4
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed)).tolist()  # type: ignore[arg-type]
    a, b = len(order) // 5, 4 * len(order) // 5
    return Subset(full, order[:a]), Subset(full, order[a:b]), Subset(full, order[b:]), classes


def classifier(classes: int) -> nn.Module:
    """The user's network: here torchvision's ResNet-18 (any supported 2D classifier works)."""
    return torchvision.models.resnet18(num_classes=classes)


def pretrain(model: nn.Module, labeled: Dataset, epochs: int, batch_size: int) -> None:
    """Stand-in for "your trained classifier": a few supervised epochs on the labeled share."""
    loader = torch.utils.data.DataLoader(labeled, batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, batch_size: int = 64) -> float:
    """Top-1 accuracy (the examples' labels exist only to report what fine-tuning did)."""
    model.eval()
    right = total = 0
    for x, y in torch.utils.data.DataLoader(data, batch_size=batch_size):
        right += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return right / max(total, 1)


def arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", help="image folder, one sub-folder per class (default: synthetic squares)")
    p.add_argument("--images", type=int, default=200, help="synthetic images (without --data)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3, help="consistency fine-tuning epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/example", help="where results go")
    return p


def report(
    model: nn.Module,
    held_out: Dataset,
    start_accuracy: float,
    start: dict[str, Tensor],
    selector: Any,
    out: str | None,
) -> dict[str, float]:
    """What fine-tuning did (held-out accuracy before and after, which evaluation the selector kept,
    how far the weights moved), written to ``out/result.json`` (None: not written) and printed."""
    result = {
        "start_accuracy": start_accuracy,
        "final_accuracy": accuracy(model.cpu(), held_out),
        "kept_evaluation": float(selector.best_index),
        "moved": moved(model, start),
        "evaluations": float(len(selector.history)),
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result), flush=True)
    return result


def moved(model: nn.Module, start: dict[str, Tensor]) -> float:
    """Largest absolute change of any parameter or buffer from ``start`` (0: the start was kept)."""
    now = model.state_dict()
    return max(float((now[k].float() - v.float()).abs().max()) for k, v in start.items() if v.numel())
