"""``fashion-events``: deterministic clips, motion per event, subject-disjoint splits, lossless video."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from atcon.data import EVENTS, FashionEventsConfig, VideoClipDataset, decode_clip, generate_fashion_events
from atcon.data.drawing import background
from atcon.data.fashion_events import render_event_clip, write_video
from tests.data.conftest import digest

Source = Callable[..., tuple[np.ndarray, np.ndarray]]
TINY_CLIPS = FashionEventsConfig(num_subjects=3, frame_size=32)


def test_fashion_events_deterministic_round_trip(tmp_path: Path, fashion_source: Source) -> None:
    source = fashion_source()
    a = generate_fashion_events(tmp_path / "a", config=TINY_CLIPS, seed=0, source=source)
    b = generate_fashion_events(tmp_path / "b", config=TINY_CLIPS, seed=0, source=source)
    assert digest(a) == digest(b)
    ds = VideoClipDataset(a / "manifest.csv", frame_size=(32, 32))
    assert len(ds) == 15 and ds.classes == EVENTS
    assert sorted(set(ds.subjects)) == ["s0000", "s0001", "s0002"]
    assert sorted(ds.labels) == sorted(list(range(5)) * 3)
    by_event: dict[str, torch.Tensor] = {}
    for i in range(len(ds)):
        clip, target = ds[i]
        assert clip.shape == (3, 16, 32, 32)
        assert torch.isfinite(target["boxes"]).all()
        if target["subject"] == "s0000":
            by_event[EVENTS[int(target["label"])]] = target["boxes"]
    centres = {e: (b[:, :2] + b[:, 2:]) / 2 for e, b in by_event.items()}
    widths = {e: b[:, 2] - b[:, 0] for e, b in by_event.items()}
    assert centres["still"].std(0).max() < 1.0
    assert centres["rocking"][:, 0].std() > 2.0  # sways in x
    assert centres["patting"][:, 1].std() > 1.0  # moves in y
    assert widths["approaching"][-1] > 1.5 * widths["approaching"][0]  # grows
    # Splits: three subject-disjoint sets covering every clip.
    sets = [(a / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")]
    assert sorted(i for s in sets for i in s) == sorted(ds.ids)
    owners = [{ds.subjects[ds.ids.index(i)] for i in s} for s in sets]
    assert all(len(o) == 1 for o in owners) and len(set.union(*owners)) == 3


def test_decoded_frames_match_rendered_frames(tmp_path: Path, fashion_source: Source) -> None:
    images, _ = fashion_source()
    rng = np.random.default_rng(0)
    room = background(rng, 32, 32, contrast=0.4, grain=4.0)
    frames, _ = render_event_clip(rng, images[0], np.array([255.0, 0, 0]), room, "spinning", images)
    write_video(tmp_path / "x.mp4", frames, fps=4)
    decoded, _ = decode_clip(tmp_path / "x.mp4", size=None)
    diff = (decoded.permute(0, 2, 3, 1).int() - torch.from_numpy(frames).int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 4  # lossless up to YUV rounding
