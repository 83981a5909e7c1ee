"""A Swin Transformer (channels-last stages) through train, finetune and evaluate from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from atcon.cli import main


def test_swin_trains_finetunes_and_evaluates(tiny_voc: Path, tmp_path: Path) -> None:
    common = ["--data", str(tiny_voc), "--model", "swin_t", "--image-size", "64", "--per-class", "1"]
    common += ["--batch-size", "2", "--epochs", "1", "--no-progress", "--device", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "sup")]) == 0
    init = str(tmp_path / "sup" / "checkpoints" / "best.pt")
    assert main(["finetune", *common, "--weights", init, "--out", str(tmp_path / "ft")]) == 0
    out = tmp_path / "ev"
    checkpoint = str(tmp_path / "ft" / "checkpoints" / "best.pt")
    assert main(["evaluate", "--checkpoint", checkpoint, "--out", str(out), "--resamples", "20"]) == 0
    result = json.loads((out / "results.json").read_text())
    text = json.dumps(result)
    assert '"iou"' in text and '"f1_macro"' in text  # localization ran on the (B, H, W, C) stage output
