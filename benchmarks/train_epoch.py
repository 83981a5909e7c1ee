"""Images/s of one training epoch per strategy, through the real data pipeline.

Builds the run exactly as ``atcon train`` does (benchmark data, JPEG decoding, augmentation,
DataLoader workers) and times ``train_one_epoch`` alone (no validation), side by side in one
process.

    python benchmarks/train_epoch.py --model small --per-class 16                       # CPU
    python benchmarks/train_epoch.py --model resnet50 --image-size 256 --batch-size 32 --amp bf16 --workers 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from atcon.train import distributed
from atcon.train.config import TrainConfig
from atcon.train.data import build_task_data
from atcon.train.run import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="cluttered-fashion")
    p.add_argument("--model", default="small")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--strategies", default="supervised,finetune")
    args = p.parse_args()

    info = distributed.setup(args.device)
    base = TrainConfig(
        data=args.data,
        model=args.model,
        image_size=args.image_size,
        per_class=args.per_class,
        batch_size=args.batch_size,
        workers=args.workers,
        amp=args.amp,
        device=args.device,
        epochs=1,
    )
    data = build_task_data(base)
    print(
        f"device={info.device} model={args.model} size={data.image_size} batch={args.batch_size} "
        f"workers={args.workers} amp={args.amp} train images={len(data.train)}"
    )  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            trainer = Trainer(base.replace(strategy=strategy), Path(tmp), info, data)
            trainer.train_one_epoch(0, None)  # warm-up: decoder caches, kernels, allocator
            trainer.state.batch = 0
            if info.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            total = trainer.train_one_epoch(1, None)
            float(total)  # wait for the device
            seconds = time.perf_counter() - start
            images = trainer.steps_per_epoch * args.batch_size
            print(
                f"{strategy:11s}: {images / seconds:8.1f} images/s  ({trainer.steps_per_epoch} steps, {seconds:.1f} s)"
            )


if __name__ == "__main__":
    main()
