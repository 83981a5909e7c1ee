"""The seeded batch stream (sharding, resume), per-item seeds, seeded items and two views."""

from __future__ import annotations

import pytest
import torch

from atcon.train.sampling import SeededItems, StreamBatchSampler, TwoViews, item_seed


def _epoch(
    sampler: StreamBatchSampler, epoch: int, start: int = 0, num: int | None = None
) -> list[list[int]]:
    sampler.set_epoch(epoch, start, num)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert all(e == epoch for batch in batches for e, _ in batch)
    return [[i for _, i in batch] for batch in batches]


def test_batches_are_full_and_each_epoch_starts_a_fresh_permutation() -> None:
    sampler = StreamBatchSampler(10, 3, seed=5)
    assert sampler.batches_per_epoch == 4
    batches = _epoch(sampler, 0)
    assert [len(b) for b in batches] == [3, 3, 3, 3]
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10))  # one permutation...
    assert len(set(flat[10:])) == 2  # ...and the last batch wraps into the next one
    assert _epoch(StreamBatchSampler(10, 3, seed=5), 0) == batches  # seeded
    assert _epoch(sampler, 1) != batches
    assert _epoch(StreamBatchSampler(10, 3, seed=6), 0) != batches
    with pytest.raises(ValueError, match="empty dataset"):
        StreamBatchSampler(0, 3, seed=0)


def test_shards_of_a_global_batch_are_the_single_process_batch() -> None:
    n, batch, world = 23, 2, 3
    single = _epoch(StreamBatchSampler(n, batch * world, seed=1), 4)
    shards = [_epoch(StreamBatchSampler(n, batch, seed=1, rank=r, world=world), 4) for r in range(world)]
    assert StreamBatchSampler(n, batch, seed=1, world=world).batches_per_epoch == -(-n // (batch * world))
    for b, whole in enumerate(single):
        assert [i for r in range(world) for i in shards[r][b]] == whole


def test_starting_mid_epoch_continues_the_same_stream() -> None:
    sampler = StreamBatchSampler(10, 3, seed=2)
    full = _epoch(sampler, 3, 0, 7)  # more batches than an epoch: the stream just goes on
    assert full[:4] == _epoch(sampler, 3)
    for start in range(7):
        assert _epoch(sampler, 3, start, 7 - start) == full[start:]


def test_item_seed_is_deterministic_and_distinct() -> None:
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(-3, 30)}
    assert len(seeds) == 3 * 3 * 33
    assert all(0 <= v < 2**63 for v in seeds)
    assert item_seed(1, 2, 3) == item_seed(1, 2, 3)


class RandomItems(torch.utils.data.Dataset[tuple[torch.Tensor, dict[str, int]]]):
    """Each item is a fresh random draw from the global RNG, like a random augmentation."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        return torch.rand(4), {"index": index}


def test_seeded_items_are_pure_functions_of_seed_epoch_index() -> None:
    items = SeededItems(RandomItems(), seed=0)
    rng = torch.get_rng_state()
    a, target = items[(1, 2)]
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream is left alone
    assert target == {"index": 2}
    assert torch.equal(a, items[(1, 2)][0])
    assert not torch.equal(a, items[(0, 2)][0]) and not torch.equal(a, items[(1, 3)][0])
    assert not torch.equal(a, SeededItems(RandomItems(), seed=1)[(1, 2)][0])
    views, target = TwoViews(RandomItems(), 0, 7)[(1, 2)]
    assert views.shape == (2, 4) and target == {"index": 2}
    assert torch.equal(views[0], a) and torch.equal(views[1], SeededItems(RandomItems(), 7)[(1, 2)][0])
