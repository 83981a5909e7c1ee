"""The few-shot protocol on the user's images: drawn or given sets, subject-disjoint sets."""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

from atcon.data import (
    DataError,
    ImageFolderDataset,
    ImageManifestDataset,
    Split,
    image_fewshot_split,
    subject_disjoint_split,
)
from tests.data.userdata import CLASSES, Img, Obj, single_label_set, write_csv, write_folders


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def rewrite(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def many_subjects(n_subjects: int = 24, seed: int = 0) -> list[Img]:
    """Single-label images over many subjects; every fourth subject has images of two classes."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for s in range(n_subjects):
        classes = [s % 3, (s + 1) % 3] if s % 4 == 0 else [s % 3]
        for k in range(int(torch.randint(2, 5, (), generator=g))):
            obj = Obj(CLASSES[classes[k % len(classes)]], 1, 1, 5, 5)
            images.append(Img(f"s{s:02d}i{k}", 12, 10, (obj,), f"p{s:02d}", "train"))
    return images


def sets_of(split: Split) -> list[set[str]]:
    return [set(split.train), set(split.val), set(split.test)]


def subject_of(ds: ImageManifestDataset) -> dict[str, str]:
    return dict(zip(ds.ids, ds.subjects))  # type: ignore[arg-type]


def test_subject_disjoint_split_keeps_subjects_whole_with_exact_per_class_counts(tmp_path: Path) -> None:
    images = many_subjects()
    ds = ImageManifestDataset(write_csv(tmp_path / "m.csv", images))
    split = image_fewshot_split(ds, per_class=3, seed=1, group_by="subject")
    subject = subject_of(ds)
    owners = [{subject[i] for i in s} for s in sets_of(split)]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    label = dict(zip(ds.ids, ds.class_indices().tolist()))
    assert Counter(label[i] for i in split.train) == {0: 3, 1: 3, 2: 3}
    # Subjects whose images span two classes land whole in one set (train pool, val or test).
    mixed = {s for s in set(ds.subjects) if len({label[i] for i in ds.ids if subject[i] == s}) > 1}
    assert len(mixed) == 6
    pool, val, test = subject_disjoint_split(ds.label_matrix(), ds.subjects, seed=1)  # type: ignore[arg-type]
    for s in mixed:
        mine = {i for i in range(len(ds)) if ds.subjects[i] == s}
        assert sum(mine <= set(part) for part in (pool, val, test)) == 1
    assert set(split.val) == {ds.ids[i] for i in val} and set(split.test) == {ds.ids[i] for i in test}
    assert split.protocol == "subject-disjoint" and split.meta["group_by"] == "subject"
    assert split.meta["set_sizes"] == [len(pool), len(val), len(test)]
    assert split == image_fewshot_split(ds, per_class=3, seed=1, group_by="subject")
    loaded = Split.load(split.save(tmp_path / "split.json"))
    assert loaded.protocol == "subject-disjoint" and loaded.meta["group_by"] == "subject"


def test_multilabel_subject_split_matches_its_single_label_counting() -> None:
    # A one-hot matrix must deal subjects exactly as the class indices do.
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (60,), generator=g)
    subjects = [f"p{int(v)}" for v in torch.randint(0, 15, (60,), generator=g)]
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert subject_disjoint_split(one_hot, subjects, seed=3) == subject_disjoint_split(
        labels.tolist(), subjects, 3
    )
    # Multi-hot items count for every class they have: duplicating every class column doubles every
    # cost term, which must not change a single decision.
    doubled = torch.cat([one_hot, one_hot], dim=1)
    assert subject_disjoint_split(doubled, subjects, seed=3) == subject_disjoint_split(
        one_hot, subjects, seed=3
    )
    # ... while the same items with the second copy dropped for half of them deal differently.
    lopsided = doubled.clone()
    lopsided[::2, 4:] = 0
    assert subject_disjoint_split(lopsided, subjects, seed=3) != subject_disjoint_split(
        one_hot, subjects, seed=3
    )


def test_drawn_split_is_the_voc_protocol_on_all_images(tmp_path: Path) -> None:
    images = many_subjects(12)
    ds = ImageManifestDataset(write_csv(tmp_path / "m.csv", images))
    with pytest.warns(UserWarning, match=r"subject\(s\) have images in two sets"):
        split = image_fewshot_split(ds, per_class=2, seed=0, val_size=0.25)
    n = len(ds)
    assert len(split.val) == round(0.25 * n)
    assert sorted(split.train + split.val + split.test) == sorted(ds.ids)
    assert not set(split.train) & set(split.val)
    label = dict(zip(ds.ids, ds.class_indices().tolist()))
    assert Counter(label[i] for i in split.train) == {0: 2, 1: 2, 2: 2}
    assert split.meta == {
        "source": str(tmp_path / "m.csv"), "format": "csv", "group_by": None, "sets": "drawn", "val": "drawn",
        "val_rule": "asked: 0.25 of the pool", "val_size": len(split.val),
    }  # fmt: skip


def test_given_sets_with_subjects(tmp_path: Path) -> None:
    images = many_subjects(12)
    by_subject = sorted({im.subject for im in images})
    role = {s: ("train", "train", "val", "test")[k % 4] for k, s in enumerate(by_subject)}
    images = [Img(im.name, 12, 10, im.objects, im.subject, role[im.subject]) for im in images]
    path = write_csv(tmp_path / "m.csv", images, split=True)
    ds = ImageManifestDataset(path)
    split = image_fewshot_split(ds, per_class=1, seed=0, group_by="subject")
    given = dict(zip(ds.ids, ds.splits))
    assert {given[i] for i in split.train} == {"train"} and {given[i] for i in split.val} == {"val"}
    assert set(split.test) == {i for i, s in given.items() if s == "test"}
    assert split.meta["sets"] == "given" and split.meta["val"] == "given"

    # No val rows: whole subjects of the train set are drawn for validation.
    rows = rows_of(path)
    for row in rows:
        row["split"] = "train" if row["split"] == "val" else row["split"]
    rewrite(path, rows)
    ds = ImageManifestDataset(path)
    split = image_fewshot_split(ds, per_class=1, seed=0, group_by="subject", val_size=5)
    subject = subject_of(ds)
    val_subjects = {subject[i] for i in split.val}
    assert len(split.val) >= 5 and not val_subjects & {subject[i] for i in split.train}
    assert set(split.val) == {i for i in ds.ids if subject[i] in val_subjects}
    assert split.meta["val"] == "drawn"

    # A subject in two given sets is an error naming the file and both rows.
    rows[0]["split"] = "test"
    rewrite(path, rows)
    second = next(k for k, r in enumerate(rows) if k > 0 and r["subject"] == rows[0]["subject"])
    rows_named = rf"test \({path}: line 2\) and train \({path}: line {second + 2}\)"
    message = rf"subject 'p00' is in two given sets: {rows_named}"
    with pytest.raises(DataError, match=message):
        image_fewshot_split(ImageManifestDataset(path), per_class=1, seed=0, group_by="subject")
    # Without grouping the given sets are used as they are, with a warning about the shared subject.
    with pytest.warns(UserWarning, match=r"subject\(s\) have images in two sets \(e.g. 'p00'\)"):
        image_fewshot_split(ImageManifestDataset(path), per_class=1, seed=0, val_size=2)


def test_split_errors_say_what_to_do(tmp_path: Path) -> None:
    images = many_subjects(12)
    folders = ImageFolderDataset(write_folders(tmp_path / "flat", images, subjects=False))
    with pytest.raises(DataError, match=r"needs a subject for every image; \d+ of \d+ have none"):
        image_fewshot_split(folders, per_class=1, group_by="subject")
    with pytest.raises(ValueError, match="val_size does not apply"):
        image_fewshot_split(
            write_folders(tmp_path / "subj", images), per_class=1, group_by="subject", val_size=3
        )
    with pytest.raises(ValueError, match="group_by must be None or 'subject'"):
        image_fewshot_split(folders, per_class=1, group_by="patient")  # type: ignore[arg-type]
    with pytest.raises(
        DataError,
        match=r"class '\w+' (\(\d+ images in all\) )?has only \d+ images, 50 requested in the images left",
    ):
        image_fewshot_split(folders, per_class=50)
    with pytest.raises(DataError, match="leaves no training images"):
        image_fewshot_split(folders, per_class=1, val_size=len(folders))
    with pytest.raises(ValueError, match="fraction in"):
        image_fewshot_split(folders, per_class=1, val_size=1.5)
    # Sets given by folder: every image in a set folder.
    assigned = [
        Img(i.name, 12, 10, i.objects, i.subject, "train" if k % 3 else "test") for k, i in enumerate(images)
    ]
    split_root = write_folders(tmp_path / "sets", assigned, split=True, subjects=False)
    split = image_fewshot_split(split_root, per_class=1, seed=0, val_size=2)
    assert all(i.startswith("test/") for i in split.test) and all(i.startswith("train/") for i in split.train)
    assert all(i.startswith("train/") for i in split.val)
    (split_root / "train").rename(split_root / "valid")
    with pytest.raises(DataError, match="no image is in the given train set"):
        image_fewshot_split(split_root, per_class=1)


def test_grouped_split_on_single_label_set_with_mixed_subjects(tmp_path: Path) -> None:
    # The shared set: subjects s2 and s5 have images of two classes.
    ds = ImageFolderDataset(write_folders(tmp_path / "f", single_label_set()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grouped: no shared-subject warning
        split = image_fewshot_split(ds, per_class=1, seed=0, group_by="subject")
    parts = sets_of(split)
    for s in {i.split("/")[1] for i in ds.ids}:
        mine = {i for i in ds.ids if i.split("/")[1] == s}
        if s in ("s2", "s5"):
            assert len({i.split("/")[0] for i in mine}) == 2
        holding = [k for k, part in enumerate(parts) if mine & part]
        assert len(holding) <= 1
        if holding and holding[0] > 0:  # validation and test take whole subjects
            assert mine <= parts[holding[0]]
