from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from atcon.data import FASHION_MNIST_CLASSES, DataError, load_fashion_mnist, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently of the reader: magic 0x0000 08 ndim, big-endian sizes, data."""
    return (
        struct.pack(">HBB", 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def write_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(arr.astype(np.uint8))
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def test_reads_gzipped_and_raw_idx(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)
    write_split(tmp_path, "train", images, labels)
    write_split(tmp_path, "t10k", images[:2], labels[:2], gz=False)
    x, y = load_fashion_mnist("train", tmp_path)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28) and np.array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == [0, 9, 3, 3, 1]
    x, y = load_fashion_mnist("test", tmp_path)
    assert x.shape == (2, 28, 28) and y.tolist() == [0, 9]
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "ankle_boot"


def test_torchvision_raw_layout_found(tmp_path: Path) -> None:
    write_split(
        tmp_path / "FashionMNIST" / "raw", "t10k", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)
    )
    assert load_fashion_mnist("test", tmp_path)[0].shape == (1, 28, 28)


def test_bad_files_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"bad-idx: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(idx_bytes(np.zeros((4, 2), np.uint8))[:-3])
    with pytest.raises(DataError, match=r"short-idx: IDX data has 5 bytes"):
        read_idx(short)
    write_split(tmp_path / "mismatch", "train", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_fashion_mnist("train", tmp_path / "mismatch")


def test_missing_copy_lists_places_searched(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*download=True"):
        load_fashion_mnist("train", tmp_path)


def test_download_goes_through_torchvision_into_the_given_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls: list[tuple[str, bool, bool]] = []

    class FakeFashionMNIST:
        """Stands in for the network download: writes the raw files where torchvision would."""

        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            write_split(
                Path(root) / "FashionMNIST" / "raw",
                "train",
                np.ones((2, 28, 28), np.uint8),
                np.array([4, 5], np.uint8),
            )

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    images, labels = load_fashion_mnist("train", tmp_path / "dl", download=True)
    assert calls == [(str(tmp_path / "dl"), True, True)]
    assert images.shape == (2, 28, 28) and labels.tolist() == [4, 5]
