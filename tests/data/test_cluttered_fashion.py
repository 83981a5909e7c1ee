"""``cluttered-fashion``: deterministic generation, VOC layout read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from atcon.data import FASHION_MNIST_CLASSES, ClutteredFashionConfig, VOCDataset, generate_cluttered_fashion
from tests.data.conftest import digest

Source = Callable[..., tuple[np.ndarray, np.ndarray]]
TINY_IMAGES = ClutteredFashionConfig(num_train=8, num_val=3, num_test=4, image_size=64)


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
