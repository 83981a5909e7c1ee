from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from atcon.data import (
    EVENTS,
    FASHION_MNIST_CLASSES,
    ClutteredFashionConfig,
    FashionEventsConfig,
    VideoClipDataset,
    VOCDataset,
    benchmark_dir,
    benchmark_split,
    build_benchmark,
    generate_cluttered_fashion,
    generate_fashion_events,
    load_benchmark,
)
from atcon.data import benchmarks as bench

Source = Callable[..., tuple[np.ndarray, np.ndarray]]
TINY_IMAGES = ClutteredFashionConfig(num_train=8, num_val=3, num_test=4, image_size=64)
TINY_CLIPS = FashionEventsConfig(num_subjects=3, frame_size=32)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_cluttered_fashion_deterministic_and_seed_dependent(tmp_path: Path, fashion_source: Source) -> None:
    train, test = fashion_source(classes=range(8)), fashion_source(classes=(8, 9))
    a = generate_cluttered_fashion(
        tmp_path / "a", config=TINY_IMAGES, seed=1, train_source=train, test_source=test
    )
    b = generate_cluttered_fashion(
        tmp_path / "b", config=TINY_IMAGES, seed=1, train_source=train, test_source=test
    )
    c = generate_cluttered_fashion(
        tmp_path / "c", config=TINY_IMAGES, seed=2, train_source=train, test_source=test
    )
    assert digest(a) == digest(b)
    assert digest(a)["JPEGImages/train_000000.jpg"] != digest(c)["JPEGImages/train_000000.jpg"]
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cluttered_fashion(a, config=TINY_IMAGES, train_source=train, test_source=test)


