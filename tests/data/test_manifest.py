"""CSV image manifests: columns, label modes, boxes, and bad rows named by file and line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atcon.data import DataError, ImageManifestDataset, read_image_manifest
from atcon.data.manifest import parse_box_list, parse_region_list


def png(path: Path, size: tuple[int, int] = (16, 12), value: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path.name


def manifest(tmp_path: Path, text: str, images: tuple[str, ...] = ("a.png", "b.png", "c.png")) -> Path:
    for k, name in enumerate(images):
        png(tmp_path / name, value=10 * k)
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


def test_label_modes_follow_the_rows_or_the_argument(tmp_path: Path) -> None:
    path = manifest(tmp_path, "path,labels\na.png,cat\nb.png,dog\nc.png,cat\n")
    single = ImageManifestDataset(path)
    assert not single.multi_label and single.classes == ("cat", "dog")
    assert single.class_indices().tolist() == [0, 1, 0] and int(single[1][1]["label"]) == 1
    forced = ImageManifestDataset(path, multi_label=True)
    assert forced.multi_label and "label" not in forced[0][1]
    assert torch.equal(forced.label_matrix(), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    path.write_text("path,labels\na.png,cat|dog\nb.png,dog\nc.png,\n")
    multi = ImageManifestDataset(path)
    assert multi.multi_label and multi.label_matrix().tolist() == [[1, 1], [0, 1], [0, 0]]
    with pytest.raises(DataError, match=r"m\.csv: line 2: 2 labels \(cat, dog\) in a single-label dataset"):
        ImageManifestDataset(path, multi_label=False)
    path.write_text("path,labels\na.png,cat\nb.png,dog\nc.png,\n")
    with pytest.raises(DataError, match=r"m\.csv: line 4: no label; .*multi_label=True keeps images"):
        ImageManifestDataset(path)
    with pytest.raises(ValueError, match="class_indices needs a single-label dataset"):
        multi.class_indices()


def test_columns_separator_bom_absolute_paths_and_class_order(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "z.png"
    png(absolute, (20, 10), value=200)
    text = f"\ufeffPath, Label ,Notes\n./imgs/a.png,cat;dog,x\n{absolute},dog,y\n\nimgs/b.png,bird,z\n"
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    (tmp_path / "sub").mkdir()
    path = tmp_path / "m.csv"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    ds = ImageManifestDataset(path, label_sep=";")
    assert ds.ids == ["./imgs/a.png", str(absolute), "imgs/b.png"]
    assert ds.classes == ("dog", "cat", "bird") and ds.multi_label
    assert ds.label_matrix().tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    x, target = ds[1]
    assert x.shape == (3, 10, 20) and torch.allclose(x, torch.full_like(x, 200 / 255))
    assert target["orig_size"].tolist() == [10, 20] and ds.target(1)["orig_size"].tolist() == [10, 20]
    assert ds.where(2) == f"{path}: line 5"
    # The same rows by id, in the requested order.
    sub = ImageManifestDataset(path, label_sep=";", ids=["imgs/b.png", "./imgs/a.png"])
    assert sub.ids == ["imgs/b.png", "./imgs/a.png"] and sub.classes == ds.classes and sub.multi_label
    with pytest.raises(DataError, match=r"1 image id\(s\) not in the source, e.g. 'nope.png'"):
        ImageManifestDataset(path, ids=["nope.png"])


def test_boxes_column_difficult_boxes_and_ignore(tmp_path: Path) -> None:
    boxes = json.dumps([[1, 2, 5, 6, "cat"], [0, 0, 16, 12, "dog", 1], [3, 3, 4.5, 4, "cat", False]])
    path = tmp_path / "m.csv"
    png(tmp_path / "a.png")
    path.write_text("path,labels,boxes\n" + f'a.png,cat,"{boxes.replace(chr(34), chr(34) * 2)}"\n')
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = ImageManifestDataset(path, multi_label=True)
    _, t = ds[0]
    assert t["boxes"].tolist() == [[1, 2, 5, 6], [0, 0, 16, 12], [3, 3, 4.5, 4]]
    assert t["box_labels"].tolist() == [0, 1, 0] and t["difficult"].tolist() == [False, True, False]
    assert t["labels"].tolist() == [1, 0] and t["ignore"].tolist() == [False, True]
    both = ImageManifestDataset(path, multi_label=True, difficult_as_positive=True)[0][1]
    assert both["labels"].tolist() == [1, 1] and both["ignore"].tolist() == [False, False]
    # Single-label: the difficult-only class is still flagged, the label is the listed class.
    single = ImageManifestDataset(path)[0][1]
    assert int(single["label"]) == 0 and single["ignore"].tolist() == [False, True]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("[[1, 2, 3]]", r"box 1 is \[1, 2, 3\], not \[x1, y1, x2, y2, \"class\"\]"),
        ('[[5, 2, 3, 4, "cat"]]', r"box 1 is inverted"),
        (
            '[[1, 2, 3, 4, "cat"], [1, "a", 3, 4, "cat"]]',
            r"box 2 has a coordinate that is not a finite number",
        ),
        ('[[1, 2, 3, 4, ""]]', "box 1 has no class name"),
        ('[[1, 2, 3, 4, "cat", 2]]', "difficult must be 0, 1, true or false"),
        ("{1, 2}", "boxes is not JSON"),
        ('{"x": 1}', "boxes must be a JSON list"),
    ],
)
def test_malformed_boxes_are_named(cell: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_box_list(cell)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("[[1, 2, 3]]", r"region 1 is \[1, 2, 3\], not \[x1, y1, x2, y2\]"),
        ("[[1, 2, 3, 4, 5]]", r"region 1 is .*not \[x1, y1, x2, y2\] or \[x1, y1, x2, y2, \"name\"\]"),
        ("[[5, 2, 3, 4]]", r"region 1 is inverted"),
        ('[[1, 2, 3, 4], [1, 2, 3, "x", "m"]]', r"region 2 has a coordinate that is not a finite number"),
        ("[1, 2", "avoid is not JSON"),
    ],
)
def test_malformed_regions_are_named(cell: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_region_list(cell)


def test_regions_to_avoid_and_groups_read_and_are_checked_per_row(tmp_path: Path) -> None:
    assert parse_region_list('[[1, 2, 3, 4], [0.5, 0, 2, 2, "marker"]]') == ((1, 2, 3, 4), (0.5, 0, 2, 2))
    text = 'path,labels,avoid,group\na.png,cat,"[[1, 1, 4, 4, ""marker""]]",site a\nb.png,dog,,\nc.png,cat,"[[3, 3, 2, 2]]",b\n'
    path = manifest(tmp_path, text)
    with pytest.raises(DataError, match=r"m\.csv: line 4: malformed avoid: region 1 is inverted"):
        ImageManifestDataset(path)
    ds = ImageManifestDataset(path, ids=["a.png", "b.png"])
    assert ds.groups == ["site a", None]
    (_, a), (_, b) = ds[0], ds[1]
    assert a["avoid"].as_subclass(torch.Tensor).tolist() == [[1, 1, 4, 4]] and a["group"] == "site a"
    assert a["avoid"].canvas_size == (12, 16) and b["avoid"].shape == (0, 4) and b["group"] == ""
    assert "regions to avoid: 1 on 1 images" in ds.describe() and "groups: site a 1" in ds.describe()


def test_bad_rows_name_file_and_line_or_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    rows = [
        "a.png,cat,p1,train,",
        "b.png,dog,p2,test,",
        "a.png,dog,p3,test,",  # line 4: duplicate
        "missing.png,cat,p4,train,",  # line 5: no such image
        "c.png,zebra,p5,train,",  # line 6: unknown class
        'c.png,cat,p6,train,"[[1, 1, 0, 0, ""cat""]]"',  # line 7: malformed box (and duplicate of nothing)
        "d.png,cat,p7,later,",  # line 8: bad split
        'e.png,cat,p8,val,"[[1, 1, 2, 2, ""dog""]]"',  # line 9: box class not among the labels
        ",cat,p9,val,",  # line 10: empty path
    ]
    text = "path,labels,subject,split,boxes\n" + "\n".join(rows) + "\n"
    path = manifest(tmp_path, text, images=("a.png", "b.png", "c.png", "d.png", "e.png"))
    expected = {
        4: r"duplicate path 'a\.png' \(first on line 2\)",
        5: r"image not found: .*missing\.png",
        6: r"unknown class 'zebra' \(known: cat, dog\)",
        7: r"malformed boxes: box 1 is inverted",
        8: r"split is 'later'; expected train, val or test",
        9: r"a box of class 'dog', which is not among the labels \(cat\); add it or mark the box difficult",
        10: r"empty 'path'",
    }
    lines = path.read_text().splitlines()
    for line, message in expected.items():
        path.write_text("\n".join([*lines[:2], lines[line - 1]]) + "\n")
        with pytest.raises(DataError, match=rf"m\.csv: line 3: {message}"):
            ImageManifestDataset(path)
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 7 bad images: .*m\.csv: line 4: duplicate path") as caught:
        ds = ImageManifestDataset(path, on_error="skip")
    assert len(caught) == 1 and ds.ids == ["a.png", "b.png"] and len(ds.skipped) == 7
    assert ds.splits == ["train", "test"] and ds.subjects == ["p1", "p2"]
    assert "skipped: 7 bad images" in ds.describe()
    # Serving good rows by id ignores the bad rows the split never chose.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ImageManifestDataset(path, ids=["b.png"]).ids == ["b.png"]


def test_corrupt_image_fails_at_read_or_is_skipped_by_a_decode_check(tmp_path: Path) -> None:
    path = manifest(tmp_path, "path,labels\na.png,cat\nb.png,dog\n")
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    ds = ImageManifestDataset(path)
    with pytest.raises(DataError, match=r"b\.png: unreadable or corrupt image"):
        ds[1]
    with pytest.warns(UserWarning, match=r"skipped 1 bad images: .*m\.csv: line 3: .*b\.png: unreadable"):
        assert ImageManifestDataset(path, on_error="skip").ids == ["a.png"]


def test_file_level_problems_are_raised_at_once(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with pytest.raises(FileNotFoundError, match=r"manifest not found: .*m\.csv"):
        read_image_manifest(path)
    path.write_text("")
    with pytest.raises(DataError, match="empty manifest"):
        read_image_manifest(path)
    path.write_text("file,labels\na.png,cat\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) path \(found: file, labels\)"):
        read_image_manifest(path)
    path.write_text("path,labels\na.png,cat\n")
    with pytest.raises(ValueError, match="label_sep"):
        read_image_manifest(path, label_sep="")
    with pytest.raises(ValueError, match="duplicate class name 'cat'"):
        ImageManifestDataset(path, classes=["cat", "cat"])


def test_describe_says_what_was_found(tmp_path: Path) -> None:
    boxes = '"[[1, 1, 4, 4, ""cat""], [2, 2, 3, 3, ""dog"", 1]]"'
    rows = f"a.png,cat,p1,train,{boxes}\nb.png,dog,p1,val,\nc.png,cat,p2,test,\n"
    path = manifest(tmp_path, "path,labels,subject,split,boxes\n" + rows)
    text = ImageManifestDataset(path).describe()
    assert text.splitlines() == [
        f"csv {path}: 3 images, 2 classes (single-label)",
        "subjects: 2 (3 of 3 images have one)",
        "given splits: train 1, val 1, test 1",
        "boxes: 2 (1 difficult)",
    ]
