"""One generated set written as VOC, CSV, COCO (and class folders when single-label) reads back the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from atcon.data import (
    COCODataset,
    ImageFolderDataset,
    ImageManifestDataset,
    Split,
    VOCDataset,
    collate,
    image_eval_transform,
    image_fewshot_split,
    image_train_transform,
    voc_fewshot_split,
)
from tests.data.userdata import (
    CLASSES,
    COLOURS,
    Img,
    multilabel_set,
    pixels,
    single_label_set,
    write_coco,
    write_csv,
    write_folders,
    write_voc,
)

BOX_KEYS = ("boxes", "box_labels", "difficult", "avoid")


def expected_target(img: Img) -> dict[str, Any]:
    """The target every reader must give, computed from the generator's spec alone."""
    labels = torch.tensor([float(c in img.positives) for c in CLASSES])
    present = torch.tensor([any(o.name == c for o in img.objects) for c in CLASSES])
    return {
        "labels": labels,
        "ignore": present & (labels == 0),
        "boxes": torch.tensor([o.box for o in img.objects]).reshape(-1, 4),
        "box_labels": torch.tensor([CLASSES.index(o.name) for o in img.objects], dtype=torch.int64),
        "difficult": torch.tensor([o.difficult for o in img.objects]),
        "avoid": torch.tensor([o.box for o in img.avoid]).reshape(-1, 4),
        "orig_size": torch.tensor([img.height, img.width]),
    }


def stem(image_id: str) -> str:
    return Path(image_id).stem


def check_against_spec(ds: Any, images: list[Img], *, boxes: bool = True) -> None:
    assert tuple(ds.classes) == CLASSES and len(ds) == len(images)
    for k, img in enumerate(images):
        x, target = ds[k]
        assert stem(target["image_id"]) == img.name
        assert torch.equal(x, torch.from_numpy(pixels(img, k)).permute(2, 0, 1).float() / 255)
        want = expected_target(img)
        if not boxes:  # no boxes, so no difficult ones either
            want["ignore"] = torch.zeros(len(CLASSES), dtype=torch.bool)
        for key, value in want.items():
            if key in BOX_KEYS and not boxes:
                assert len(target[key]) == 0
                continue
            assert torch.equal(torch.as_tensor(target[key]).as_subclass(torch.Tensor), value), (img.name, key)
        assert target["group"] == (img.group if boxes else "")
        if boxes:
            assert tuple(target["boxes"].canvas_size) == (img.height, img.width)
            assert tuple(target["avoid"].canvas_size) == (img.height, img.width)
            # The regions to avoid cover exactly the white pixels.
            cover = torch.zeros(img.height, img.width, dtype=torch.bool)
            for x1, y1, x2, y2 in target["avoid"].as_subclass(torch.Tensor).int().tolist():
                cover[y1:y2, x1:x2] = True
            assert torch.equal((x == 1).all(0), cover), img.name
            # Each class's boxes cover exactly the pixels painted in its colour.
            boxes_xyxy = target["boxes"].as_subclass(torch.Tensor)
            assert torch.equal(boxes_xyxy, boxes_xyxy.round())
            for c, name in enumerate(CLASSES):
                colour = torch.tensor(COLOURS[name]).float().view(3, 1, 1) / 255
                cover = torch.zeros(img.height, img.width, dtype=torch.bool)
                for (x1, y1, x2, y2), label in zip(boxes_xyxy.int().tolist(), target["box_labels"].tolist()):
                    if label == c:
                        cover[y1:y2, x1:x2] = True
                assert torch.equal((x == colour).all(0), cover), (img.name, name)


def assert_same(a: Any, b: Any, *, boxes: bool = True) -> None:
    assert len(a) == len(b) and tuple(a.classes) == tuple(b.classes)
    for k in range(len(a)):
        (xa, ta), (xb, tb) = a[k], b[k]
        assert torch.equal(xa, xb) and stem(ta["image_id"]) == stem(tb["image_id"])
        # Without boxes there are no difficult boxes either, so nothing to ignore.
        keys = (set(ta) & set(tb)) - {"image_id"} - (set() if boxes else {*BOX_KEYS, "ignore", "group"})
        assert keys >= {"labels", "orig_size"}
        for key in keys:
            if isinstance(ta[key], str):
                assert ta[key] == tb[key], key
                continue
            assert torch.equal(torch.as_tensor(ta[key]), torch.as_tensor(tb[key])), key


def same_split(a: Split, b: Split) -> bool:
    names = [[stem(i) for i in ids] for ids in (a.train, a.val, a.test)]
    return names == [[stem(i) for i in ids] for ids in (b.train, b.val, b.test)] and a.classes == b.classes


@pytest.fixture
def multilabel(tmp_path: Path) -> dict[str, Any]:
    images = multilabel_set()
    return {
        "images": images,
        "voc": write_voc(tmp_path / "ml" / "voc", images),
        "csv": write_csv(tmp_path / "ml" / "csv" / "manifest.csv", images),
        "csv_split": write_csv(tmp_path / "ml" / "csv_split" / "manifest.csv", images, split=True),
        "coco": write_coco(tmp_path / "ml" / "coco" / "instances.json", images),
        "coco_split": write_coco(tmp_path / "ml" / "coco_split" / "instances.json", images, split=True),
    }


