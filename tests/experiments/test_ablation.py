"""Table 4 experiment on a tiny benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from atcon.cli import main
from atcon.experiments.ablation import VARIANTS, correlation_table, pearson_r


def test_pearson_r_and_table() -> None:
    assert pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    assert math.isnan(pearson_r([1, 2], [1, 2]))
    curves = {"supervised": [3.0, 2.0, 1.0], **{f"{r}/{s}": [1.0, 2.0, 3.0] for r, s in VARIANTS}}
    curves["gb_mask/pearson"] = [0.9, 0.5, 0.1]
    table = correlation_table(curves)
    assert "| gb_mask | 100.0 | -100.0 | -100.0 |" in table
    assert len(table.splitlines()) == 6


def test_ablation_command(tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "abl"
    args = [
        "experiment",
        "ablation",
        "--out",
        str(out),
        "--data",
        str(tiny_voc),
        "--model",
        "small",
        "--image-size",
        "48",
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--seeds",
        "0",
        "1",
    ]
    assert main(args) == 0
    for seed in (0, 1):
        result = json.loads((out / f"seed{seed}" / "ablation.json").read_text())
        assert result["config"]["seed"] == seed and result["config"]["split_seed"] == seed
        assert set(result["curves"]) == {"supervised", *(f"{r}/{s}" for r, s in VARIANTS)}
        assert all(len(v) == 3 and all(math.isfinite(x) for x in v) for v in result["curves"].values())
        assert (out / f"seed{seed}" / "curves.png").stat().st_size > 0
    summary = json.loads((out / "ablation.json").read_text())
    r = summary["correlations"]["gb_mask/pearson"]
    assert len(r) == 2 and f"{100 * sum(r) / 2:.1f} ± " in summary["table"]
    assert "Pearson correlation" in capsys.readouterr().out
    assert len((out / "ablation.csv").read_text().splitlines()) == 1 + 2 * len(VARIANTS)
    assert (out / "ablation.html").stat().st_size > 0
    # A finished seed is reused, not recomputed.
    (out / "seed0" / "curves.png").unlink()
    assert main(args) == 0
    assert not (out / "seed0" / "curves.png").exists()
