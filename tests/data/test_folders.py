"""Class folders: layouts, subjects, sets given by folder, class order, bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atcon.data import DataError, ImageFolderDataset, scan_image_folders


def png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), value, np.uint8)).save(path)


def test_flat_and_subject_layouts(tmp_path: Path) -> None:
    png(tmp_path / "normal" / "p1" / "x1.png")
    png(tmp_path / "normal" / "p1" / "deep" / "x2.png")
    png(tmp_path / "normal" / "x0.png")
    png(tmp_path / "pneumonia" / "p2" / "y1.png", 255)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    png(tmp_path / "normal" / ".ipynb_checkpoints" / "x9.png")
    png(tmp_path / ".cache" / "z.png")
    png(tmp_path / "loose.png")  # outside any class folder
    records = scan_image_folders(tmp_path)
    assert [r.image_id for r in records] == [
        "normal/p1/deep/x2.png", "normal/p1/x1.png", "normal/x0.png", "pneumonia/p2/y1.png",
    ]  # fmt: skip
    assert [r.subject for r in records] == ["p1", "p1", None, "p2"]
    assert all(r.split is None for r in records)
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ("normal", "pneumonia") and ds.class_indices().tolist() == [0, 0, 0, 1]
    x, target = ds[3]
    assert int(target["label"]) == 1 and target["labels"].tolist() == [0.0, 1.0]
    assert x.shape == (3, 6, 8) and float(x.min()) == 1.0
    assert target["boxes"].shape == (0, 4) and target["image_id"] == "pneumonia/p2/y1.png"
    assert ds.target(0)["orig_size"].tolist() == [6, 8]


def test_sets_given_by_folder_and_class_order_file(tmp_path: Path) -> None:
    for split in ("train", "Valid", "test"):
        for cls in ("b", "a"):
            png(tmp_path / split / cls / f"{split}{cls}.png")
    (tmp_path / "classes.txt").write_text("b\na\n")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ("b", "a")
    assert ds.splits == ["val", "val", "test", "test", "train", "train"]
    assert ds.ids[0] == "Valid/a/Valida.png" and ds.class_indices().tolist() == [1, 0] * 3
    # A top-level folder that is not a set name beside set folders is refused (a typo such as
    # tst/ used to make every top-level folder a class).
    png(tmp_path / "extra" / "c" / "e.png")
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match="but extra is not train, val"):
        ImageFolderDataset(tmp_path)


def test_bad_folders_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolderDataset(tmp_path / "none")
    png(tmp_path / "only.png")
    with pytest.raises(FileNotFoundError, match=r"no class folders in .* \(expected .*/<class>/<image>\)"):
        ImageFolderDataset(tmp_path)
    png(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("")
    with pytest.raises(DataError, match=r"dog: class folder holds no images"):
        ImageFolderDataset(tmp_path)
    png(tmp_path / "dog" / "b.png")
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(DataError, match=r"dog/b\.png: unknown class 'dog' \(known: cat\)"):
        ImageFolderDataset(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 bad images"):
        assert ImageFolderDataset(tmp_path, on_error="skip").ids == ["cat/a.png"]
    (tmp_path / "cat" / "a.png").write_bytes(b"not a png")
    (tmp_path / "classes.txt").unlink()
    with pytest.warns(UserWarning, match=r"cat/a\.png: unreadable or corrupt image"):
        assert ImageFolderDataset(tmp_path, on_error="skip").ids == ["dog/b.png"]


def test_a_misspelt_set_folder_is_named(tmp_path: Path) -> None:
    """`train/`, `val/` and `tst/` used to become three classes."""
    for folder in ("train/cat", "val/cat", "tst/cat"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "1.png")
    with pytest.raises(DataError, match=r"train, val look like set folders but tst is not train, val"):
        scan_image_folders(tmp_path)


def test_a_broken_link_is_a_bad_file_not_a_missing_one(tmp_path: Path) -> None:
    """Broken links used to vanish from the data, even under `data info --check`."""
    from atcon.data.check import check_files

    png(tmp_path / "cat" / "a.png")
    png(tmp_path / "dog" / "b.png")
    (tmp_path / "dog" / "c.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"c\.png: broken link: its target .*gone\.png does not exist"):
        ds = ImageFolderDataset(tmp_path)
        for i in range(len(ds)):
            ds[i]
    with pytest.warns(UserWarning, match="skipped 1 bad images"):
        assert len(ImageFolderDataset(tmp_path, on_error="skip")) == 2
    report = check_files(tmp_path)
    assert not report.ok and any("broken link" in str(e) for e in report.bad)