@pytest.fixture
def single(tmp_path: Path) -> dict[str, Any]:
    images = single_label_set()
    return {
        "images": images,
        "voc": write_voc(tmp_path / "sl" / "voc", images),
        "csv": write_csv(tmp_path / "sl" / "csv" / "manifest.csv", images, split=True),
        "coco": write_coco(tmp_path / "sl" / "coco" / "instances.json", images, split=True),
        "folders": write_folders(tmp_path / "sl" / "folders", images),
    }


def test_multilabel_items_agree_with_the_spec_in_every_format(multilabel: dict[str, Any]) -> None:
    images = multilabel["images"]
    voc = VOCDataset(multilabel["voc"], "all")
    csv = ImageManifestDataset(multilabel["csv"])
    coco = COCODataset(multilabel["coco"])
    for ds in (csv, coco):
        assert ds.multi_label and ds.task == "multilabel" and "label" not in ds[0][1]
        assert set(ds[0][1]) == set(voc[0][1])  # exactly VOC's keys
        check_against_spec(ds, images)
        assert torch.equal(ds.label_matrix(), voc.label_matrix())
    check_against_spec(voc, images)
    assert_same(voc, csv)
    assert_same(voc, coco)


def test_single_label_items_agree_in_every_format_including_class_folders(single: dict[str, Any]) -> None:
    images = single["images"]
    voc = VOCDataset(single["voc"], "all")
    csv = ImageManifestDataset(single["csv"])
    coco = COCODataset(single["coco"])
    folders = ImageFolderDataset(single["folders"])
    for ds in (csv, coco, folders):
        assert not ds.multi_label and ds.task == "multiclass"
        assert set(ds[0][1]) == {*voc[0][1], "label"}
        want = torch.tensor([CLASSES.index(img.positives[0]) for img in images])
        assert torch.equal(ds.class_indices(), want)
        assert [int(ds[k][1]["label"]) for k in range(len(ds))] == want.tolist()
    check_against_spec(csv, images)
    check_against_spec(coco, images)
    check_against_spec(folders, images, boxes=False)
    assert_same(voc, csv)
    assert_same(csv, coco)
    assert_same(csv, folders, boxes=False)
    # The ignore flags of the difficult boxes exist in boxed formats only; labels agree everywhere.
    assert torch.equal(folders.label_matrix(), voc.label_matrix())


def test_batches_of_single_label_items_collate_with_the_class_index(single: dict[str, Any]) -> None:
    ds = ImageManifestDataset(single["csv"], transform=image_eval_transform(32))
    images, targets = collate([ds[0], ds[7], ds[13]])
    assert images.shape == (3, 3, 32, 32)
    assert targets["label"].tolist() == [int(ds[k][1]["label"]) for k in (0, 7, 13)]
    assert targets["labels"].shape == (3, 3) and len(targets["boxes"]) == 3
    # Training augmentation moves the boxes and keeps the image-level targets.
    ds.transform = image_train_transform(32)
    x, target = ds[4]
    assert x.shape == (3, 32, 32) and int(target["label"]) == int(ds.class_indices()[4])
    assert target["labels"].shape == (3,) and len(target["box_labels"]) == len(target["boxes"])


@pytest.mark.filterwarnings("ignore:.*subject.*in two sets")
def test_drawn_splits_agree_across_formats(multilabel: dict[str, Any], single: dict[str, Any]) -> None:
    for data in (multilabel, single):
        voc = VOCDataset(data["voc"], "all")
        first = image_fewshot_split(voc, per_class=2, seed=3, val_size=3)
        assert first.protocol == "image-fewshot" and first.meta["sets"] == "drawn"
        others = [ImageManifestDataset(multilabel["csv"]), COCODataset(multilabel["coco"])]
        if data is single:
            others = [ImageFolderDataset(single["folders"])]
        for ds in others:
            assert same_split(first, image_fewshot_split(ds, per_class=2, seed=3, val_size=3))
        assert not same_split(first, image_fewshot_split(voc, per_class=2, seed=4, val_size=3))


def test_given_sets_agree_with_the_voc_protocol(multilabel: dict[str, Any]) -> None:
    # The VOC protocol draws validation from the train image set; given train/test columns do the same.
    voc = voc_fewshot_split(multilabel["voc"], 1, seed=5, val_size=2, train_split="train", test_split="test")
    for ds in (ImageManifestDataset(multilabel["csv_split"]), COCODataset(multilabel["coco_split"])):
        split = image_fewshot_split(ds, per_class=1, seed=5, val_size=2)
        assert same_split(voc, split)
        assert split.meta["sets"] == "given" and split.meta["val"] == "drawn"
        assert [stem(i) for i in split.test] == [im.name for im in multilabel["images"] if im.split == "test"]


def test_subject_disjoint_splits_agree_across_formats(single: dict[str, Any]) -> None:
    csv_path = single["csv"].parent / "nosplit.csv"
    write_csv(csv_path, single["images"])
    datasets = [ImageManifestDataset(csv_path), ImageFolderDataset(single["folders"])]
    splits = [image_fewshot_split(ds, per_class=1, seed=2, group_by="subject") for ds in datasets]
    assert same_split(splits[0], splits[1])
    assert splits[0].protocol == "subject-disjoint" and splits[0].meta["group_by"] == "subject"
