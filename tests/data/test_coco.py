"""COCO files: categories, box conversion, crowd boxes, image folders, and bad entries named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atcon.data import COCODataset, DataError, read_coco


def png(path: Path, size: tuple[int, int] = (20, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)


def coco(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 20, "height": 10},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 10},
            {"id": 3, "file_name": "c.png", "width": 20, "height": 10},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [2.5, 1, 4, 3], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 10], "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 2, 3, 4]},
            {"id": 13, "image_id": 2, "category_id": 5, "bbox": [5, 5, 0, 0]},
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 2, "name": "cat"}],
    }
    data.update(overrides)
    return data


def write(folder: Path, data: dict[str, Any], name: str = "instances.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for im in data["images"]:
        if isinstance(im, dict) and im.get("file_name"):
            png(folder / im["file_name"])
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def test_categories_by_id_boxes_converted_crowd_as_difficult(tmp_path: Path) -> None:
    ds = COCODataset(write(tmp_path, coco()))
    assert ds.classes == ("cat", "dog") and ds.multi_label  # image 2 has both classes
    _, a = ds[0]
    assert a["boxes"].tolist() == [[2.5, 1.0, 6.5, 4.0], [0.0, 0.0, 20.0, 10.0]]
    assert a["box_labels"].tolist() == [1, 0] and a["difficult"].tolist() == [False, True]
    assert a["labels"].tolist() == [0, 1] and a["ignore"].tolist() == [True, False]
    _, b = ds[1]
    assert b["labels"].tolist() == [1, 1] and b["boxes"].tolist()[1] == [5.0, 5.0, 5.0, 5.0]
    _, c = ds[2]  # no annotations: a negative for every class
    assert c["labels"].tolist() == [0, 0] and c["boxes"].shape == (0, 4)
    assert ds.ids == ["a.png", "b.png", "c.png"]
    crowd = COCODataset(write(tmp_path, coco()), difficult_as_positive=True)[0][1]
    assert crowd["labels"].tolist() == [1, 1]


def test_single_label_coco_and_images_without_annotations(tmp_path: Path) -> None:
    one_each = [coco()["annotations"][0], {"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 2, 3, 4]}]
    data = coco(annotations=one_each)
    path = write(tmp_path, data)
    with pytest.raises(DataError, match=r"instances\.json: image 3 \('c\.png'\): no label"):
        COCODataset(path)
    with pytest.warns(UserWarning, match="skipped 1 bad images"):
        ds = COCODataset(path, on_error="skip")
    assert not ds.multi_label and ds.class_indices().tolist() == [1, 0]
    assert COCODataset(path, multi_label=True).label_matrix().tolist() == [[0, 1], [1, 0], [0, 0]]


def test_sizes_come_from_the_file_until_an_image_is_decoded(tmp_path: Path) -> None:
    data = coco()
    data["images"][0]["width"] = 99  # wrong, as some tools write it
    ds = COCODataset(write(tmp_path, data))
    assert ds.target(0)["orig_size"].tolist() == [10, 99]
    assert ds[0][1]["orig_size"].tolist() == [10, 20]  # the decoded size wins


def test_image_folder_is_found_in_the_coco_release_layout(tmp_path: Path) -> None:
    data = coco()
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(data))
    for im in data["images"]:
        png(tmp_path / "val2017" / im["file_name"])
    ds = COCODataset(path)
    assert ds.records[0].path == tmp_path / "val2017" / "a.png" and ds[2][0].shape == (3, 10, 20)
    other = tmp_path / "elsewhere"
    for im in data["images"]:
        png(other / im["file_name"], (8, 8))
    elsewhere = COCODataset(path, image_root=other)
    assert elsewhere.records[0].path == other / "a.png"
    # Those 8 x 8 files are not the images the annotation describes: its boxes lie outside them.
    with pytest.raises(
        DataError, match=r"image 1 \('a\.png'\): box 2 \(cat\) .* lies outside the 8 x 8 image"
    ):
        elsewhere[0]
    with pytest.raises(DataError, match=r"image 1 \('a\.png'\): image not found: .*nowhere/a\.png"):
        COCODataset(path, image_root=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"annotations": [{"id": 7, "image_id": 2, "category_id": 9, "bbox": [0, 0, 1, 1]}]},
         r"image 2 \('b\.png'\): annotation 7 has unknown category id 9"),
        ({"annotations": [{"id": 7, "image_id": 1, "category_id": 2, "bbox": [0, 0, -1, 1]}]},
         r"image 1 \('a\.png'\): annotation 7: malformed bbox \[0, 0, -1, 1\] has a negative width"),
        ({"annotations": [{"id": 7, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1]}]},
         r"annotation 7: malformed bbox \[0, 0, 1\] is not \[x, y, w, h\]"),
        ({"annotations": [{"id": 7, "image_id": 1, "category_id": 2, "bbox": [0, "x", 1, 1]}]},
         "not a finite number"),
        ({"images": [{"id": 1, "file_name": "a.png", "avoid": [[0, 0, 2, -1]]}, *coco()["images"][1:]]},
         r"image 1 \('a\.png'\): avoid region 1: malformed bbox \[0, 0, 2, -1\] has a negative width"),
        ({"images": [{"id": 1, "file_name": "a.png", "avoid": {"x": 1}}, *coco()["images"][1:]]},
         r"image 1 \('a\.png'\): avoid is \{'x': 1\}, not a list of \[x, y, w, h\] boxes"),
    ],
)  # fmt: skip
def test_bad_annotations_name_the_image(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write(tmp_path, coco(**change))
    with pytest.raises(DataError, match=rf"instances\.json: .*{message}"):
        COCODataset(path, multi_label=True)
    with pytest.warns(UserWarning, match="skipped 1 bad images"):
        assert len(COCODataset(path, multi_label=True, on_error="skip")) == 2


def test_duplicate_files_unknown_splits_and_file_level_errors(tmp_path: Path) -> None:
    data = coco()
    data["images"][2]["file_name"] = "./a.png"
    data["images"][1]["split"] = "later"
    path = write(tmp_path, data)
    with pytest.raises(
        DataError, match=r"image 3 \('\./a\.png'\): duplicate file_name '\./a\.png' \(also image 1\)"
    ):
        COCODataset(path, ids=["./a.png"])
    with pytest.raises(DataError, match=r"image 2 \('b\.png'\): split is 'later'"):
        COCODataset(path, ids=["b.png"])
    for bad, message in [
        ({"images": [{"file_name": "a.png"}]}, "image entry 0 has no integer or string id"),
        (
            {"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]},
            "image id 1 appears twice",
        ),
        (
            {"annotations": [{"id": 3, "image_id": 42, "category_id": 2, "bbox": [0, 0, 1, 1]}]},
            "annotation 3 refers to image id 42, which is not in 'images'",
        ),
        (
            {"categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]},
            "category name 'cat' appears under",
        ),
        ({"categories": [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]}, "category id 1 appears twice"),
        ({"categories": [{"name": "cat"}]}, "malformed category 0"),
        ({"categories": None}, "no 'categories' list"),
    ]:
        with pytest.raises(DataError, match=message):
            read_coco(write(tmp_path / "bad", coco(**bad)))
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(DataError, match=r"x\.json: not a JSON file"):
        read_coco(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        read_coco(tmp_path / "none.json")


def test_subjects_and_given_splits_from_image_keys(tmp_path: Path) -> None:
    data = coco()
    for im, subject, split in zip(data["images"], ["p1", "p1", 7], ["train", "valid", "test"]):
        im.update(subject=subject, split=split)
    ds = COCODataset(write(tmp_path, data))
    assert ds.subjects == ["p1", "p1", "7"] and ds.splits == ["train", "val", "test"]
    assert torch.equal(ds.label_matrix()[1], torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        (
            '{"images": [{"id": [1], "file_name": "a.png"}], "categories": []}',
            "image entry 0 has no integer or string id",
        ),
        ("\u00e9".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_hostile_coco_files_are_one_line_errors(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        COCODataset(path)


def test_an_annotation_whose_image_id_is_a_list_and_a_bom(tmp_path: Path) -> None:
    data = coco()
    for im in data["images"]:
        png(tmp_path / im["file_name"])
    data["annotations"][0]["image_id"] = [1]
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"refers to image id \[1\], which is not in 'images'"):
        COCODataset(tmp_path / "c.json")
    (tmp_path / "ok.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco()).encode())  # UTF-8 with BOM
    assert len(COCODataset(tmp_path / "ok.json")) == len(coco()["images"])
