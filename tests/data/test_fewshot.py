from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from atcon.data import (
    DataError,
    VOCDataset,
    clip_fewshot_split,
    max_per_class,
    sample_per_class,
    subject_disjoint_split,
    val_count,
    voc_fewshot_split,
)


def random_multilabel(n: int = 200, c: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, c, generator=g) < 0.25).float()
    labels[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = 1  # every image has a class
    return labels


def test_sample_per_class_counts_pool_and_determinism() -> None:
    labels = random_multilabel()
    pool = list(range(50, 200))
    picked = sample_per_class(labels, 4, seed=3, pool=pool)
    assert picked == sample_per_class(labels, 4, seed=3, pool=pool)
    assert picked != sample_per_class(labels, 4, seed=4, pool=pool)
    assert len(set(picked)) == len(picked) and set(picked) <= set(pool)
    per_class = labels[picked].sum(0)
    assert (per_class >= 4).all()
    # Never more images than one set of N per class would need.
    assert len(picked) <= 4 * labels.shape[1]


def test_an_image_counts_for_every_class_it_contains() -> None:
    # Every image holds both classes: 2 images give each class its 2 samples.
    labels = torch.ones(10, 2)
    assert len(sample_per_class(labels, 2, seed=0)) == 2


def test_single_label_exact_counts() -> None:
    labels = [0, 1, 2] * 10
    picked = sample_per_class(labels, 3, seed=1)
    assert Counter(labels[i] for i in picked) == {0: 3, 1: 3, 2: 3}


def test_too_few_images_error_says_how_many() -> None:
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(DataError, match="class 'b' has only 1 images, 2 requested"):
        sample_per_class(labels, 2, seed=0, classes=["a", "b"])
    assert max_per_class(labels) == 1
    assert sample_per_class(labels, 1, seed=0, classes=["a", "b"])


def test_voc_fewshot_split_protocol(voc_root: Path) -> None:
    split = voc_fewshot_split(voc_root, per_class=1, seed=0, val_size=1, classes=["cat", "dog", "person"])
    train_ids = {"img1", "img2", "img3", "img4"}
    assert len(split.val) == 1 and set(split.val) <= train_ids
    assert not set(split.val) & set(split.train) and set(split.train) <= train_ids
    assert split.test == ["img5", "img6"]
    labels = VOCDataset(voc_root, ids=split.train, classes=split.classes).label_matrix()
    assert (labels.sum(0) >= 1).all()
    again = voc_fewshot_split(voc_root, per_class=1, seed=0, val_size=1, classes=["cat", "dog", "person"])
    assert again == split


def test_default_validation_draw_is_500_or_a_fifth_of_a_smaller_pool(voc_root: Path) -> None:
    assert [val_count(None, n) for n in (5717, 2500, 2600, 120, 7, 2)] == [500, 500, 500, 24, 1, 1]
    assert [val_count(30, 120), val_count(0.1, 120), val_count(0.001, 120)] == [30, 12, 1]
    with pytest.raises(
        DataError,
        match=r"val_size 500 \(500 validation images\) leaves no training images in "
        r"120 \(the pool\); ask for fewer \(--val-size 24, or a fraction",
    ):
        val_count(500, 120)
    with pytest.raises(DataError, match=r"the default .* leaves no training images in 1"):
        val_count(None, 1)
    with pytest.raises(ValueError, match="a float >= 1"):
        val_count(2.0, 120)
    # The VOC protocol draws that many from its train image set (4 images here: 1).
    split = voc_fewshot_split(voc_root, per_class=1, seed=0, classes=["cat", "dog", "person"])
    assert len(split.val) == 1 and split.meta["val_rule"] == "default: min(500, 20% of the pool)"
    assert split.meta["val"] == "drawn" and split.meta["group_by"] is None


def test_voc_fewshot_split_too_few(voc_root: Path) -> None:
    # dog is positive (non-difficult) only in img2 within train.
    with pytest.raises(DataError, match="class 'dog' has only 1 images, 2 requested"):
        voc_fewshot_split(
            voc_root, per_class=2, seed=0, val_size=1, val_split="val", classes=["cat", "dog", "person"]
        )


def make_clips(seed: int = 0) -> tuple[list[int], list[str]]:
    g = torch.Generator().manual_seed(seed)
    labels, subjects = [], []
    for s in range(40):
        for _ in range(int(torch.randint(1, 6, (), generator=g))):
            labels.append(int(torch.randint(0, 5, (), generator=g)))
            subjects.append(f"patient{s}")
    return labels, subjects


def test_subject_disjoint_split_is_disjoint_balanced_and_deterministic() -> None:
    labels, subjects = make_clips()
    sets = subject_disjoint_split(labels, subjects, seed=0)
    assert sets == subject_disjoint_split(labels, subjects, seed=0)
    assert sorted(i for s in sets for i in s) == list(range(len(labels)))
    owners = [{subjects[i] for i in s} for s in sets]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    sizes = [len(s) for s in sets]
    assert max(sizes) - min(sizes) <= 0.15 * len(labels)
    totals = Counter(labels)
    for s in sets:
        counts = Counter(labels[i] for i in s)
        for c, n in totals.items():
            assert 0.2 <= counts[c] / n <= 0.47, (c, counts[c], n)


def test_clip_fewshot_split_samples_from_train_set_only() -> None:
    labels, subjects = make_clips(1)
    ids = [f"clip{i}" for i in range(len(labels))]
    classes = ["a", "b", "c", "d", "e"]
    split = clip_fewshot_split(ids, labels, subjects, per_class=3, seed=2, classes=classes)
    sets = subject_disjoint_split(labels, subjects, seed=2)
    assert set(split.train) <= {ids[i] for i in sets[0]}
    assert split.val == [ids[i] for i in sets[1]] and split.test == [ids[i] for i in sets[2]]
    assert Counter(labels[ids.index(i)] for i in split.train) == {c: 3 for c in range(5)}


def test_a_class_whose_images_went_to_validation_says_so() -> None:
    """One image of class 1, drawn into validation: "has only 0 images" alone was a riddle."""
    labels = torch.tensor([0, 0, 0, 1])
    with pytest.raises(DataError, match=r"class 'b' \(1 image in all\) has only 0 images, 1 requested"):
        sample_per_class(labels, 1, seed=0, pool=[0, 1, 2], classes=("a", "b"))
