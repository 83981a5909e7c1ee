"""Bad files in the user's data: found before training (--check), skipped on request, named when missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atcon.cli import main


@pytest.fixture
def voc_copy(tiny_voc: Path, tmp_path: Path) -> Path:
    out = tmp_path / "voc"
    shutil.copytree(tiny_voc, out)
    return out


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def _truncate(image: Path) -> None:
    image.write_bytes(image.read_bytes()[:200])


def test_info_check_lists_every_bad_file(voc_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(voc_copy), "--check"]) == 0
    assert f"{voc_copy}: all 48 images decode" in capsys.readouterr().out
    corrupt = voc_copy / "JPEGImages" / f"{_ids(voc_copy, 'train')[3]}.jpg"
    _truncate(corrupt)
    (voc_copy / "JPEGImages" / f"{_ids(voc_copy, 'val')[0]}.jpg").write_text("not an image")
    missing = voc_copy / "Annotations" / f"{_ids(voc_copy, 'test')[1]}.xml"
    missing.unlink()
    assert main(["data", "info", str(voc_copy), "--check"]) == 1
    out = capsys.readouterr().out
    assert "3 of 48 images are bad" in out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(listed) == 3
    assert any(line.startswith(f"{corrupt}: unreadable or corrupt image") for line in listed)
    assert any(line.startswith(f"annotation not found: {missing}") for line in listed)
    assert all("Errno" not in line for line in listed)


def test_not_found_errors_name_the_path(
    voc_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "info", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found: " in err and str(tmp_path / "missing.csv") in err
    missing = voc_copy / "Annotations" / f"{_ids(voc_copy, 'train')[0]}.xml"
    missing.unlink()
    assert main(["data", "info", str(voc_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not found: {missing}" in err and "Errno" not in err


def test_on_bad_file_skip_trains_without_the_bad_image(
    voc_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from atcon.train import TrainConfig
    from atcon.train.data import task_split

    cfg = TrainConfig(data=str(voc_copy), model="small", image_size=32, per_class=2)
    split = task_split(cfg)
    split.save(tmp_path / "split.json")
    bad = voc_copy / "JPEGImages" / f"{split.train[0]}.jpg"
    _truncate(bad)
    args = ["train", "--data", str(voc_copy), "--split", str(tmp_path / "split.json"), "--model", "small"]
    args += ["--image-size", "32", "--epochs", "1", "--batch-size", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "raise")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: unreadable or corrupt image" in err
    assert not (tmp_path / "raise").exists()
    with pytest.warns(UserWarning, match=rf"skipped 1 bad images: {bad}: unreadable or corrupt image"):
        assert main([*args, "--on-bad-file", "skip", "--out", str(tmp_path / "skip")]) == 0
    assert 'on_bad_file = "skip"' in (tmp_path / "skip" / "config.toml").read_text()
