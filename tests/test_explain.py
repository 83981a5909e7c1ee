"""Maps of trained checkpoints: label text, inputs, chunked maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.attention import gradcam
from atcon.explain import compute_maps, label_text, load_inputs, to_model_maps, truth_text
from atcon.trained_models import load_model

CLASSES = ("cat", "dog", "car")


def test_label_and_truth_text() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0], [0.0, 0.1, 0.0]])
    assert label_text(logits, "multilabel", CLASSES) == ["cat+car", "none", "dog"]
    assert label_text(logits, "multilabel", CLASSES, threshold=0.8) == ["cat", "none", "none"]
    assert label_text(logits, "multiclass", CLASSES) == ["cat", "car", "dog"]
    multi = {"labels": torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])}
    assert truth_text(multi, "multilabel", CLASSES) == ["cat+dog", "none"]
    assert truth_text({"label": torch.tensor([2, 0])}, "multiclass", CLASSES) == ["car", "cat"]


def test_compute_maps_in_chunks_equals_one_batch(runs: dict[str, Path]) -> None:
    m = load_model(runs["a"])
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # more than one chunk
    raw = compute_maps(m, x)
    assert raw.gradcam.shape == (10, 2, 2) and raw.mask is not None and raw.mask.shape == (10, 32, 32)
    torch.testing.assert_close(raw.targets, m.model(x).argmax(1))
    torch.testing.assert_close(raw.gradcam, gradcam(m.model, x, "layer4", raw.targets), rtol=1e-4, atol=1e-6)
    assert bool(((raw.consistency >= -1) & (raw.consistency <= 1)).all())
    shown = to_model_maps(m, x, raw)
    assert shown.cams.shape == (10, 32, 32) and bool((shown.cams >= 0).all()) and len(shown.predictions) == 10


def test_load_inputs(runs: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    m = load_model(runs["a"])
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "red.png")
    inputs = load_inputs(["test:2", str(tmp_path / "red.png")], m)
    assert inputs.x.shape == (3, 3, 32, 32) and inputs.names[2] == "red.png"
    assert inputs.truth[2] == "" and inputs.truth_index is not None and int(inputs.truth_index[2]) == -1
    assert bool((inputs.truth_index[:2] >= 0).all())
    # Red, normalised with the ImageNet statistics.
    torch.testing.assert_close(
        inputs.x[2, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    )
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="is a video, but a is an image model"):
        load_inputs([str(tmp_path / "clip.mp4")], m)
