"""Shared tiny models and inputs. No test downloads weights or data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atcon.data import ClutteredFashionConfig, generate_cluttered_fashion


class TinyCNN(nn.Module):
    """conv-bn-relu x2, global pool, linear head: small enough for gradcheck in float64."""

    def __init__(
        self, in_ch: int = 3, width: int = 4, classes: int = 3, dims: int = 2, head_relu: bool = False
    ):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.features = nn.Sequential(
            conv(in_ch, width, 3, padding=1),
            bn(width),
            nn.ReLU(inplace=True),
            conv(width, width, 3, padding=1, stride=2),
            bn(width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(width, classes)]
        if head_relu:
            head = [nn.Flatten(), nn.Linear(width, 6), nn.ReLU(), nn.Linear(6, classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN()).eval()


@pytest.fixture
def tiny3d() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN(dims=3)).eval()


class GuidedReLUOracle(torch.autograd.Function):
    """Independent reference for the guided rule: ReLU forward; backward passes only positive
    gradients where the forward input was positive."""

    @staticmethod
    def forward(ctx, inp):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(inp)
        return inp.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (inp,) = ctx.saved_tensors
        return grad.clamp(min=0) * (inp > 0)


# A tiny multi-label benchmark in VOC layout, generated from synthetic objects (no Fashion-MNIST).
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


def tiny_fashion(
    n_per_class: int = 4, classes: Sequence[int] = range(10), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-like source: 28x28 grey blobs whose shape depends on the class."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:28, :28]
    for c in classes:
        for _ in range(n_per_class):
            cy, cx = 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3)
            ry, rx = 6 + c % 5, 11 - c % 5
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img = np.where(blob, rng.integers(120, 256, size=(28, 28)), 0).astype(np.uint8)
            images.append(img)
            labels.append(c)
    return np.stack(images), np.array(labels, np.int64)


@pytest.fixture
def fashion_source() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return tiny_fashion


# Two tiny trained runs for the checkpoint, explain and command tests.


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


def _rank_main(rank: int, fn: Callable[[int], object], store: str, out: str, world: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[[int], object], folder: Path, world: int = 2) -> list[object]:
    """``fn(rank)`` in ``world`` processes joined in a gloo process group; each rank's return
    value (tensors and plain values, saved by ``torch.save``), in rank order. ``fn`` must be a
    module-level function (it is pickled into the processes)."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(fn, str(folder / "store"), str(folder), world), nprocs=world, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(world)]
