"""Built-in offline benchmarks by name: where they are cached, building, loading and few-shot splits.

Three benchmarks are generated from Fashion-MNIST, deterministically for a seed:
``cluttered-fashion`` (multi-label images with boxes, :mod:`atcon.data.cluttered_fashion`),
``fashion-events`` (event clips with subjects and per-frame boxes,
:mod:`atcon.data.fashion_events`) and ``shortcut-fashion`` (single-label images with a
class-correlated cue, its regions to avoid and aligned/conflicting test groups, a CSV manifest,
:mod:`atcon.data.shortcut_fashion`). :func:`build_benchmark` generates one into the cache folder
(or reuses a complete build), :func:`load_benchmark` serves a split as a dataset and
:func:`benchmark_split` draws the paper's few-shot split.

A benchmark's settings other than its sizes (``shortcut-fashion``'s ``rho`` and ``cue``) are
``options``: they name the cache folder (``shortcut-fashion-seed0-rho0.9-marker``) and are
checked against a build found there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from atcon.data._common import GENERATOR_VERSION, default_data_dir, not_found, publish_build
from atcon.data.cluttered_fashion import ClutteredFashionConfig, generate_cluttered_fashion
from atcon.data.fashion import load_fashion_mnist
from atcon.data.fashion_events import FashionEventsConfig, generate_fashion_events
from atcon.data.shortcut_fashion import ShortcutFashionConfig, generate_shortcut_fashion


@dataclass(frozen=True)
class _Benchmark:
    """How a benchmark is generated and read.

    Attributes:
        generate: the generator, ``generate(out, config=, seed=, progress=, <sources>)``.
        config: its default settings.
        layout: how it is written: a VOC layout, a clip manifest with split lists, or a CSV image
            manifest (``manifest.csv``, read like the user's own manifests).
        test_objects: the generator takes the Fashion-MNIST test split too (``test_source``).
        options: the settings that are not sizes (they name the folder).
    """

    generate: Callable[..., Path]
    config: Any
    layout: Literal["voc", "clips", "manifest"]
    test_objects: bool = True
    options: tuple[str, ...] = ()


BENCHMARKS: dict[str, _Benchmark] = {
    "cluttered-fashion": _Benchmark(generate_cluttered_fashion, ClutteredFashionConfig(), "voc"),
    "fashion-events": _Benchmark(generate_fashion_events, FashionEventsConfig(), "clips", False),
    "shortcut-fashion": _Benchmark(
        generate_shortcut_fashion, ShortcutFashionConfig(), "manifest", True, ("rho", "cue")
    ),
}
"""Built-in benchmarks by name."""


def benchmark_options(name: str) -> tuple[str, ...]:
    """The settings of benchmark ``name`` that ``options`` may change (``("rho", "cue")``)."""
    return _spec(name).options


def _config(name: str, size: float, options: dict[str, Any] | None) -> Any:
    spec = _spec(name)
    unknown = sorted(set(options or {}) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(f"{name} has no option {', '.join(unknown)} (options: {allowed})")
    return replace(spec.config.scaled(size), **(options or {}))


def _option_suffix(name: str, options: dict[str, Any] | None) -> str:
    spec = _spec(name)
    defaults = {f.name: getattr(spec.config, f.name) for f in fields(spec.config)}
    return "".join(
        f"-{k}{v:g}" if isinstance(v, float) else f"-{v}"
        for k, v in (options or {}).items()
        if v != defaults[k]
    )


def _spec(name: str) -> _Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_dir(
    name: str,
    root: str | Path | None = None,
    seed: int = 0,
    size: float = 1.0,
    options: dict[str, Any] | None = None,
) -> Path:
    """Cache folder of a benchmark: ``<root or data dir>/<name>-seed<seed>[-size<size>][-<options>]``
    (only options that differ from their defaults name it)."""
    _config(name, size, options)
    base = Path(root).expanduser() if root is not None else default_data_dir()
    suffix = ("" if size == 1 else f"-size{size:g}") + _option_suffix(name, options)
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
    options: dict[str, Any] | None = None,
) -> Path:
    """Generate a benchmark unless a complete copy is already there.

    Generation goes to a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves a folder that looks complete.

    Args:
        name: ``"cluttered-fashion"``, ``"fashion-events"`` or ``"shortcut-fashion"``.
        out: Exact output folder; default :func:`benchmark_dir`.
        seed: Random seed.
        size: Multiplies the default counts (0.1 for a quick look, 10 for a bigger benchmark).
        source_root: Folder of the Fashion-MNIST IDX files (default: see :mod:`atcon.data.fashion`).
        force: Regenerate even if a complete copy exists (only a folder this function made is replaced).
        progress: Called with ``(done, total)``.
        options: Settings other than sizes (:func:`benchmark_options`, e.g.
            ``{"rho": 0.9, "cue": "marker"}``).

    Returns:
        The benchmark folder.
    """
    spec = _spec(name)
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    out = Path(out).expanduser() if out is not None else benchmark_dir(name, None, seed, size, options)
    config = _config(name, size, options)
    meta_path = out / "meta.json"
    expected = {"name": name, "seed": seed, "generator_version": GENERATOR_VERSION, **vars(config)}

    def complete() -> bool:
        meta = json.loads(meta_path.read_text())
        return all(meta.get(k) == v for k, v in expected.items())

    if meta_path.is_file() and not force:
        if complete():
            return out
        raise FileExistsError(
            f"{out} holds a different build ({meta_path}); pass force=True or another folder"
        )
    if out.exists() and any(out.iterdir()) and not (force and meta_path.is_file()):
        raise FileExistsError(f"output folder is not empty: {out}")
    kwargs: dict[str, Any] = {"config": config, "seed": seed, "progress": progress}

    def generate(folder: Path) -> None:
        if spec.test_objects:
            kwargs["train_source"] = load_fashion_mnist("train", source_root)
            kwargs["test_source"] = load_fashion_mnist("test", source_root)
        else:
            kwargs["source"] = load_fashion_mnist("train", source_root)
        spec.generate(folder, **kwargs)

    publish_build(out, generate, lambda: meta_path.is_file() and complete(), replace=force)
    return out


def load_benchmark(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    size: float = 1.0,
    ids: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    **dataset_kwargs: Any,
) -> Any:
    """Return a split of a built-in benchmark as a dataset, generating it on first use.

    Args:
        name: ``"cluttered-fashion"``, ``"fashion-events"`` or ``"shortcut-fashion"``.
        split: ``train``, ``val``, ``test`` (and ``trainval`` for ``cluttered-fashion``).
        root: Exact benchmark folder; default the cache folder (:func:`benchmark_dir`).
        seed: Generation seed.
        size: Generation size multiplier.
        ids: Serve these ids instead of the split (e.g. ``Split.train`` from :func:`benchmark_split`).
        options: Settings other than sizes (:func:`build_benchmark`).
        **dataset_kwargs: Passed to :class:`~atcon.data.voc.VOCDataset` (``transform``, ...),
            :class:`~atcon.data.manifest.ImageManifestDataset` or
            :class:`~atcon.data.video.VideoClipDataset` (``transform``, ``cache``, ``size``, ...).

    Returns:
        A ``VOCDataset`` for ``cluttered-fashion``, an ``ImageManifestDataset`` for
        ``shortcut-fashion``, a ``VideoClipDataset`` for ``fashion-events``.
    """
    folder = build_benchmark(name, root, seed=seed, size=size, options=options)
    layout = _spec(name).layout
    if layout == "voc":
        from atcon.data.voc import VOCDataset

        return VOCDataset(folder, split, ids=ids, **dataset_kwargs)
    if layout == "manifest":
        from atcon.data.manifest import ImageManifestDataset

        if ids is None:
            every = ImageManifestDataset(folder / "manifest.csv")
            ids = [i for i, s in zip(every.ids, every.splits) if s == split]
        return ImageManifestDataset(folder / "manifest.csv", ids=ids, **dataset_kwargs)
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
    options: dict[str, Any] | None = None,
) -> Any:
    """The paper's few-shot split of a built-in benchmark (generating it if needed).

    ``cluttered-fashion`` and ``shortcut-fashion``: ``per_class`` images per class from ``train``,
    ``val`` and ``test`` as generated. ``fashion-events``: ``per_class`` clips per class from the
    ``train`` set, ``val`` and ``test`` as generated (all three subject-disjoint).

    ``seed`` draws the few-shot training subset; ``data_seed`` names the generated benchmark
    (the same test set for every ``seed``).

    Returns:
        A :class:`~atcon.data.split.Split`; save it with ``Split.save``.
    """
    from atcon.data.fewshot import sample_per_class, voc_fewshot_split
    from atcon.data.split import Split

    folder = build_benchmark(name, root, seed=data_seed, size=size, options=options)
    layout = _spec(name).layout
    if layout == "voc":
        return voc_fewshot_split(folder, per_class, seed, val_split="val", test_split="test")
    if layout == "manifest":
        from atcon.data.image_splits import image_fewshot_split
        from atcon.data.manifest import ImageManifestDataset

        images = ImageManifestDataset(folder / "manifest.csv")
        return image_fewshot_split(images, per_class, seed, meta={"benchmark": name, "task": images.task})
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
