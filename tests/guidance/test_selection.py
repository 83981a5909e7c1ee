"""``--boxes-per-class K``: which labeled images keep their boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from atcon.data import ImageManifestDataset
from atcon.guidance import annotated_classes, boxed_ids
from tests.data.userdata import multilabel_set, single_label_set, write_csv


def test_k_annotated_images_per_class_seeded(tmp_path: Path) -> None:
    images = single_label_set()
    ds = ImageManifestDataset(write_csv(tmp_path / "s.csv", images))
    every = boxed_ids(ds, None, seed=0)
    assert every == frozenset(ds.ids)  # every image has a box of its class
    one = boxed_ids(ds, 1, seed=0)
    assert len(one) == 3 and sorted(ds.records[ds.ids.index(i)].positives[0] for i in one) == sorted(
        ("effusion", "mass", "nodule")
    )
    assert boxed_ids(ds, 1, seed=0) == one and boxed_ids(ds, 2, seed=0) >= set()
    assert any(boxed_ids(ds, 1, seed=s) != one for s in range(1, 6))
    assert len(boxed_ids(ds, 2, seed=3)) == 6 and boxed_ids(ds, 50, seed=3) == every
    with pytest.raises(ValueError, match="boxes_per_class must be >= 1"):
        boxed_ids(ds, 0, seed=0)


def test_multilabel_images_count_for_each_class_they_annotate(tmp_path: Path) -> None:
    images = multilabel_set()
    ds = ImageManifestDataset(write_csv(tmp_path / "m.csv", images))
    # a03 has a nodule box and a difficult effusion box: both are boxes of those classes there.
    k = ds.ids.index("images/a03.png")
    assert annotated_classes(ds.target(k)) == {0, 2}
    # a10's region to avoid makes it supervise its positive classes (mass, nodule) as well.
    k = ds.ids.index("images/a10.png")
    assert annotated_classes(ds.target(k)) == {1, 2}
    chosen = boxed_ids(ds, 1, seed=0)
    assert 1 <= len(chosen) <= 3
    covered = set().union(*(annotated_classes(ds.target(ds.ids.index(i))) for i in chosen))
    assert covered == {0, 1, 2}
