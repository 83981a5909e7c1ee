"""DistributedDataParallel: 2 processes at batch 4 give the gradients of 1 process at batch 8.

Run with the gloo backend on CPU, for the supervised, consistency and SimCLR losses and the two
forms of box supervision. BatchNorm is
in eval mode in the supervised case too: in training mode its batch statistics are per process
(standard DDP behaviour), which is a different computation, not a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from atcon.consistency import ConsistencyConfig
from atcon.guidance import box_guided_forward
from atcon.train.engine import consistency_loss, output_loss, supervised_loss, touch_parameters
from atcon.train.simclr import NTXentLoss, SimCLRNet
from tests.conftest import TinyCNN, randomize_bn, run_ranks

KINDS = ("supervised", "consistency", "simclr", "box_gradcam", "box_input_gradient")


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    net = randomize_bn(TinyCNN(classes=4)).eval()
    net.fc = net.head[1]  # SimCLR needs an `fc` head
    net.head[1] = nn.Identity()

    class WithFc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.pool, self.flat, self.fc = net.features, net.pool, nn.Flatten(), net.fc

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.flat(self.pool(self.features(x))))

    model = WithFc().eval()
    return SimCLRNet(model, hidden=8, out_features=5) if kind == "simclr" else model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 8, 8, generator=g)
    x2 = torch.randn(8, 3, 8, 8, generator=g)
    y = (torch.rand(8, 4, generator=g) < 0.4).float()
    return x, x2, y


def box_targets(part: slice) -> dict[str, list[torch.Tensor]]:
    """Boxes of classes 0-3 on the 8 x 8 inputs, a region to avoid on every third item."""
    g = torch.Generator().manual_seed(2)
    corners = torch.randint(0, 4, (8, 2), generator=g).float()
    boxes = [torch.cat([c, c + 4]).reshape(1, 4) for c in corners]
    labels = [torch.tensor([k % 4]) for k in range(8)]
    avoid = [torch.tensor([[4.0, 4, 8, 8]]) if k % 3 == 0 else torch.zeros(0, 4) for k in range(8)]
    return {"boxes": boxes[part], "box_labels": labels[part], "avoid": avoid[part]}


def loss_of(
    kind: str, model: nn.Module, x: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, part: slice = slice(0, 8)
) -> torch.Tensor:
    if kind.startswith("box_"):
        form = kind.removeprefix("box_")
        guided = box_guided_forward(
            model, x, y, box_targets(part), "multilabel", form, target_layer="features"
        )  # type: ignore[arg-type]
        return output_loss(guided.output, y, "multilabel") + guided.penalty
    if kind == "supervised":
        return supervised_loss(model, x, y, "multilabel")
    if kind == "consistency":
        return consistency_loss(model, x, ConsistencyConfig(), "features")
    return NTXentLoss(0.5)(model(x), model(x2))


def worker(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    x, x2, y = batch()
    part = slice(4 * rank, 4 * rank + 4)
    grads = {}
    for kind in KINDS:
        net = make_model(kind)
        ddp = nn.parallel.DistributedDataParallel(net)
        loss = touch_parameters(loss_of(kind, ddp, x[part], x2[part], y[part], part), net)
        loss.backward()  # one ordinary backward; DDP averages over the 2 processes
        grads[kind] = {n: p.grad.clone() for n, p in net.named_parameters()}
    return grads


@pytest.mark.timeout(240)
def test_two_processes_equal_one(tmp_path: Path) -> None:
    got: list[Any] = run_ranks(worker, tmp_path)
    x, x2, y = batch()
    for kind in KINDS:
        net = make_model(kind)
        loss_of(kind, net, x, x2, y).backward()
        for name, p in net.named_parameters():
            ref = p.grad if p.grad is not None else torch.zeros_like(p)
            for rank in range(2):
                assert torch.allclose(got[rank][kind][name], ref, atol=1e-6, rtol=1e-4), (kind, name, rank)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
