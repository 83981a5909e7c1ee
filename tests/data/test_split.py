"""Split records: the JSON round trip, its errors, and unlabeled pools drawn outside val/test."""

from __future__ import annotations

from pathlib import Path

import pytest

from atcon.data import DataError, Split, with_unlabeled_pool


def test_split_file_round_trip_and_errors(tmp_path: Path) -> None:
    split = Split(
        ["a", "b"], ["c"], ["d"], ["x", "y"], per_class=2, seed=7, protocol="voc-fewshot", meta={"k": 1}
    )
    path = split.save(tmp_path / "sub" / "split.json")
    assert Split.load(path) == split
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        Split.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match=r"other\.json"):
        Split.load(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        Split.load(tmp_path / "missing.json")


def test_unlabeled_pool_avoids_val_and_test_and_depends_only_on_its_inputs() -> None:
    split = Split(["a0", "a1"], ["v0", "v1"], ["t0"], ["x"], per_class=1, seed=0, protocol="voc-fewshot")
    candidates = ["a0", "a1", "v0", "t0", *(f"p{i}" for i in range(20))]
    pooled = with_unlabeled_pool(split, candidates, 8, seed=3)
    assert len(pooled.unlabeled) == 8 == len(set(pooled.unlabeled))
    assert not set(pooled.unlabeled) & {"v0", "v1", "t0"}
    assert set(pooled.unlabeled) <= set(candidates)
    assert (pooled.train, pooled.val, pooled.test) == (split.train, split.val, split.test)
    assert pooled.meta["unlabeled_pool"] == 8 and pooled.meta["unlabeled_seed"] == 3
    # the draw is a function of the candidates (not their order), the size and the seed
    assert with_unlabeled_pool(split, list(reversed(candidates)), 8, seed=3).unlabeled == pooled.unlabeled
    assert with_unlabeled_pool(split, candidates, 8, seed=4).unlabeled != pooled.unlabeled
    with pytest.raises(DataError, match="at most 22"):
        with_unlabeled_pool(split, candidates, 23)
