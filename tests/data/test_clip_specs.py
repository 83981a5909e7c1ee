"""Clip listings: CSV manifests (windows, boxes, ids) and class-folder trees, without decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atcon.data import DataError
from atcon.data.clip_specs import ClipSpec, read_boxes, read_manifest, scan_class_folders


def test_manifest_rows_become_specs_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "clips.csv"
    manifest.write_text(
        "path,label,subject,start,end,boxes,notes\n"
        "v/a.mp4,walk,p1,,,,x\n"
        "v/a.mp4,run,p1,2.5,7,b/a.json,\n"
        "/abs/c.avi, walk ,p2,0,,,\n"
    )
    specs = read_manifest(manifest)
    assert specs[0] == ClipSpec(tmp_path / "m" / "v/a.mp4", "walk", "p1", "v/a.mp4")
    assert specs[1].clip_id == "v/a.mp4@2.5" and (specs[1].start, specs[1].end) == (2.5, 7.0)
    assert specs[1].boxes == tmp_path / "m" / "b/a.json"
    # an absolute path stays absolute; labels are stripped; start 0 keeps the plain id
    assert (
        specs[2].path == Path("/abs/c.avi") and specs[2].label == "walk" and specs[2].clip_id == "/abs/c.avi"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\nv.mp4,a\n", "lacks column"),
        ("path,label,subject\nv.mp4,,s\n", r"clips\.csv:2: empty 'label'"),
        ("path,label,subject,start\nv.mp4,a,s,soon\n", r"clips\.csv:2"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "clips.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "clips.csv")


def test_class_folders_with_and_without_subject_folders(tmp_path: Path) -> None:
    for rel in ("walk/p1.mp4", "walk/p2/take1.MOV", "run/p3.avi", "run/deep/er/x.mp4", "run/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    specs = scan_class_folders(tmp_path)
    assert [(s.label, s.subject, s.clip_id) for s in specs] == [
        ("run", "p3", "run/p3.avi"),
        ("walk", "p1", "walk/p1.mp4"),
        ("walk", "p2", "walk/p2/take1.MOV"),
    ]
    (tmp_path / "empty" / "walk").mkdir(parents=True)
    (tmp_path / "empty" / "top.mp4").write_bytes(b"")  # a video outside any class folder is no clip
    with pytest.raises(FileNotFoundError, match="no video files"):
        scan_class_folders(tmp_path / "empty")


def test_box_files(tmp_path: Path) -> None:
    good = tmp_path / "b.json"
    good.write_text('{"fps": 8, "width": 40, "height": 30, "boxes": [[1, 2, 3, 4], [5, 6, 7, 8]]}')
    fps, width, height, boxes = read_boxes(good)
    assert (fps, width, height) == (8.0, 40, 30) and boxes.dtype == np.float32 and boxes.shape == (2, 4)
    (tmp_path / "bad.json").write_text('{"fps": 8}')
    with pytest.raises(DataError, match="malformed box file"):
        read_boxes(tmp_path / "bad.json")
