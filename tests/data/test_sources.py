"""Data sources as objects: each kind's split, training pool and datasets, on tiny generated data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from atcon.data import (
    FashionEventsConfig,
    ImageManifestDataset,
    Split,
    VideoClipDataset,
    VOCDataset,
    benchmark_split,
    generate_fashion_events,
    image_fewshot_split,
    voc_fewshot_split,
)
from atcon.data import benchmarks as bench
from atcon.data.images import AnnotatedImageDataset
from atcon.data.sources import (
    BenchmarkClips,
    BenchmarkImages,
    ManifestBenchmark,
    UserClips,
    UserImages,
    VOCFolder,
)
from tests.conftest import tiny_fashion
from tests.data.userdata import single_label_set, write_folders

Source = Callable[..., tuple[np.ndarray, np.ndarray]]


def same_split(a: Split, b: Split) -> bool:
    return (a.train, a.val, a.test, a.classes) == (b.train, b.val, b.test, b.classes)


@pytest.fixture
def benchmarks_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fashion_source: Source) -> Path:
    """Built-in benchmarks generated from tiny Fashion-MNIST stand-ins into a temporary cache."""

    def fake(
        split: str = "train", root: object = None, download: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        if split == "test":
            return fashion_source(classes=(8, 9))
        images, labels = fashion_source(n_per_class=6)
        order = np.random.default_rng(0).permutation(len(labels))
        return images[order], labels[order]

    monkeypatch.setattr(bench, "load_fashion_mnist", fake)
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_voc_folder_without_a_test_list(voc_root: Path) -> None:
    (voc_root / "classes.txt").write_text("cat\ndog\nperson\n")  # only the classes present
    source = VOCFolder(voc_root)
    assert source.kind == "voc" and not source.clips
    split = source.split(1, seed=0, val_size=1)
    assert same_split(split, voc_fewshot_split(voc_root, 1, 0, val_size=1))
    assert split.test == ["img5", "img6"] and len(split.val) == 1
    pool = source.pool_ids(split)
    # The pool is the train list less the validation draw (val.txt is the test set here).
    assert pool == [i for i in ["img1", "img2", "img3", "img4"] if i not in split.val]
    ds = source.dataset(split.train, None, classes=split.classes)
    assert isinstance(ds, VOCDataset) and ds.ids == list(split.train)
    assert ds.classes == tuple(split.classes)


def test_voc_folder_keeps_its_own_test_list(tiny_voc: Path) -> None:
    split = VOCFolder(tiny_voc).split(2, seed=1)
    assert split.test == (tiny_voc / "ImageSets/Main/test.txt").read_text().split()
    assert split.val == (tiny_voc / "ImageSets/Main/val.txt").read_text().split()
    assert set(VOCFolder(tiny_voc).pool_ids(split)) >= set(split.train)


def test_user_images_split_pool_and_dataset(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "f", single_label_set(), subjects=False)
    source = UserImages(root)
    assert source.kind == "images" and not source.clips
    split = source.split(1, seed=0)
    assert same_split(split, image_fewshot_split(root, 1, 0))
    pool = source.pool_ids(split)
    assert not set(pool) & (set(split.val) | set(split.test)) and set(split.train) <= set(pool)
    tf_calls: list[str] = []

    def tf(image: torch.Tensor, target: dict[str, object]) -> tuple[torch.Tensor, dict[str, object]]:
        tf_calls.append(str(target["image_id"]))
        return image.float() / 255, target

    ds = source.dataset(list(reversed(split.train)), tf, classes=split.classes)
    assert isinstance(ds, AnnotatedImageDataset) and ds.ids == list(reversed(split.train))
    assert ds.task == "multiclass" and ds[0][1]["image_id"] == tf_calls[0] == ds.ids[0]


def test_user_clips_split_pool_and_dataset(tmp_path: Path) -> None:
    config = FashionEventsConfig(num_subjects=6, frame_size=24, num_frames=16, fps=4)
    root = generate_fashion_events(tmp_path / "ev", config=config, seed=0, source=tiny_fashion(n_per_class=3))
    source = UserClips(root, frame_size=(16, 16))
    assert source.kind == "video" and source.clips
    split = source.split(1, seed=0)
    full = VideoClipDataset(root, probe=False)
    assert split.protocol == "subject-disjoint" and list(split.classes) == list(full.classes)
    assert source.pool_ids(split) == [i for i in full.ids if i not in set(split.val) | set(split.test)]
    ds = source.dataset(split.train[:1], None, classes=split.classes)
    assert isinstance(ds, VideoClipDataset) and ds.ids == list(split.train[:1])
    assert ds[0][0].shape[-2:] == (16, 16)


def test_benchmark_sources(benchmarks_here: Path) -> None:
    images = BenchmarkImages("cluttered-fashion", size=0.01)
    assert images.kind == "benchmark" and not images.clips
    split = images.split(1, seed=0)
    assert same_split(split, benchmark_split("cluttered-fashion", 1, 0, size=0.01))
    assert images.folder().parent == benchmarks_here
    train_list = (images.folder() / "ImageSets/Main/train.txt").read_text().split()
    assert images.pool_ids(split) == [i for i in train_list if i not in split.val + split.test]
    ds = images.dataset(split.val, None)
    assert isinstance(ds, VOCDataset) and ds.ids == split.val

    clips = BenchmarkClips("fashion-events", size=0.025, frame_size=(16, 16))
    assert clips.kind == "benchmark" and clips.clips
    split = clips.split(1, seed=0)
    assert len(split.train) == 5
    listed = (clips.folder() / "splits" / "train.txt").read_text().split()
    assert clips.pool_ids(split) == listed
    ds = clips.dataset(split.test[:1], None)
    assert isinstance(ds, VideoClipDataset) and ds[0][0].shape[-2:] == (16, 16)


def test_manifest_benchmark_reads_like_user_images(benchmarks_here: Path) -> None:
    source = ManifestBenchmark("shortcut-fashion", size=0.02)
    assert source.kind == "images" and not source.clips
    assert not any(benchmarks_here.glob("shortcut-fashion*"))  # generated when first read
    split = source.split(1, seed=0)
    manifest = Path(source.path)
    assert manifest.name == "manifest.csv" and manifest.parent.parent == benchmarks_here
    assert same_split(split, image_fewshot_split(ImageManifestDataset(manifest), 1, 0))
    ds = source.dataset(split.test, None, classes=split.classes)
    assert isinstance(ds, ImageManifestDataset) and ds.ids == list(split.test)
