"""``atcon explain`` end to end: test items and image files, one or two checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atcon.attention import gradcam
from atcon.cli import main
from atcon.trained_models import checkpoint_dataset, load_model


def test_explain_test_items_side_by_side(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                "test:2",
                "--checkpoint",
                str(runs["b"]),
                "--compare",
                str(runs["a"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and pngs[0].name.startswith("000-test000-")
    raw = torch.load(out / "maps.pt", weights_only=True)
    assert len(raw["inputs"]) == 2 and raw["ground_truth"][0]
    first = raw["models"][0]
    assert first["name"] == "b" and first["layer"] == "layer4" and len(first["checkpoint_sha256"]) == 64
    assert first["gradcam"].shape == (2, 2, 2) and first["guided_backprop"].shape == (2, 3, 32, 32)
    # The raw maps are the signed Grad-CAM of the target classes (no ReLU).
    model = load_model(runs["b"]).model
    x = torch.stack([checkpoint_dataset(load_model(runs["b"]), "test")[i][0] for i in range(2)])
    ref = gradcam(model, x, "layer4", targets=first["target_class"])
    torch.testing.assert_close(first["gradcam"], ref, rtol=1e-4, atol=1e-6)
    assert first["target_class"].shape == (2,) and first["mask"].shape == (2, 32, 32)
    printed = capsys.readouterr().out
    assert "GT" in printed and "| b:" in printed and "| a:" in printed


def test_explain_image_files_and_gt_target(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        Image.new("RGB", (40, 30), (40 * k, 200, 90)).save(folder / f"im{k}.png")
    out = tmp_path / "ex"
    assert main(["explain", str(folder), "test:1", "--checkpoint", str(runs["a"]), "--out", str(out)]) == 0
    raw = torch.load(out / "maps.pt", weights_only=True)
    assert raw["inputs"][0].startswith("test000") and raw["inputs"][1:] == ["im0.png", "im1.png"]
    assert raw["ground_truth"][1:] == ["", ""]
    assert len(list(out.glob("*.png"))) == 3
    # --target gt needs ground truth for every input.
    assert (
        main(["explain", str(folder), "--checkpoint", str(runs["a"]), "--target", "gt", "--out", str(out)])
        == 2
    )
    assert (
        main(["explain", "test:2", "--checkpoint", str(runs["a"]), "--target", "gt", "--out", str(out)]) == 0
    )
