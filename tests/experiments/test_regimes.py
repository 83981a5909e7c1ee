"""The safety and regimes experiments on a tiny generated benchmark."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atcon.evaluate.bootstrap import BootstrapResult
from atcon.experiments.aggregate import Row
from atcon.experiments.methods import GUARDED, ExperimentConfig
from atcon.experiments.regimes import FLOORS, SAFETY, _lift, regime_cells, selection_regret
from atcon.experiments.runner import Store
from atcon.experiments.suite import run_experiment
from atcon.train.config import TrainConfig


@pytest.fixture()
def base(tiny_voc: Path) -> TrainConfig:
    return TrainConfig(data=str(tiny_voc), model="small", image_size=32, epochs=1, batch_size=2, per_class=1)


def test_safety_runs_every_variant_from_one_start_and_measures_regret(
    base: TrainConfig, tmp_path: Path
) -> None:
    exp = ExperimentConfig(
        seeds=(0,), at_per_class=1, finetune_epochs=2, resamples=30, finetune_lr=1e-3, pool=10
    )
    outcome = run_experiment("safety", base, exp, tmp_path, progress=False)
    assert {r["method"] for r in outcome.rows} == {"Baseline + Aug", *SAFETY}
    runs = sorted((tmp_path / "runs").iterdir())
    assert sum(p.name.startswith("supervised") for p in runs) == 1 and len(runs) == 1 + len(SAFETY)
    configs = {p.name: (p / "config.toml").read_text() for p in runs}
    assert all('unlabeled = "pool:10"' in c for n, c in configs.items() if n.startswith("finetune"))
    assert sum('select = "last"' in c for c in configs.values()) == 2
    assert sum("anchor_weight = 1.0" in c for c in configs.values()) == 2
    for p in runs:
        if p.name.startswith("finetune"):
            split = json.loads((p / "split.json").read_text())
            assert len(split["unlabeled"]) == 10
            summary = json.loads((p / "summary.json").read_text())
            if 'select = "last"' in configs[p.name]:
                assert summary["best_epoch"] == 1  # the final model
    meta = json.loads((tmp_path / "results" / "safety.json").read_text())
    assert len(meta["meta"]["regret"]) == len(SAFETY)
    assert all(r["regret"] >= 0 for r in meta["meta"]["regret"])
    assert "regret" in outcome.markdown
    # The floors table: the two label-free variants; at the runs' own floors (0.9, 0.95) the
    # replayed regret is the measured one.
    floors = {f["runs"]: f for f in meta["meta"]["floors"]}
    assert set(floors) == {"unguarded, label-free selection", "guarded, label-free selection"}
    measured = {r["method"]: r["regret"] for r in meta["meta"]["regret"]}
    for label, f in floors.items():
        assert f["floors"][FLOORS.index((0.9, 0.95))] == [0.9, 0.95]
        assert f["regret"][FLOORS.index((0.9, 0.95))] == pytest.approx(measured[label], abs=1e-6)
        assert all(r >= 0 for r in f["regret"])
    assert "under other floors" in outcome.markdown
    with pytest.raises(ValueError, match="--pool"):
        run_experiment("safety", base, ExperimentConfig(seeds=(0,)), tmp_path / "x", progress=False)


def test_selection_regret_reads_the_selected_row_of_the_selection_metric(tmp_path: Path) -> None:
    rows = [
        {"epoch": -1, "val_map": 0.40, "val_f1_macro": 0.20, "best": True},
        {"epoch": 0, "val_map": 0.45, "val_f1_macro": 0.50, "best": False},
        {"epoch": 1, "val_map": 0.42, "val_f1_macro": 0.30, "best": True},
        {"epoch": 2, "val_map": 0.30, "val_f1_macro": 0.10, "best": False},
    ]
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "val_map", "val_f1_macro", "best"])
        w.writeheader()
        w.writerows(rows)

    class Rec:
        dir = tmp_path
        result = SimpleNamespace(task="multilabel")

    r = selection_regret(Rec())  # type: ignore[arg-type]
    assert r is not None and r["selected_epoch"] == 1 and r["metric"] == "map"
    assert r["regret"] == pytest.approx(3.0) and r["start"] == pytest.approx(40.0)
    # Single-label runs select on macro F1, so their regret is measured on it.
    Rec.result = SimpleNamespace(task="multiclass")
    r = selection_regret(Rec())  # type: ignore[arg-type]
    assert r is not None and r["metric"] == "f1_macro"
    assert r["regret"] == pytest.approx(20.0) and r["start"] == pytest.approx(20.0)


def test_regime_cells_vary_one_factor_at_a_time(base: TrainConfig) -> None:
    exp = ExperimentConfig(at_per_class=4)
    cells = regime_cells(base.replace(image_size=64), exp)
    assert cells[0].factor == "base" and cells[0].pool == 1000 and cells[0].finetune == GUARDED
    others = cells[1:]
    assert {c.factor for c in others} == {
        "source epochs", "samples/class", "unlabeled data", "guard", "image size", "model",
    }  # fmt: skip
    root = cells[0]
    for c in others:  # exactly one difference from the base cell
        diffs = [
            k for k in ("train", "source_epochs", "pool", "finetune") if getattr(c, k) != getattr(root, k)
        ]
        assert len(diffs) == 1, c
    with pytest.raises(ValueError, match="unknown factor"):
        regime_cells(base, exp, ["colour"])


def _row(values: dict[str, float]) -> Row:
    metrics = {
        k: BootstrapResult(torch.tensor(v), torch.tensor(v - 0.01), torch.tensor(v + 0.01))
        for k, v in values.items()
    }
    return SimpleNamespace(metrics=metrics)  # type: ignore[return-value]


def test_lift_needs_a_positive_significant_difference() -> None:
    method, ref = _row({"f1_macro": 0.5, "iou": 0.3}), _row({"f1_macro": 0.4, "iou": 0.35})
    assert _lift({"f1_macro": 0.01, "iou": 0.01}, method, ref) == ["f1_macro"]
    assert _lift({"f1_macro": 0.2, "iou": 0.01}, method, ref) == []


def test_regimes_command_on_a_subset_of_factors(tiny_voc: Path, tmp_path: Path) -> None:
    from atcon.cli import main

    args = ["experiment", "regimes", "--out", str(tmp_path), "--data", str(tiny_voc), "--image-size", "32",
            "--epochs", "1", "--finetune-epochs", "1", "--seeds", "0", "--at-per-class", "1", "--resamples", "30",
            "--batch-size", "2", "--pool", "8", "--factors", "guard", "data"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "results" / "regimes.json").read_text())
    groups = {r["group"] for r in result["rows"]}
    assert groups == {"base", "guard = off", "unlabeled data = the labeled images only"}
    store = Store(tmp_path, progress=False)
    assert store.out == tmp_path


def test_regimes_runs_the_controls_where_a_cell_lifts_unless_told_not_to(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from atcon.cli import main
    from atcon.experiments import regimes

    monkeypatch.setattr(regimes, "_lift", lambda p, method, ref: ["iou"])  # every cell "lifts"
    args = ["experiment", "regimes", "--out", str(tmp_path), "--data", str(tiny_voc), "--image-size", "32",
            "--epochs", "1", "--finetune-epochs", "1", "--seeds", "0", "--at-per-class", "1", "--resamples", "30",
            "--batch-size", "2", "--pool", "8", "--factors", "data"]  # fmt: skip

    def mask_sources() -> list[str]:
        configs = [tomllib.loads((r / "config.toml").read_text()) for r in (tmp_path / "runs").iterdir()]
        return sorted(c["mask_source"] + ("+detach" if c["detach_mask"] else "") for c in configs)

    assert main([*args, "--no-controls"]) == 0
    text = (tmp_path / "results" / "regimes.md").read_text()
    assert text.count("iou (mask controls not run)") == 2 and "Mask controls in" not in text
    assert set(mask_sources()) == {"guided_backprop"}
    assert main(args) == 0  # the same cells, now with their controls (the earlier runs are reused)
    text = (tmp_path / "results" / "regimes.md").read_text()
    assert "not run" not in text and text.count("Mask controls in") == 2
    found = mask_sources()
    for control in ("random_network", "sobel", "random_smooth", "guided_backprop+detach"):
        assert found.count(control) == 2, control


def test_no_controls_is_refused_outside_regimes(capsys: pytest.CaptureFixture[str]) -> None:
    from atcon.cli import main

    assert main(["experiment", "controls", "--out", "x", "--no-controls"]) == 2
    assert "--no-controls applies to the regimes and shortcut experiments only" in capsys.readouterr().err
