"""Source pretraining for the built-in benchmarks: stand-ins for ImageNet / Kinetics weights.

The paper fine-tunes networks pretrained on ImageNet (images) or Kinetics (clips). Machines
without internet cannot download those, so each built-in benchmark has a source task:

* ``cluttered-fashion``: supervised training on **single-object** images rendered from the
  Fashion-MNIST *training* split (``fashion-singles``, same renderer, one object per image).
  No test object of ``cluttered-fashion`` (Fashion-MNIST *test* split) is ever seen.
* ``fashion-events``: SimCLR on the *unlabeled* clips of the benchmark's training pool. It uses
  no label, so it is fair to every method compared afterwards, and it is the paper's own
  self-supervised baseline (Table 1).

The result is cached (``<data dir>/pretrained/``), so the cost is paid once; users with real
weights pass them with ``--weights`` instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from atcon.data import (
    ClutteredFashionConfig,
    benchmark_split,
    default_data_dir,
    generate_cluttered_fashion,
    load_benchmark,
)
from atcon.data._common import publish_build
from atcon.data.fashion import load_fashion_mnist
from atcon.train.config import TrainConfig
from atcon.train.run import RunLockedError, train

SINGLES = ClutteredFashionConfig(num_train=3000, num_val=300, num_test=1, image_size=128, max_objects=1)


def fashion_singles(root: Path | None = None, seed: int = 0, size: float = 1.0) -> Path:
    """Single-object images of Fashion-MNIST training objects in VOC layout (generated once)."""
    base = Path(root) if root is not None else default_data_dir()
    out = base / (f"fashion-singles-seed{seed}" + ("" if size == 1 else f"-size{size:g}"))
    if (out / "meta.json").is_file():
        return out
    train_src = load_fashion_mnist("train")
    # Objects only from the training split; the single test image it needs comes from there too.
    publish_build(
        out,
        lambda folder: generate_cluttered_fashion(
            folder,
            config=SINGLES.scaled(size),
            seed=seed + 1000,
            train_source=train_src,
            test_source=train_src,
        ),
        lambda: (out / "meta.json").is_file(),
    )
    return out


def _key(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _singles_per_class(folder: Path, size: float) -> int:
    """Training images per class of the source task: about 5/6 of the average class's share,
    capped by the rarest class (small generated sets are unbalanced)."""
    from collections import Counter

    from atcon.data import VOCDataset

    counts = Counter(o.name for a in VOCDataset(folder, "train").annotations for o in a.objects)
    return max(1, min(int(SINGLES.num_train * size) // 12, min(counts.values())))


def source_checkpoint(
    benchmark: str,
    model: str,
    *,
    image_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    size: float = 1.0,
    device: str = "auto",
    workers: int = 0,
    cache: Path | None = None,
    progress: bool = True,
) -> Path:
    """Return (training it on first use) the source-pretrained checkpoint for a benchmark.

    Args:
        benchmark: ``"cluttered-fashion"`` or ``"fashion-events"``.
        model: architecture (``small``, ``resnet50``, ``small3d``, ``r3d_18`` ...).
        image_size: input side (default: the model's).
        epochs: source epochs (default 4 for images, 30 for SimCLR on clips).
        seed: seed of data generation and training.
        size: size multiplier of the source data.
        device, workers: as in :class:`TrainConfig`.
        cache: folder of cached checkpoints (default ``<data dir>/pretrained``).

    Returns:
        Path of a checkpoint whose ``model`` entry loads with ``build_model(..., weights=path,
        new_head=True)``.
    """
    video = benchmark == "fashion-events"
    if benchmark not in ("cluttered-fashion", "fashion-events"):
        raise ValueError(f"no source task for {benchmark!r}; pass pretrained weights with --weights instead")
    epochs = epochs if epochs is not None else (30 if video else 4)
    # v2 of the video source: SimCLR views from clip_simclr_transform (v1 used the supervised jitter).
    key = _key(
        {
            "b": benchmark,
            "m": model,
            "s": image_size,
            "e": epochs,
            "seed": seed,
            "size": size,
            "v": 2 if video else 1,
        }
    )
    cache = Path(cache) if cache is not None else default_data_dir() / "pretrained"
    final = cache / f"{benchmark}-{model}-{key}.pt"
    if final.is_file():
        return final
    run_dir = cache / "runs" / final.stem
    if video:
        # SimCLR on every clip of the training pool, without labels.
        split = benchmark_split(benchmark, 1, seed, size=size, data_seed=seed)
        pool = load_benchmark(benchmark, "train", seed=seed, size=size, probe=False)
        split_file = dataclasses.replace(split, train=list(pool.ids)).save(cache / f"{final.stem}-split.json")
        cfg = TrainConfig(
            data=benchmark,
            split=str(split_file),
            data_seed=seed,
            data_size=size,
            model=model,
            image_size=image_size,
            strategy="simclr",
            epochs=epochs,
            batch_size=16,
            lr=1e-3,
            seed=seed,
            device=device,
            workers=workers,
        )
    else:
        singles = fashion_singles(seed=seed, size=size)
        cfg = TrainConfig(
            data=str(singles),
            model=model,
            image_size=image_size,
            strategy="supervised",
            per_class=_singles_per_class(singles, size),
            epochs=epochs,
            batch_size=32,
            lr=1e-3,
            seed=seed,
            device=device,
            workers=workers,
        )
    while True:
        try:
            summary = train(
                cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file(), progress=progress
            )
            break
        except RunLockedError:
            # Another process trains this very source network: wait for its checkpoint (or for its
            # lock to go stale, when this process takes over and resumes its run).
            if final.is_file():
                return final
            time.sleep(10)
            if final.is_file():
                return final
    best = Path(summary["best_checkpoint"]) if not video else run_dir / "checkpoints" / "last.pt"
    cache.mkdir(parents=True, exist_ok=True)
    tmp_copy = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.copyfile(best, tmp_copy)
    tmp_copy.replace(final)
    return final
