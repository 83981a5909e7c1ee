"""``atcon finetune --unlabeled DIR``: a folder of unlabeled images or clips drives fine-tuning."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atcon.cli import main
from atcon.data import FashionEventsConfig, VideoClipDataset, generate_fashion_events
from atcon.train import TrainConfig, train
from atcon.train.training_state import load_checkpoint
from tests.conftest import tiny_fashion


def _steps_and_history(run: Path) -> tuple[int, list[dict[str, object]]]:
    state = load_checkpoint(run / "checkpoints" / "last.pt")["state"]
    return int(state["global_step"]), list(state["history"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fashion-events folder (manifest.csv with labels, subjects and boxes, videos/<class>/)."""
    root = tmp_path_factory.mktemp("clips") / "events"
    config = FashionEventsConfig(num_subjects=6, frame_size=24, num_frames=16, fps=4)  # 4 s clips
    return generate_fashion_events(root, config=config, seed=0, source=tiny_fashion(n_per_class=3))


def test_image_folder_sets_the_steps_and_feeds_label_free_selection(tiny_voc: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    (pool / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):  # 10 images, some in a subfolder, plus a file that is not an image
        where = pool / "nested" if i % 3 == 0 else pool
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(where / f"u{i}.png")
    (pool / "readme.txt").write_text("not an image")
    base = TrainConfig(data=str(tiny_voc), model="small", image_size=32, per_class=2, epochs=1, batch_size=2)
    train(base, tmp_path / "base", progress=False)
    init = str(tmp_path / "base" / "checkpoints" / "best.pt")
    common = ["--data", str(tiny_voc), "--model", "small", "--image-size", "32", "--per-class", "2"]
    common += ["--batch-size", "2", "--epochs", "2", "--init", init, "--no-progress"]
    # Label-free selection (the default) holds out 20% of the folder (2 of 10 images): 8 train,
    # 4 steps an epoch.
    args = ["finetune", *common, "--unlabeled", str(pool)]
    assert main([*args, "--out", str(tmp_path / "lf")]) == 0
    steps, history = _steps_and_history(tmp_path / "lf")
    assert steps == 2 * math.ceil(8 / 2)
    assert all("lf_agreement" in row and "lf_consistency" in row for row in history)
    # The paper's recipe (selection on labels) trains on the whole folder: 5 steps an epoch.
    args = [*args, "--select", "labels", "--anchor-weight", "0"]
    assert main([*args, "--out", str(tmp_path / "labels")]) == 0
    assert _steps_and_history(tmp_path / "labels")[0] == 2 * math.ceil(10 / 2)


def test_clip_folder_fine_tunes_a_video_model(clips: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    videos = sorted(p for p in clips.rglob("*") if p.suffix == ".mp4")
    assert len(videos) >= 6
    for k, video in enumerate(videos[:6]):  # the same clips without their folders (labels) or manifest
        (pool / f"g{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(video, pool / f"g{k % 2}" / f"clip{k}.mp4")
    # The folder is read through its manifest, not as class folders ("videos" is no class).
    assert VideoClipDataset(clips, probe=False).classes == VideoClipDataset(clips / "manifest.csv").classes
    base = TrainConfig(
        data=str(clips), model="small3d", image_size=24, per_class=1, epochs=1, batch_size=2, augment=False
    )
    train(base, tmp_path / "base", progress=False)
    init = str(tmp_path / "base" / "checkpoints" / "best.pt")
    cfg = base.replace(
        strategy="finetune", weights=init, unlabeled=str(pool), select="label-free", anchor_weight=1.0
    )
    summary = train(cfg, tmp_path / "ft", progress=False)
    steps, history = _steps_and_history(tmp_path / "ft")
    # 6 clips, 20% (1) held out for the label-free signals: 5 train, 3 batches of 2 (the last wraps).
    assert steps == math.ceil(5 / 2) and summary["epochs_run"] == 1
    assert history and all(0.0 <= float(row["lf_agreement"]) <= 1.0 for row in history)  # type: ignore[arg-type]
