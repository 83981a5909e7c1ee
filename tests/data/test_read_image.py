"""The one image reader: orientation as viewed, float and 16-bit files in range, decompression
bombs named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atcon.data import load_images
from atcon.data._common import DataError, read_image_rgb, verify_image


def rotated_jpeg(path: Path) -> None:
    """40 wide x 20 high, left half red, tagged "rotate 90 clockwise to view" (EXIF orientation 6)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20, 0] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rotated_jpeg(tmp_path / "phone.jpg")
    image = read_image_rgb(tmp_path / "phone.jpg")
    assert tuple(image.shape) == (3, 40, 20)  # as viewed: 20 wide, 40 high
    red = image[0].float()
    assert red[:18].mean() > 200 and red[22:].mean() < 50  # the red half is now on top
    batch, _ = load_images([tmp_path / "phone.jpg"], 32)  # maps/explain read the same way
    assert batch[0, 0, :14].mean() > 0.8 and batch[0, 0, 18:].mean() < 0.2


def test_a_decompression_bomb_is_named_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (40, 40)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px is more than twice the limit
    for read in (read_image_rgb, verify_image):
        with pytest.raises(DataError, match=r"huge\.png: too large to decode safely .*--on-bad-file skip"):
            read(tmp_path / "huge.png")


def test_float_images_in_unit_range_are_scaled(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    image = read_image_rgb(tmp_path / "f.tif")
    assert int(image.min()) == 0 and int(image.max()) == 255  # Pillow alone truncates it to all zeros
    Image.fromarray(values * 1000, mode="F").save(tmp_path / "g.tif")
    assert int(read_image_rgb(tmp_path / "g.tif").max()) == 255  # beyond [0, 255]: clipped


def test_a_datasets_sizes_are_the_viewed_ones(tmp_path: Path) -> None:
    from atcon.data.formats import open_image_dataset

    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir()
    rotated_jpeg(tmp_path / "data" / "a" / "1.jpg")
    rotated_jpeg(tmp_path / "data" / "b" / "2.jpg")
    ds = open_image_dataset(tmp_path / "data")
    assert ds.image_size(0) == (40, 20)
    image, _ = ds[0]
    assert tuple(image.shape[-2:]) == (40, 20)


def test_check_reports_a_file_that_decodes_flat_though_its_pixels_vary(tmp_path: Path) -> None:
    """A 16-bit image whose values all lie below 128 trains as a black square: --check says so."""
    from atcon.data.check import check_files

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / cls / "ok.png")
    dim = np.tile(np.arange(0, 120, 15, dtype=np.uint16), (8, 1))  # 0-105 of 65535
    Image.fromarray(dim).save(tmp_path / "b" / "dim16.png")
    report = check_files(tmp_path)
    assert [e.path.name for e in report.bad if e.path is not None] == ["dim16.png"]
    assert "decodes to a constant image (0) though its stored uint16 pixels range 0-105" in str(report.bad[0])
