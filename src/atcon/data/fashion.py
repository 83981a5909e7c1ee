"""Fashion-MNIST from local IDX files: the source of the built-in offline benchmarks.

Looked up, in order: an explicit ``root``; ``$ATCON_FASHION_MNIST``; ``/usr/share/datasets/fashion-mnist``
(Debian package ``dataset-fashion-mnist``); ``<data dir>/FashionMNIST/raw`` (where
``download=True`` puts torchvision's copy). A folder qualifies when it holds
``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` files, gzipped or not.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np

from atcon.data._common import DataError, default_data_dir, not_found

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
"""Class names in label order, written VOC-style (lower case, no spaces or slashes)."""

FASHION_MNIST_TITLES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The dataset's own class titles, for figures."""

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "ATCON_FASHION_MNIST"

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or raw.

    Args:
        path: ``*.idx?-ubyte`` or ``*.idx?-ubyte.gz``.

    Returns:
        The array in native byte order, shape from the header.

    Raises:
        FileNotFoundError: No such file.
        DataError: Bad magic number, unknown type code, or a size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("IDX file", path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"corrupt gzip file ({err})", path) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError("not an IDX file (bad magic number)", path)
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"not an IDX file (unknown type code 0x{code:02x})", path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("truncated IDX header", path)
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"IDX data has {len(raw) - header} bytes, header {shape} needs {expected}", path)
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(root: str | Path | None) -> list[Path]:
    if root is not None:
        root = Path(root).expanduser()
        return [root, root / "FashionMNIST" / "raw"]
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]).expanduser())
    out += [SYSTEM_DIR, default_data_dir() / "FashionMNIST" / "raw"]
    return out


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000).
        root: Folder with the IDX files; default: the search order of this module.
        download: If no copy is found, fetch it with torchvision's ``FashionMNIST(download=True)`` into
            the data dir (needs network access).

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` and ``int64`` ``(N,)`` indices into
        ``FASHION_MNIST_CLASSES``.

    Raises:
        FileNotFoundError: No copy found and ``download`` is False (message lists the places searched).
        DataError: A file is corrupt, or images and labels disagree in number.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    searched = _candidates(root)
    for folder in searched:
        images_path = _find_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path is not None and labels_path is not None:
            break
    else:
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST {split} files not found in {', '.join(map(str, searched))}; install the "
                f"'dataset-fashion-mnist' package, set ${ENV_VAR}, or pass download=True"
            )
        from torchvision.datasets import FashionMNIST

        target = Path(root).expanduser() if root is not None else default_data_dir()
        FashionMNIST(str(target), train=split == "train", download=True)
        return load_fashion_mnist(split, target / "FashionMNIST" / "raw", download=False)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"expected (N, H, W) images, got shape {images.shape}", images_path)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels in {labels_path}", images_path)
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)
