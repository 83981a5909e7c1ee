"""``atcon evaluate`` end to end on tiny checkpoints: printed table, files, report."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def test_thresholds_are_named_apart_and_localization_size_is_a_choice(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["evaluate", "--checkpoint", str(runs["a"]), "--resamples", "20", "--figures", "0"]
    out = tmp_path / "ev"
    args = ["--iou-threshold", "0.3", "--decision-threshold", "0.7", "--measure-at", "original"]
    assert main([*common, *args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F1 at decision threshold 0.7" in printed and "measured at each image's original size" in printed
    text = (out / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    res = json.loads(text)["results"][0]
    assert "threshold" not in res and res["decision_threshold"] == 0.7
    assert res["protocol"]["iou_threshold"] == 0.3 and "threshold" not in res["protocol"]
    assert res["protocol"]["measure_at"] == "original" and "original size" in res["protocol_text"]
    assert "measured at each image's original size" in (out / "results.md").read_text()
    # The IoU threshold's old flag still works, and says its new name.
    assert main([*common, "--threshold", "0.4", "--out", str(tmp_path / "old")]) == 0
    assert "--threshold is now --iou-threshold" in capsys.readouterr().err
    res = json.loads((tmp_path / "old" / "results.json").read_text())["results"][0]
    assert res["protocol"]["iou_threshold"] == 0.4 and res["protocol"]["measure_at"] == "input"
    assert main([*common, "--decision-threshold", "1.5"]) == 2
    assert "decision threshold must be in [0, 1]" in capsys.readouterr().err


def test_evaluate_writes_every_file_atomically_through_results_io(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon import results_io

    written: list[str] = []
    real = results_io.atomic_open

    def recording(path: str | Path, mode: str = "w", **kw: Any) -> Any:
        written.append(Path(path).name)
        return real(path, mode, **kw)

    monkeypatch.setattr(results_io, "atomic_open", recording)
    out = tmp_path / "ev"
    (out / "results.csv").parent.mkdir()
    (out / "results.csv").write_text("stale")
    args = [
        "evaluate",
        "--checkpoint",
        str(runs["a"]),
        "--out",
        str(out),
        "--resamples",
        "5",
        "--figures",
        "0",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["evaluation-a.pt", "report.html", "results.csv", "results.json", "results.md"]
    assert sorted(written) == files  # each one through the atomic writer, no temporary left
    assert (out / "results.csv").read_text().startswith("method,")

    @contextlib.contextmanager
    def crash_after_csv_content(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[Any]:
        with real(path, mode, **kw) as f:
            yield f
            if Path(path).name == "results.csv":  # the content is written, the rename not yet done
                raise OSError(28, "No space left on device")

    before = (out / "results.csv").read_bytes()
    monkeypatch.setattr(results_io, "atomic_open", crash_after_csv_content)
    assert main([*args, "--device", "cpu"]) == 2  # a full disk: the user's machine, one line
    assert (out / "results.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == files  # no temporary left behind
