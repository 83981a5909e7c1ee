"""The examples in ``examples/`` run as shipped (tiny synthetic data) and keep what the selector kept."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARGS = [
    "--images",
    "24",
    "--image-size",
    "32",
    "--pretrain-epochs",
    "1",
    "--epochs",
    "2",
    "--batch-size",
    "8",
]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(result: dict[str, float], out: Path) -> None:
    assert json.loads((out / "result.json").read_text()) == pytest.approx(result)
    assert 0 <= result["start_accuracy"] <= 1 and 0 <= result["final_accuracy"] <= 1
    assert 2 <= result["evaluations"] <= 3  # the start and one evaluation per epoch (or an early stop)
    assert 0 <= result["kept_evaluation"] < result["evaluations"]
    # The weights in the end are the kept evaluation's: the start's exactly, or moved.
    assert (result["moved"] == 0) == (result["kept_evaluation"] == 0)


@pytest.mark.timeout(240)
def test_plain_pytorch(tmp_path: Path) -> None:
    result = load("plain_pytorch").main([*ARGS, "--out", str(tmp_path)])
    check(result, tmp_path)
    state = torch.load(tmp_path / "finetuned.pt", weights_only=True)
    assert "fc.weight" in state and all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.timeout(240)
def test_lightning_module(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    result = load("lightning_module").main([*ARGS, "--out", str(tmp_path)])
    check(result, tmp_path)
    (metrics,) = tmp_path.glob("lightning/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    steps = [float(r["consistency"]) for r in rows if r.get("consistency")]
    assert len(steps) >= 2 and all(math.isfinite(v) and -1 <= v <= 1 for v in steps)
    assert any(r.get("held_out_consistency") for r in rows)  # the selector's signals are logged


@pytest.mark.timeout(240)
def test_hf_trainer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    result = load("hf_trainer").main([*ARGS, "--out", str(tmp_path)])
    check(result, tmp_path)
