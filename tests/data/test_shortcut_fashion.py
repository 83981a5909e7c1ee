"""``shortcut-fashion``: the cue's strength and placement, its groups and regions, the manifests."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atcon.data import FASHION_MNIST_CLASSES, ImageManifestDataset, benchmark_dir, build_benchmark
from atcon.data.shortcut_fashion import (
    ShortcutFashionConfig,
    cue_colour,
    draw_cue,
    generate_shortcut_fashion,
)
from tests.data.conftest import digest

Source = Callable[..., tuple[np.ndarray, np.ndarray]]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _generate(tmp_path: Path, source: Source, name: str = "sf", **settings: object) -> Path:
    config = ShortcutFashionConfig(
        num_train=200,
        num_val=40,
        num_test=100,
        num_test_aligned=20,
        num_val_free=30,
        image_size=64,
        cue_size=8,
    )
    config = ShortcutFashionConfig(**{**vars(config), **settings})  # type: ignore[arg-type]
    train, test = source(n_per_class=6), source(n_per_class=3, seed=1)
    return generate_shortcut_fashion(
        tmp_path / name, config=config, seed=3, train_source=train, test_source=test
    )


def test_cue_strength_groups_and_test_sets_follow_rho(tmp_path: Path, fashion_source: Source) -> None:
    root = _generate(tmp_path, fashion_source, rho=0.9)
    rows = _rows(root / "manifest.csv")
    by_set = Counter((r["path"].split("/")[1].split("_")[0], r["split"], r["group"]) for r in rows)
    aligned = {
        p: by_set[(p, s, "aligned")] for p, s in (("train", "train"), ("val", "val"), ("test", "test"))
    }
    # About rho of train/val have the label's cue; about 1/10 of the uniform test set does.
    assert 0.84 <= aligned["train"] / 200 <= 0.96 and aligned["val"] >= 30
    assert 2 <= aligned["test"] <= 22
    assert (
        by_set[("testaligned", "test", "aligned")] == 20
        and by_set[("testaligned", "test", "conflicting")] == 0
    )
    for r in rows:  # the group says whether the cue's class is the label
        (cue,) = json.loads(r["avoid"])
        assert (cue[4] == f"cue {r['labels']}") == (r["group"] == "aligned")
    reference = _rows(root / "reference-val.csv")
    assert len(reference) == 30 and {r["split"] for r in reference} == {"val"}
    assert sum(r["group"] == "aligned" for r in reference) <= 10  # uniform cues
    assert (root / "classes.txt").read_text().split() == list(FASHION_MNIST_CLASSES)
    full = _generate(tmp_path, fashion_source, name="strong", rho=1.0)
    assert {r["group"] for r in _rows(full / "manifest.csv") if r["split"] != "test"} == {"aligned"}


def test_cue_lies_outside_the_object_and_draws_its_class(tmp_path: Path, fashion_source: Source) -> None:
    root = _generate(tmp_path, fashion_source)
    ds, rows = ImageManifestDataset(root / "manifest.csv"), _rows(root / "manifest.csv")
    assert ds.classes == FASHION_MNIST_CLASSES and not ds.multi_label
    for k in range(0, len(ds), 17):
        x, target = ds[k]
        (obj,) = target["boxes"].as_subclass(torch.Tensor).tolist()
        (cue,) = target["avoid"].as_subclass(torch.Tensor).tolist()
        assert cue[2] - cue[0] == 8 and cue[3] - cue[1] == 8
        overlap_x = min(obj[2], cue[2]) - max(obj[0], cue[0])
        overlap_y = min(obj[3], cue[3]) - max(obj[1], cue[1])
        assert overlap_x <= 0 or overlap_y <= 0, (k, obj, cue)
        # The patch is its class's colour (JPEG moves it a little).
        cls = FASHION_MNIST_CLASSES.index(json.loads(rows[k]["avoid"])[0][4].removeprefix("cue "))
        x1, y1, x2, y2 = (int(v) for v in cue)
        inner = x[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean((1, 2)) * 255
        assert torch.allclose(inner, torch.from_numpy(cue_colour(cls)), atol=25), (k, inner)
        assert target["group"] in ("aligned", "conflicting")


def test_marker_glyphs_differ_between_classes_and_are_bright_on_dark() -> None:
    drawn = []
    for cls in range(10):
        canvas = np.full((16, 16, 3), 128.0, np.float32)
        draw_cue(canvas, "marker", cls, 0, 0, 16)
        values = set(np.unique(canvas).tolist())
        assert values == {20.0, 250.0}
        drawn.append(canvas[..., 0] > 127)
    assert len({d.tobytes() for d in drawn}) == 10


def test_deterministic_settings_named_and_checked(tmp_path: Path, fashion_source: Source) -> None:
    a = _generate(tmp_path, fashion_source, name="a", cue="marker")
    b = _generate(tmp_path, fashion_source, name="b", cue="marker")
    c = _generate(tmp_path, fashion_source, name="c", cue="patch")
    assert digest(a) == digest(b)
    assert digest(a)["images/train_000000.jpg"] != digest(c)["images/train_000000.jpg"]
    meta = json.loads((a / "meta.json").read_text())
    assert meta["cue"] == "marker" and meta["rho"] == 0.95 and meta["counts"]["testaligned"] == 20
    with Image.open(a / "images" / "val_000003.jpg") as im:
        assert im.size == (64, 64)
    with pytest.raises(ValueError, match="rho must be in"):
        ShortcutFashionConfig(rho=1.5)
    with pytest.raises(ValueError, match="cue must be one of patch, marker"):
        ShortcutFashionConfig(cue="text")  # type: ignore[arg-type]
    # Options other than sizes name the cache folder and are checked against a build there.
    assert benchmark_dir("shortcut-fashion", tmp_path, 0).name == "shortcut-fashion-seed0"
    named = benchmark_dir("shortcut-fashion", tmp_path, 0, 0.5, {"rho": 0.9, "cue": "marker"})
    assert named.name == "shortcut-fashion-seed0-size0.5-rho0.9-marker"
    assert benchmark_dir("shortcut-fashion", tmp_path, 0, 1, {"rho": 0.95}).name == "shortcut-fashion-seed0"
    with pytest.raises(ValueError, match="cluttered-fashion has no option rho"):
        benchmark_dir("cluttered-fashion", tmp_path, 0, 1, {"rho": 0.9})
    with pytest.raises(FileExistsError, match="holds a different build"):
        build_benchmark("shortcut-fashion", a, seed=3, size=1.0, options={"cue": "marker"})
