"""Seeded sampling: per-item augmentation seeds, two-view items, and the batch sampler.

Every random choice of the data stream is a pure function of ``(seed, epoch, index)``, so a run
is the same with 0 or 8 DataLoader workers, on 1 or N processes, and after a resume.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch, independent of workers and of resuming."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, epoch, index), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededItems(Dataset[Any]):
    """Index with ``(epoch, index)``; the item's random augmentation is seeded from both.

    This makes every augmentation a pure function of (seed, epoch, index): the same with 0 or 8
    DataLoader workers, and the same after a resume.
    """

    def __init__(self, dataset: Dataset[Any], seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self.dataset[index]


class TwoViews(Dataset[Any]):
    """Two independently seeded augmentations of each item, stacked (SimCLR's positive pairs).

    Items are ``(views (2, *item shape), target)``; the views are those :class:`SeededItems`
    gives with ``seed`` and ``other_seed``.
    """

    def __init__(self, dataset: Dataset[Any], seed: int, other_seed: int) -> None:
        self.first, self.second = SeededItems(dataset, seed), SeededItems(dataset, other_seed)

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Any]:
        x0, target = self.first[key]
        x1, _ = self.second[key]
        return torch.stack([torch.as_tensor(x0), torch.as_tensor(x1)]), target


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` from a seeded stream of permutations, sharded over processes.

    Epoch ``e`` reads ``num_batches`` global batches of ``batch_size * world`` indices from the
    concatenation of permutations seeded by ``(seed, e, 0), (seed, e, 1), ...``; process ``rank``
    takes its slice of each global batch. Batches are always full (the last one wraps into the
    next permutation), and :meth:`set_epoch` can start at any batch, which is how a run resumes
    mid-epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start, self.num_batches = 0, 0, self.batches_per_epoch

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.n // (self.batch_size * self.world))

    def set_epoch(self, epoch: int, start: int = 0, num_batches: int | None = None) -> None:
        self.epoch, self.start = epoch, start
        self.num_batches = self.batches_per_epoch if num_batches is None else num_batches

    def _stream(self) -> Iterator[int]:
        k = 0
        while True:
            g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1 - k))
            yield from torch.randperm(self.n, generator=g).tolist()
            k += 1

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        stream = self._stream()
        global_size = self.batch_size * self.world
        for b in range(self.start + self.num_batches):
            batch = [next(stream) for _ in range(global_size)]
            if b >= self.start:
                mine = batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                yield [(self.epoch, i) for i in mine]

    def __len__(self) -> int:
        return max(0, self.num_batches)
