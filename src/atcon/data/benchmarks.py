"""Built-in offline benchmarks by name: where they are cached, building, loading and few-shot splits.

Two benchmarks are generated from Fashion-MNIST, deterministically for a seed:
``cluttered-fashion`` (multi-label images with boxes, :mod:`atcon.data.cluttered_fashion`) and
``fashion-events`` (event clips with subjects and per-frame boxes,
:mod:`atcon.data.fashion_events`). :func:`build_benchmark` generates one into the cache folder
(or reuses a complete build), :func:`load_benchmark` serves a split as a dataset and
:func:`benchmark_split` draws the paper's few-shot split.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atcon.data._common import GENERATOR_VERSION, default_data_dir, not_found
from atcon.data.cluttered_fashion import ClutteredFashionConfig, generate_cluttered_fashion
from atcon.data.fashion import load_fashion_mnist
from atcon.data.fashion_events import FashionEventsConfig, generate_fashion_events


@dataclass(frozen=True)
class _Benchmark:
    generate: Callable[..., Path]
    config: Any


BENCHMARKS: dict[str, _Benchmark] = {
    "cluttered-fashion": _Benchmark(generate_cluttered_fashion, ClutteredFashionConfig()),
    "fashion-events": _Benchmark(generate_fashion_events, FashionEventsConfig()),
}
"""Built-in benchmarks by name."""


def _spec(name: str) -> _Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_dir(name: str, root: str | Path | None = None, seed: int = 0, size: float = 1.0) -> Path:
    """Cache folder of a benchmark: ``<root or data dir>/<name>-seed<seed>[-size<size>]``."""
    _spec(name)
    base = Path(root).expanduser() if root is not None else default_data_dir()
    suffix = "" if size == 1 else f"-size{size:g}"
    return base / f"{name}-seed{seed}{suffix}"


def build_benchmark(
    name: str,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    size: float = 1.0,
    source_root: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate a benchmark unless a complete copy is already there.

    Generation goes to a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves a folder that looks complete.

    Args:
        name: ``"cluttered-fashion"`` or ``"fashion-events"``.
        out: Exact output folder; default :func:`benchmark_dir`.
        seed: Random seed.
        size: Multiplies the default counts (0.1 for a quick look, 10 for a bigger benchmark).
        source_root: Folder of the Fashion-MNIST IDX files (default: see :mod:`atcon.data.fashion`).
        force: Regenerate even if a complete copy exists (only a folder this function made is replaced).
        progress: Called with ``(done, total)``.

    Returns:
        The benchmark folder.
    """
    spec = _spec(name)
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    out = Path(out).expanduser() if out is not None else benchmark_dir(name, None, seed, size)
    config = spec.config.scaled(size)
    meta_path = out / "meta.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        expected = {"name": name, "seed": seed, "generator_version": GENERATOR_VERSION, **vars(config)}
        if all(meta.get(k) == v for k, v in expected.items()):
            return out
        raise FileExistsError(
            f"{out} holds a different build ({meta_path}); pass force=True or another folder"
        )
    if out.exists() and any(out.iterdir()) and not (force and meta_path.is_file()):
        raise FileExistsError(f"output folder is not empty: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        kwargs: dict[str, Any] = {"config": config, "seed": seed, "progress": progress}
        if name == "cluttered-fashion":
            kwargs["train_source"] = load_fashion_mnist("train", source_root)
            kwargs["test_source"] = load_fashion_mnist("test", source_root)
        else:
            kwargs["source"] = load_fashion_mnist("train", source_root)
        spec.generate(tmp / "data", **kwargs)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp / "data", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_benchmark(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    size: float = 1.0,
    ids: Sequence[str] | None = None,
    **dataset_kwargs: Any,
) -> Any:
    """Return a split of a built-in benchmark as a dataset, generating it on first use.

    Args:
        name: ``"cluttered-fashion"`` or ``"fashion-events"``.
        split: ``train``, ``val``, ``test`` (and ``trainval`` for images).
        root: Exact benchmark folder; default the cache folder (:func:`benchmark_dir`).
        seed: Generation seed.
        size: Generation size multiplier.
        ids: Serve these ids instead of the split (e.g. ``Split.train`` from :func:`benchmark_split`).
        **dataset_kwargs: Passed to :class:`~atcon.data.voc.VOCDataset` (``transform``, ...) or
            :class:`~atcon.data.video.VideoClipDataset` (``transform``, ``cache``, ``size``, ...).

    Returns:
        A ``VOCDataset`` for ``cluttered-fashion``, a ``VideoClipDataset`` for ``fashion-events``.
    """
    folder = build_benchmark(name, root, seed=seed, size=size)
    if name == "cluttered-fashion":
        from atcon.data.voc import VOCDataset

        return VOCDataset(folder, split, ids=ids, **dataset_kwargs)
    from atcon.data.video import VideoClipDataset

    if ids is None:
        ids = _read_list(folder / "splits" / f"{split}.txt")
    return VideoClipDataset(folder / "manifest.csv", ids=ids, **dataset_kwargs)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise not_found("split file", path)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def benchmark_split(
    name: str,
    per_class: int,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    size: float = 1.0,
    data_seed: int = 0,
) -> Any:
    """The paper's few-shot split of a built-in benchmark (generating it if needed).

    ``cluttered-fashion``: ``per_class`` images per class from ``train``, ``val`` and ``test`` as
    generated. ``fashion-events``: ``per_class`` clips per class from the ``train`` set, ``val`` and
    ``test`` as generated (all three subject-disjoint).

    ``seed`` draws the few-shot training subset; ``data_seed`` names the generated benchmark
    (the same test set for every ``seed``).

    Returns:
        A :class:`~atcon.data.split.Split`; save it with ``Split.save``.
    """
    from atcon.data.fewshot import sample_per_class, voc_fewshot_split
    from atcon.data.split import Split

    folder = build_benchmark(name, root, seed=data_seed, size=size)
    if name == "cluttered-fashion":
        return voc_fewshot_split(folder, per_class, seed, val_split="val", test_split="test")
    from atcon.data.video import VideoClipDataset

    train = VideoClipDataset(
        folder / "manifest.csv", ids=_read_list(folder / "splits" / "train.txt"), probe=False
    )
    picked = sample_per_class(train.labels, per_class, seed, classes=train.classes)
    return Split(
        train=[train.ids[i] for i in picked],
        val=_read_list(folder / "splits" / "val.txt"),
        test=_read_list(folder / "splits" / "test.txt"),
        classes=list(train.classes),
        per_class=per_class,
        seed=seed,
        protocol="subject-disjoint",
        meta={"root": str(folder), "benchmark": name},
    )


def timed_build(name: str, **kwargs: Any) -> tuple[Path, float]:
    """:func:`build_benchmark` returning ``(folder, seconds)``; used by the CLI to report timing."""
    t0 = time.perf_counter()
    path = build_benchmark(name, **kwargs)
    return path, time.perf_counter() - t0
