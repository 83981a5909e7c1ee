"""The data loaders of a run: the seeded training streams and the in-order evaluation loaders.

Loaders get the few settings they need (:class:`LoaderSettings`), not the run's whole config, so
what shapes a loader is visible at its call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from atcon.data import collate
from atcon.train.distributed import DistInfo
from atcon.train.sampling import SeededItems, StreamBatchSampler, TwoViews
from atcon.train.strategies import Stream

if TYPE_CHECKING:
    from atcon.train.config import TrainConfig
    from atcon.train.data import TaskData

# Offset of the second view's augmentation seed (two-view strategies).
SECOND_VIEW_SEED = 7919
# Offset of each stream's sampling seed.
STREAM_SEED: dict[Stream, int] = {"labeled": 0, "unlabeled": 1}


@dataclass(frozen=True)
class LoaderSettings:
    """What the loaders of a run read from its config.

    Attributes:
        batch_size: training batch size (per process; a stream's batch is at most its share).
        eval_batch_size: batch size of validation and hold-out passes.
        workers: data-loading worker processes (0: load in the main process).
    """

    batch_size: int
    eval_batch_size: int
    workers: int

    @classmethod
    def of(cls, cfg: TrainConfig) -> LoaderSettings:
        """The loader settings of ``cfg``."""
        return cls(cfg.batch_size, cfg.eval_batch_size, cfg.workers)


@dataclass(frozen=True)
class Streams:
    """The streams a strategy reads: item counts, batch samplers and loaders, keyed by stream."""

    sizes: dict[Stream, int]
    samplers: dict[Stream, StreamBatchSampler]
    loaders: dict[Stream, DataLoader[Any]]


def stream_loader(
    items: Any, sampler: StreamBatchSampler, workers: int, seed: int, device: torch.device
) -> DataLoader[Any]:
    """A loader of ``(epoch, index)`` batches drawn by ``sampler``."""
    return DataLoader(
        items,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Workers outlive epochs: few-shot epochs are short and worker start-up would dominate. The
        # batch sampler runs in this process, so set_epoch() still takes effect.
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(dataset: Any, settings: LoaderSettings, device: torch.device) -> DataLoader[Any]:
    """An in-order loader of ``dataset`` (validation, hold-out signals): every pass sees the same batches."""
    return DataLoader(
        dataset,
        batch_size=settings.eval_batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
    )


def build_streams(
    reads: Sequence[Stream],
    two_views: bool,
    data: TaskData,
    settings: LoaderSettings,
    seed: int,
    info: DistInfo,
) -> Streams:
    """Item counts, batch samplers and loaders of the streams ``reads`` names.

    ``labeled`` is the training set; ``unlabeled`` is ``--unlabeled`` or the training set
    without its labels. Each stream has its own sampling seed; items are augmented with seeds
    from ``(seed, epoch, index)`` (two such views when ``two_views``).
    """
    sources: dict[Stream, Any] = {
        "labeled": data.train,
        "unlabeled": data.unlabeled if data.unlabeled is not None else data.train,
    }
    sizes, samplers, loaders = {}, {}, {}
    for s in reads:
        sizes[s] = len(sources[s])
        # A batch larger than the stream would repeat its items many times over in every step.
        batch = max(1, min(settings.batch_size, -(-sizes[s] // info.world_size)))
        samplers[s] = StreamBatchSampler(
            sizes[s], batch, seed + STREAM_SEED[s], rank=info.rank, world=info.world_size
        )
        items = (
            TwoViews(sources[s], seed, seed + SECOND_VIEW_SEED)
            if two_views
            else SeededItems(sources[s], seed)
        )
        loaders[s] = stream_loader(items, samplers[s], settings.workers, seed, info.device)
    return Streams(sizes, samplers, loaders)
