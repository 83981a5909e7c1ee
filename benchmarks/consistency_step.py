"""Time one optimizer step of supervised training vs attention-consistency fine-tuning.

Same model, batch and device, side by side in one process. Prints images/s of each, their ratio
and (on CUDA) peak memory of each.

    python benchmarks/consistency_step.py --model resnet18 --batch 8 --size 128        # CPU
    python benchmarks/consistency_step.py --model resnet50 --batch 32 --size 256 --device cuda --amp bf16
    python benchmarks/consistency_step.py --model timm:efficientnet_b0 --batch 4 --size 96

``--model`` takes any atcon model name (:func:`atcon.models.model_spec`): the curated ones, any
torchvision classification or video model, or ``timm:NAME``; weights are random.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from atcon import AttentionConsistencyLoss
from atcon.models import build_model, model_spec


def build(name: str, classes: int) -> nn.Module:
    """The atcon model ``name`` (curated, torchvision or ``timm:NAME``) with random weights."""
    return build_model(name, classes)


def timed_pair(
    a: Callable[[], None], b: Callable[[], None], device: torch.device, warmup: int, repeats: int
) -> tuple[float, float, float, float]:
    """Median seconds per step of ``a`` and ``b``, interleaved so background load hits both alike,
    and the peak memory of each in GiB (CUDA only; NaN elsewhere)."""

    def once(step: Callable[[], None]) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        return time.perf_counter() - start, peak

    for _ in range(warmup):
        a()
        b()
    ta, tb, ma, mb = [], [], 0.0, 0.0
    for _ in range(repeats):
        t, m = once(a)
        ta.append(t)
        ma = max(ma, m) if m == m else m
        t, m = once(b)
        tb.append(t)
        mb = max(mb, m) if m == m else m
    return statistics.median(ta), statistics.median(tb), ma, mb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=16, help="clip length for video models")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--detach-mask", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.model, args.classes).to(device)
    shape = (
        (args.batch, 3, args.frames, args.size, args.size)
        if model_spec(args.model).video
        else (args.batch, 3, args.size, args.size)
    )
    x = torch.randn(shape, device=device)
    y = (torch.rand(args.batch, args.classes, device=device) < 0.2).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    loss_fn = AttentionConsistencyLoss(model, detach_mask=args.detach_mask)
    bce = nn.BCEWithLogitsLoss()

    def supervised() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = bce(model(x), y)
        loss.backward()
        opt.step()

    def consistency() -> None:
        model.eval()  # normalisation frozen, as in consistency fine-tuning
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = loss_fn(x)
        loss.backward()
        opt.step()

    t_sup, t_con, m_sup, m_con = timed_pair(supervised, consistency, device, args.warmup, args.repeats)
    print(
        f"device={device} model={args.model} batch={args.batch} size={args.size} amp={args.amp} "
        f"detach_mask={args.detach_mask} threads={torch.get_num_threads()}"
    )
    print(
        f"supervised : {args.batch / t_sup:8.1f} images/s  {t_sup * 1e3:8.1f} ms/step  peak {m_sup:.2f} GiB"
    )
    print(
        f"consistency: {args.batch / t_con:8.1f} images/s  {t_con * 1e3:8.1f} ms/step  peak {m_con:.2f} GiB"
    )
    print(
        f"ratio (consistency / supervised step time): {t_con / t_sup:.2f}x   memory ratio: {m_con / m_sup:.2f}x"
    )


if __name__ == "__main__":
    main()