def test_cluttered_fashion_round_trip_through_voc_reader(tmp_path: Path, fashion_source: Source) -> None:
    train, test = fashion_source(classes=range(8)), fashion_source(classes=(8, 9))
    root = generate_cluttered_fashion(
        tmp_path / "cf", config=TINY_IMAGES, seed=0, train_source=train, test_source=test
    )
    splits = {s: VOCDataset(root, s) for s in ("train", "val", "trainval", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 8, "val": 3, "trainval": 11, "test": 4}
    assert splits["train"].classes == FASHION_MNIST_CLASSES  # classes.txt keeps label order
    # Test objects come from the test source only (classes 8, 9); train/val from the train source.
    assert splits["test"].label_matrix()[:, :8].sum() == 0
    assert splits["trainval"].label_matrix()[:, 8:].sum() == 0
    for ds in splits.values():
        per_image = ds.label_matrix().sum(1)
        assert ((per_image >= 1) & (per_image <= 3)).all()
    image, target = splits["train"][0]
    assert image.shape == (3, 64, 64)
    boxes = target["boxes"].as_subclass(torch.Tensor)
    assert len(boxes) == int(target["labels"].sum())  # one object per class present
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    # Objects are drawn with saturated colours over a mid-grey-ish background: the box interior is
    # more saturated than the image on average.
    sat = image.max(0).values - image.min(0).values
    x1, y1, x2, y2 = boxes[0].round().int().tolist()
    assert sat[y1:y2, x1:x2].mean() > sat.mean()


def test_fashion_events_deterministic_round_trip(tmp_path: Path, fashion_source: Source) -> None:
    source = fashion_source()
    a = generate_fashion_events(tmp_path / "a", config=TINY_CLIPS, seed=0, source=source)
    b = generate_fashion_events(tmp_path / "b", config=TINY_CLIPS, seed=0, source=source)
    assert digest(a) == digest(b)
    ds = VideoClipDataset(a / "manifest.csv", frame_size=(32, 32))
    assert len(ds) == 15 and ds.classes == EVENTS
    assert sorted(set(ds.subjects)) == ["s0000", "s0001", "s0002"]
    assert sorted(ds.labels) == sorted(list(range(5)) * 3)
    by_event: dict[str, torch.Tensor] = {}
    for i in range(len(ds)):
        clip, target = ds[i]
        assert clip.shape == (3, 16, 32, 32)
        assert torch.isfinite(target["boxes"]).all()
        if target["subject"] == "s0000":
            by_event[EVENTS[int(target["label"])]] = target["boxes"]
    centres = {e: (b[:, :2] + b[:, 2:]) / 2 for e, b in by_event.items()}
    widths = {e: b[:, 2] - b[:, 0] for e, b in by_event.items()}
    assert centres["still"].std(0).max() < 1.0
    assert centres["rocking"][:, 0].std() > 2.0  # sways in x
    assert centres["patting"][:, 1].std() > 1.0  # moves in y
    assert widths["approaching"][-1] > 1.5 * widths["approaching"][0]  # grows
    # Splits: three subject-disjoint sets covering every clip.
    sets = [(a / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")]
    assert sorted(i for s in sets for i in s) == sorted(ds.ids)
    owners = [{ds.subjects[ds.ids.index(i)] for i in s} for s in sets]
    assert all(len(o) == 1 for o in owners) and len(set.union(*owners)) == 3


def test_decoded_frames_match_rendered_frames(tmp_path: Path, fashion_source: Source) -> None:
    images, _ = fashion_source()
    rng = np.random.default_rng(0)
    room = bench._background(rng, 32, 32, contrast=0.4, grain=4.0)
    frames, _ = bench.render_event_clip(rng, images[0], np.array([255.0, 0, 0]), room, "spinning", images)
    bench.write_video(tmp_path / "x.mp4", frames, fps=4)
    from atcon.data import decode_clip

    decoded, _ = decode_clip(tmp_path / "x.mp4", size=None)
    diff = (decoded.permute(0, 2, 3, 1).int() - torch.from_numpy(frames).int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 4  # lossless up to YUV rounding


@pytest.fixture
def tiny_fashion_everywhere(monkeypatch: pytest.MonkeyPatch, fashion_source: Source) -> list[str]:
    calls: list[str] = []

    def fake(
        split: str = "train", root: object = None, download: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        calls.append(split)
        if split == "test":
            return fashion_source(classes=(8, 9))
        images, labels = fashion_source(n_per_class=6)
        order = np.random.default_rng(0).permutation(len(labels))  # like the real file: classes mixed
        return images[order], labels[order]

    monkeypatch.setattr(bench, "load_fashion_mnist", fake)
    return calls


def test_build_uses_cache_dir_and_reuses_complete_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fashion_everywhere: list[str]
) -> None:
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path / "cache"))
    assert (
        benchmark_dir("cluttered-fashion", seed=3, size=0.002)
        == tmp_path / "cache" / "cluttered-fashion-seed3-size0.002"
    )
    path = build_benchmark("cluttered-fashion", seed=3, size=0.002)
    assert path == tmp_path / "cache" / "cluttered-fashion-seed3-size0.002"
    assert len((path / "ImageSets/Main/train.txt").read_text().split()) == 6  # 3000 * 0.002
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temporary left over
    calls = len(tiny_fashion_everywhere)
    assert build_benchmark("cluttered-fashion", seed=3, size=0.002) == path
    assert len(tiny_fashion_everywhere) == calls  # reused, not regenerated
    with pytest.raises(FileExistsError, match="different build"):
        build_benchmark("cluttered-fashion", out=path, seed=4, size=0.002)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        build_benchmark("cluttered-fashion", out=tmp_path / "mine", size=0.002)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="unknown benchmark"):
        build_benchmark("imagenet")


def test_load_benchmark_and_split(tmp_path: Path, tiny_fashion_everywhere: list[str]) -> None:
    root = tmp_path / "cf"
    ds = load_benchmark("cluttered-fashion", "val", root=root, size=0.01)
    assert isinstance(ds, VOCDataset) and len(ds) == 5
    split = benchmark_split("cluttered-fashion", per_class=1, root=root, size=0.01)
    assert split.val == ds.ids and len(split.test) == 15
    train_labels = VOCDataset(root, ids=split.train).label_matrix()
    assert (train_labels.sum(0) >= 1).all()

    events_root = tmp_path / "ev"
    clips = load_benchmark("fashion-events", "test", root=events_root, size=0.025, frame_size=(16, 16))
    assert isinstance(clips, VideoClipDataset) and len(clips) == 5
    split = benchmark_split("fashion-events", per_class=1, root=events_root, size=0.025)
    assert len(split.train) == 5 and split.test == clips.ids
