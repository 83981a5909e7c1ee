"""``atcon evaluate`` end to end on tiny checkpoints: printed table, files, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atcon.cli import main
from atcon.evaluate.pipeline import EvaluationResult


def test_evaluate_compare_writes_everything(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(runs["b"]),
            "--compare",
            str(runs["a"]),
            "--out",
            str(out),
            "--resamples",
            "50",
            "--figures",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| a (ref.) |" in printed and "| b |" in printed and "Localization protocol" in printed
    assert "paired bootstrap test vs. a" in printed and "b vs. a:" in printed
    for name in (
        "results.json",
        "results.md",
        "results.csv",
        "report.html",
        "evaluation-a.pt",
        "evaluation-b.pt",
    ):
        assert (out / name).is_file(), name
    info = json.loads((out / "results.json").read_text())
    assert info["reference"] == "a" and [r["name"] for r in info["results"]] == ["a", "b"]
    res = info["results"][0]
    assert (
        res["n_items"] == 6
        and res["protocol"]["iou_threshold"] == 0.5
        and res["bootstrap"]["n_resamples"] == 50
    )
    assert set(res["metrics"]) >= {"f1_macro", "f1_micro", "map", "f1_per_class", "iou", "pointing", "energy"}
    assert set(info["comparisons"]["b"]["f1_macro"]) == {"p_value", "star"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # attention examples and training curves
    assert "Per-class F1" in html
    back = EvaluationResult.load(out / "evaluation-a.pt")
    assert back.n_items == 6 and back.classes == ("disc", "bar")


def test_evaluate_single_val_split_default_out(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", "--checkpoint", str(runs["a"]), "--split", "val", "--resamples", "20", "--figures", "0"]
    )
    assert code == 0
    out = runs["a"].parent.parent / "evaluation-val"
    assert (out / "results.md").read_text().startswith("# Evaluation (val)")
    assert "*" not in capsys.readouterr().out.split("Values in %")[0].split("\n", 3)[-1]


def test_evaluate_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "not an atcon training checkpoint" in capsys.readouterr().err
