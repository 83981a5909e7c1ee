"""Two tiny trained checkpoints on a tiny generated VOC-layout benchmark (built once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atcon.data import ClutteredFashionConfig, generate_cluttered_fashion


def shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 grey objects, class 0 a filled disc, class 1 a horizontal bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    labels = rng.integers(0, 2, size=n)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, c in enumerate(labels):
        cy, cx = rng.integers(11, 17, size=2)
        mask = np.hypot(yy - cy, xx - cx) < 8 if c == 0 else (abs(yy - cy) < 3) & (abs(xx - cx) < 12)
        images[i][mask] = 220
    return images, labels.astype(np.int64)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"data": folder, "a": best.pt, "b": best.pt}``: two one-epoch runs on the same split."""
    from atcon.train import TrainConfig, train

    root = tmp_path_factory.mktemp("cmd")
    data = root / "shapes"
    config = ClutteredFashionConfig(num_train=12, num_val=4, num_test=6, image_size=32, max_objects=2)
    generate_cluttered_fashion(
        data,
        config=config,
        seed=0,
        train_source=shapes(40, 1),
        test_source=shapes(20, 2),
        classes=("disc", "bar"),
    )
    out: dict[str, Path] = {"data": data}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = TrainConfig(
            data=str(data), model="small", image_size=32, per_class=1, epochs=1, batch_size=2, seed=seed
        )
        train(cfg, root / name, progress=False)
        out[name] = root / name / "checkpoints" / "best.pt"
    return out
