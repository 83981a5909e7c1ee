"""Guarded attention-consistency fine-tuning in a plain PyTorch loop (also under ``torchrun``).

    python examples/plain_pytorch.py                       # synthetic data, CPU, seconds
    python examples/plain_pytorch.py --data my_images/     # your image folder
    torchrun --nproc-per-node 2 examples/plain_pytorch.py  # DistributedDataParallel

The network is trained briefly on a labeled fifth (a stand-in for your trained classifier), then
fine-tuned on the unlabeled share with :class:`atcon.GuardedConsistencyLoss`, keeping and
stopping by :class:`atcon.LabelFreeSelector` on a held-out unlabeled slice. Accuracy on the
held-out slice before and after is printed only because the synthetic data has labels.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atcon
from common import accuracy, arguments, classifier, datasets, pretrain, report


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    distributed = "RANK" in os.environ  # started by torchrun
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(args.seed)  # the same starting network on every rank
    labeled, unlabeled, held_out, classes = datasets(args)
    net = classifier(classes)
    pretrain(net, labeled, args.pretrain_epochs, args.batch_size)
    start_accuracy = accuracy(net, held_out)
    start = copy.deepcopy(net.state_dict())

    model = torch.nn.parallel.DistributedDataParallel(net) if distributed else net
    sampler = DistributedSampler(unlabeled, seed=args.seed) if distributed else None
    loader = DataLoader(unlabeled, args.batch_size, shuffle=sampler is None, sampler=sampler)
    held_out_loader = DataLoader(held_out, batch_size=64)

    loss_fn = atcon.GuardedConsistencyLoss(model, anchor_weight=1.0)
    selector = atcon.LabelFreeSelector(patience=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    selector.update(loss_fn.signals(held_out_loader))  # the starting network is a candidate
    best = copy.deepcopy(net.state_dict())
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, _ in loader:  # labels are never read
            out = loss_fn(x)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        decision = selector.update(loss_fn.signals(held_out_loader))
        if rank == 0:
            h = selector.history[-1]
            print(
                f"epoch {epoch}: consistency {h['lf_consistency']:.4f}, agreement {h['lf_agreement']:.3f}, "
                f"keep {decision.best}, stop {decision.stop}",
                flush=True,
            )
        if decision.best:
            best = copy.deepcopy(net.state_dict())
        if decision.stop:
            break
    net.load_state_dict(best)
    result = report(net, held_out, start_accuracy, start, selector, args.out if rank == 0 else None)
    if rank == 0:
        torch.save(net.state_dict(), Path(args.out) / "finetuned.pt")
    if distributed:
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
