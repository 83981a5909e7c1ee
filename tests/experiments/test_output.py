"""An experiment's result files are strict JSON and say where localization was measured."""

from __future__ import annotations

import math
from pathlib import Path

from atcon.experiments.output import write_outcome
from atcon.experiments.runner import Store
from tests.test_json import strict_loads


def test_results_json_writes_null_for_undefined_numbers(tmp_path: Path) -> None:
    store = Store(tmp_path, device="cpu", progress=False)
    row = {"group": "1", "method": "+ Attention", "metric": "iou", "value": math.nan, "low": math.nan,
           "high": math.nan, "seed_sd": math.nan, "seeds": [math.nan, 0.5], "reference": "",
           "p_value": math.nan, "best_epochs": [-1, 0]}  # fmt: skip
    meta = {"references": {}, "train_config": {"lr": None, "holdout": 0.2}}
    outcome = write_outcome(
        store, "table", "Table", [("IoU", "| method | IoU |\n|---|---:|\n| a | n/a |")], [row], meta, 1.0
    )
    data = strict_loads((tmp_path / "results" / "table.json").read_text())
    assert data["rows"][0]["value"] is None and data["rows"][0]["seeds"] == [None, 0.5]
    assert data["rows"][0]["p_value"] is None and data["meta"]["train_config"]["holdout"] == 0.2
    assert "measured at the network's input size" in outcome.markdown
