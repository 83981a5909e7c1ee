"""A tiny multi-label benchmark in VOC layout, generated from synthetic objects (no Fashion-MNIST)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atcon.data import ClutteredFashionConfig, generate_cluttered_fashion

CLASSES = ("ring", "bar", "cross")


def synthetic_objects(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 grey objects whose shape depends on the class: a ring, a bar, a cross."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    labels = rng.integers(0, 3, size=n)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        cy, cx = rng.integers(11, 17, size=2)
        r = np.hypot(yy - cy, xx - cx)
        if c == 0:
            mask = (r > 5) & (r < 9)
        elif c == 1:
            mask = (abs(yy - cy) < 3) & (abs(xx - cx) < 11)
        else:
            mask = (abs(yy - cy) < 2) | (abs(xx - cx) < 2)
        images[i][mask] = rng.integers(180, 256)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "cluttered"
    config = ClutteredFashionConfig(num_train=30, num_val=9, num_test=9, image_size=32, max_objects=2)
    generate_cluttered_fashion(
        out,
        config=config,
        seed=0,
        train_source=synthetic_objects(200, 1),
        test_source=synthetic_objects(60, 2),
        classes=CLASSES,
    )
    return out
