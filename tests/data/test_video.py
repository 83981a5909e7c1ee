from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from atcon.data import (
    DataError,
    VideoClipDataset,
    clip_train_transform,
    decode_clip,
    read_manifest,
    scan_class_folders,
)
from atcon.data import video as video_module

Writer = Callable[..., Path]


def grey_levels(frames: torch.Tensor) -> list[int]:
    return [round(v) for v in frames.float().mean(dim=(1, 2, 3)).tolist()]


def test_decode_samples_4_fps_from_an_8_fps_video(tmp_path: Path, clip_writer: Writer) -> None:
    path = clip_writer(tmp_path / "a.mp4", num_frames=40, fps=8)
    frames, times = decode_clip(path, num_frames=16, fps=4.0, size=(12, 16))
    assert frames.shape == (16, 3, 12, 16) and frames.dtype == torch.uint8
    # Sample i at i/4 s is source frame 2i, whose grey level is 6 * 2i.
    assert grey_levels(frames) == pytest.approx([12 * i for i in range(16)], abs=2)
    assert times == pytest.approx([i / 4 for i in range(16)])


def test_decode_from_start_offset(tmp_path: Path, clip_writer: Writer) -> None:
    path = clip_writer(tmp_path / "a.mp4", num_frames=40, fps=8)
    frames, _ = decode_clip(path, num_frames=8, fps=4.0, size=None, start=1.0)
    assert frames.shape == (8, 3, 32, 48)
    assert grey_levels(frames) == pytest.approx([6 * (8 + 2 * i) for i in range(8)], abs=2)


def test_video_shorter_than_clip_named(tmp_path: Path, clip_writer: Writer) -> None:
    path = clip_writer(tmp_path / "short.mp4", num_frames=24, fps=8)  # 3 s
    with pytest.raises(DataError, match=r"short\.mp4: video is shorter than the clip"):
        decode_clip(path)
    # Exactly 4 s is enough.
    decode_clip(clip_writer(tmp_path / "exact.mp4", num_frames=32, fps=8))


def test_corrupt_video_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"bad\.mp4: unreadable or corrupt video"):
        decode_clip(bad)


def write_manifest(root: Path, rows: list[str], header: str = "path,label,subject,start,end,boxes") -> Path:
    path = root / "clips.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def make_dataset_tree(root: Path, writer: Writer) -> Path:
    writer(root / "v" / "p1_a.mp4", num_frames=40)
    writer(root / "v" / "p1_b.mp4", num_frames=40, value=lambda k: 200)
    writer(root / "v" / "p2_a.mp4", num_frames=40, value=lambda k: 100)
    (root / "b").mkdir()
    boxes = [[2 * k, 4, 2 * k + 8, 20] for k in range(40)]
    (root / "b" / "p1_a.json").write_text(json.dumps({"fps": 8, "width": 48, "height": 32, "boxes": boxes}))
    return write_manifest(
        root,
        [
            "v/p1_a.mp4,pat,patient1,,,b/p1_a.json",
            "v/p1_b.mp4,rock,patient1,0.5,4.5,",
            "v/p2_a.mp4,pat,patient2,,,",
        ],
    )


def test_manifest_dataset_items(tmp_path: Path, clip_writer: Writer) -> None:
    manifest = make_dataset_tree(tmp_path, clip_writer)
    ds = VideoClipDataset(manifest, frame_size=(16, 24))
    assert ds.classes == ("pat", "rock") and ds.labels == [0, 1, 0]
    assert ds.subjects == ["patient1", "patient1", "patient2"]
    assert ds.ids == ["v/p1_a.mp4", "v/p1_b.mp4@0.5", "v/p2_a.mp4"]
    clip, target = ds[0]
    assert clip.shape == (3, 16, 16, 24) and clip.dtype == torch.float32
    assert clip.min() >= 0.0 and clip.max() <= 1.0
    assert target["label"].item() == 0 and target["label"].dtype == torch.int64
    assert target["subject"] == "patient1" and target["clip_id"] == "v/p1_a.mp4"
    # Sample i shows source frame 2i, whose box is [4i, 4, 4i + 8, 20] at 48x32, halved to 24x16.
    expected = torch.tensor([[2.0 * i, 2, 2.0 * i + 4, 10] for i in range(16)])
    torch.testing.assert_close(target["boxes"], expected)
    assert torch.isnan(ds[2][1]["boxes"]).all()  # no box file
    assert abs(ds[1][0].mean().item() - 200 / 255) < 0.02


def test_manifest_classes_txt_and_ids(tmp_path: Path, clip_writer: Writer) -> None:
    manifest = make_dataset_tree(tmp_path, clip_writer)
    (tmp_path / "classes.txt").write_text("rock\npat\n")
    ds = VideoClipDataset(manifest, ids=["v/p2_a.mp4", "v/p1_b.mp4@0.5"], probe=False)
    assert ds.classes == ("rock", "pat") and ds.labels == [1, 0]
    with pytest.raises(DataError, match="not in the source"):
        VideoClipDataset(manifest, ids=["nope.mp4"])


