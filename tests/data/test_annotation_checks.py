"""Boxes are checked against the image they annotate: outside, inverted or of zero area is an
error naming the file and row, not a silently lower IoU."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atcon.data._common import DataError
from atcon.data.formats import open_image_dataset


def manifest(tmp_path: Path, boxes: str, avoid: str = "") -> Path:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "b.png")
    path = tmp_path / "m.csv"
    path.write_text(
        f'path,labels,boxes,avoid\na.png,cat,"[[1, 1, 10, 10, ""cat""]]",\nb.png,cat,"{boxes}","{avoid}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("boxes", "avoid", "message"),
    [
        (
            '[[30, 5, 60, 20, ""cat""]]',
            "",
            r"line 3: box 1 \(cat\) \[30, 5, 60, 20\] lies outside the 40 x 30 image",
        ),
        ('[[-5, -5, 10, 10, ""cat""]]', "", "lies outside the 40 x 30 image"),
        ('[[1, 1, 10, 10, ""cat""]]', "[[0, 0, 50, 10]]", r"avoid region 1 \[0, 0, 50, 10\] lies outside"),
        ('[[5, 5, 5, 10, ""cat""]]', "", "line 3: malformed boxes: box 1 has zero area"),
        ('[[9, 5, 5, 10, ""cat""]]', "", "line 3: malformed boxes: box 1 is inverted"),
    ],
)
def test_bad_boxes_name_the_file_and_row(tmp_path: Path, boxes: str, avoid: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        ds = open_image_dataset(manifest(tmp_path, boxes, avoid))
        ds[0]  # the good row is served
        ds[1]
    assert "m.csv" in str(err.value)


def test_a_box_within_a_pixel_of_the_border_is_clipped(tmp_path: Path) -> None:
    ds = open_image_dataset(manifest(tmp_path, '[[30.5, 0, 40.6, 30.4, ""cat""]]'))
    _, target = ds[1]
    assert target["boxes"].tolist() == [[30.5, 0.0, 40.0, 30.0]]


def images(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"path,labels\n" + "a.png,caf\xe9\n".encode("latin-1"),
            "not UTF-8 text .*save the manifest as UTF-8",
        ),
        ("path,labels\na.png,cat\n".encode("utf-16"), "not UTF-8 text"),
        (b"path,labels\n", "a header but no data rows"),
        (b"path,labels,labels\na.png,cat,dog\n", r"column 'labels' appears more than once \(columns 2, 3\)"),
        (b'path,labels\na.png,"cat\nb.png,dog\n', r"not well-formed CSV after line \d+ .*unclosed quote"),
    ],
)
def test_malformed_csv_files_are_one_line_errors_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    images(tmp_path)
    (tmp_path / "m.csv").write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        open_image_dataset(tmp_path / "m.csv")
    assert str(err.value).startswith(str(tmp_path / "m.csv"))
    assert "\n" not in str(err.value)


def test_a_cell_longer_than_pythons_csv_limit_is_read(tmp_path: Path) -> None:
    images(tmp_path)
    many = ", ".join('[1, 1, 10, 10, ""cat""]' for _ in range(8000))  # ~190 000 characters
    (tmp_path / "m.csv").write_text(f'path,labels,boxes\na.png,cat,"[{many}]"\n')
    ds = open_image_dataset(tmp_path / "m.csv")
    assert len(ds[0][1]["boxes"]) == 8000
