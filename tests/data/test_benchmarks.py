"""The benchmark registry: cache folders, building once, loading splits, few-shot splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from atcon.data import (
    VideoClipDataset,
    VOCDataset,
    benchmark_dir,
    benchmark_split,
    build_benchmark,
    load_benchmark,
)
from atcon.data import benchmarks as bench

Source = Callable[..., tuple[np.ndarray, np.ndarray]]


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


def test_a_build_finished_meanwhile_by_another_process_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fashion_everywhere: list[str]
) -> None:
    out = tmp_path / "sf"
    spec = bench.BENCHMARKS["shortcut-fashion"]
    real = spec.generate

    def racing(folder: Path, **kwargs: object) -> Path:
        real(out, **kwargs)  # the other process finishes first, into the final folder
        (out / "in-use.txt").write_text("read by the other process")
        return real(folder, **kwargs)

    monkeypatch.setitem(
        bench.BENCHMARKS,
        "shortcut-fashion",
        bench._Benchmark(racing, spec.config, spec.layout, True, spec.options),
    )
    assert build_benchmark("shortcut-fashion", out, size=0.005) == out
    assert (out / "in-use.txt").is_file()  # not replaced under the other process's feet
    assert [p.name for p in tmp_path.iterdir()] == ["sf"]  # and no temporary left over