def test_unknown_class_and_bad_manifest(tmp_path: Path, clip_writer: Writer) -> None:
    manifest = make_dataset_tree(tmp_path, clip_writer)
    with pytest.raises(DataError, match=r"p1_b\.mp4: unknown class 'rock'"):
        VideoClipDataset(manifest, classes=["pat"])
    bad = write_manifest(tmp_path, ["v/p1_a.mp4,pat"], header="path,label")
    with pytest.raises(DataError, match=r"clips\.csv: manifest lacks column\(s\) subject"):
        read_manifest(bad)
    bad = write_manifest(tmp_path, ["v/p1_a.mp4,pat,p1,soon,,"])
    with pytest.raises(DataError, match=r"clips\.csv:2: column 'start' is 'soon'"):
        read_manifest(bad)
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv"):
        VideoClipDataset(tmp_path / "nothing.csv")


def test_bad_clips_raise_or_are_skipped_with_count(tmp_path: Path, clip_writer: Writer) -> None:
    clip_writer(tmp_path / "good.mp4", num_frames=32)
    clip_writer(tmp_path / "short.mp4", num_frames=12)
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 50)
    manifest = write_manifest(
        tmp_path,
        [
            "good.mp4,a,s1,,,",
            "short.mp4,a,s2,,,",
            "corrupt.mp4,a,s3,,,",
            "gone.mp4,a,s4,,,",
            "good.mp4,a,s1,2,3,",
        ],
    )
    with pytest.raises(DataError, match=r"short\.mp4: video is shorter than the clip"):
        VideoClipDataset(manifest)
    with pytest.warns(UserWarning, match="skipped 4 bad clips") as record:
        ds = VideoClipDataset(manifest, on_error="skip")
    assert ds.ids == ["good.mp4"]
    message = str(record[0].message)
    assert "short.mp4" in message and "corrupt.mp4" in message and "and 1 more" in message
    assert [e.path.name for e in ds.skipped if e.path is not None] == [
        "short.mp4",
        "corrupt.mp4",
        "gone.mp4",
        "good.mp4",
    ]


def test_folder_per_class_tree(tmp_path: Path, clip_writer: Writer) -> None:
    clip_writer(tmp_path / "chew" / "alice" / "x.mp4", num_frames=32)
    clip_writer(tmp_path / "chew" / "y.avi", num_frames=32)
    clip_writer(tmp_path / "rock" / "bob" / "z.mp4", num_frames=32)
    (tmp_path / "rock" / "notes.txt").write_text("ignored")
    clips = scan_class_folders(tmp_path)
    assert [(c.clip_id, c.label, c.subject) for c in clips] == [
        ("chew/alice/x.mp4", "chew", "alice"),
        ("chew/y.avi", "chew", "y"),
        ("rock/bob/z.mp4", "rock", "bob"),
    ]
    ds = VideoClipDataset(tmp_path, frame_size=(8, 8))
    assert len(ds) == 3 and ds[2][0].shape == (3, 16, 8, 8)


def test_cache_decodes_each_clip_once(
    tmp_path: Path, clip_writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_dataset_tree(tmp_path, clip_writer)
    calls: list[Path] = []
    real = video_module.decode_clip

    def counting(path: Path, *args: object) -> tuple[torch.Tensor, list[float]]:
        calls.append(Path(path))
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(video_module, "decode_clip", counting)
    cached = VideoClipDataset(manifest, cache=True, frame_size=(8, 8))
    first = cached[0][0]
    assert torch.equal(cached[0][0], first) and len(calls) == 1
    uncached = VideoClipDataset(manifest, frame_size=(8, 8))
    uncached[0], uncached[0]
    assert len(calls) == 3
    cached.preload()
    assert len(calls) == 5  # the two clips not yet cached


def test_train_transform_in_dataset_keeps_layout(tmp_path: Path, clip_writer: Writer) -> None:
    manifest = make_dataset_tree(tmp_path, clip_writer)
    torch.manual_seed(0)
    ds = VideoClipDataset(manifest, frame_size=(20, 20), transform=clip_train_transform())
    clip, target = ds[0]
    assert clip.shape == (3, 16, 20, 20) and type(clip) is torch.Tensor
    assert target["boxes"].shape == (16, 4) and type(target["boxes"]) is torch.Tensor
    from atcon.data import collate

    clips, targets = collate([ds[0], ds[2]])
    assert clips.shape == (2, 3, 16, 20, 20) and targets["label"].tolist() == [0, 0]
    assert targets["boxes"].shape == (2, 16, 4)


def test_without_pyav_reading_a_clip_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from atcon.data.video import probe_video

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    (tmp_path / "a.mp4").write_bytes(b"\0")
    with pytest.raises(OSError, match=r"pip install 'atcon\[video\]'"):
        probe_video(tmp_path / "a.mp4")


def test_skip_leaves_out_a_clip_whose_stream_is_garbage(tmp_path: Path, clip_writer: Writer) -> None:
    """The container probes fine, the frames do not decode: skip used to keep it, and training
    then stopped on it."""
    clip_writer(tmp_path / "good.mp4", num_frames=32)
    clip_writer(tmp_path / "garbled.mp4", num_frames=32)
    data = bytearray((tmp_path / "garbled.mp4").read_bytes())
    mdat = data.find(b"mdat")
    assert mdat > 0
    rng = np.random.default_rng(0)
    data[mdat + 8 :] = rng.integers(0, 256, len(data) - mdat - 8, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.mp4").write_bytes(bytes(data))
    manifest = write_manifest(tmp_path, ["good.mp4,a,s1,,,", "garbled.mp4,a,s2,,,"])
    with pytest.warns(UserWarning, match="skipped 1 bad clips"):
        ds = VideoClipDataset(manifest, on_error="skip")
    assert ds.ids == ["good.mp4"]
