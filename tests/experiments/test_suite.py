"""The experiment runner and the paper's experiments on a tiny benchmark."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from atcon.cli import main
from atcon.experiments.runner import Store
from atcon.experiments.suite import CONTROLS, ExperimentConfig, run_experiment
from atcon.train.config import TrainConfig


@pytest.fixture()
def base(tiny_voc: Path) -> TrainConfig:
    return TrainConfig(data=str(tiny_voc), model="small", image_size=32, epochs=1, batch_size=2, per_class=1)


EXP = ExperimentConfig(seeds=(0, 1), per_class=(1, 2), at_per_class=1, finetune_epochs=1, resamples=50,
                       finetune_lr=1e-4)  # fmt: skip


def test_classification_runs_share_splits_skip_when_done_and_write_tables(
    base: TrainConfig, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    outcome = run_experiment("classification", base, EXP, out, progress=False)
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2 * 2 * 3  # per_class x seeds x methods
    for run in runs:
        record = json.loads((run / "record.json").read_text())
        split = json.loads((run / "split.json").read_text())
        tags = record["tags"]
        shared = out / "splits" / f"{Path(base.data).name}-d0-pc{tags['per_class']}-s{tags['seed']}.json"
        assert split["train"] == json.loads(shared.read_text())["train"]
        assert record["train_seconds"] > 0 and (run / "test_eval.pt").is_file()
    # Seeds draw different few-shot sets; every method of a cell reads the same one.
    s0 = json.loads((out / "splits" / f"{Path(base.data).name}-d0-pc2-s0.json").read_text())["train"]
    s1 = json.loads((out / "splits" / f"{Path(base.data).name}-d0-pc2-s1.json").read_text())["train"]
    assert s0 != s1
    finetuned = [r for r in runs if r.name.startswith("finetune-")]
    assert len(finetuned) == 4 and all("augment = true" in (r / "config.toml").read_text() for r in finetuned)
    md = (out / "results" / "classification.md").read_text()
    assert "| 1 |" in md and "| 2 |" in md and "Baseline + Aug + Attention" in md
    rows = json.loads((out / "results" / "classification.json").read_text())["rows"]
    f1 = [r for r in rows if r["metric"] == "f1_macro"]
    assert len(f1) == 2 * 3 and all(len(r["seeds"]) == 2 for r in f1)
    # Selected epochs come from the runs' summaries (-1 = fine-tuning kept its starting model).
    for r in f1:
        assert len(r["best_epochs"]) == 2
        for epoch in r["best_epochs"]:
            assert -1 <= epoch < (EXP.finetune_epochs if "Attention" in r["method"] else base.epochs)
    assert "selected epoch" in md
    att = next(r for r in f1 if r["method"] == "Baseline + Aug + Attention")
    assert att["reference"] == "Baseline + Aug" and 0 < att["p_value"] <= 1
    assert att["value"] == pytest.approx(sum(att["seeds"]) / 2, abs=1e-5)
    for suffix in ("csv", "html", "png"):
        assert (out / "results" / f"classification.{suffix}").stat().st_size > 0
    assert len(outcome.rows) == len(rows)
    # A second call trains nothing: every run is reused (checkpoints untouched).
    stamps = {r.name: (r / "checkpoints" / "best.pt").stat().st_mtime_ns for r in runs}
    store = Store(out, n_resamples=50, progress=False)
    from atcon.experiments.suite import run_classification

    run_classification(base, EXP, store)
    assert not any(r.trained_now for r in store.records())
    assert stamps == {r.name: (r / "checkpoints" / "best.pt").stat().st_mtime_ns for r in runs}


def test_controls_and_strategies_reuse_the_baseline(base: TrainConfig, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    exp = ExperimentConfig(seeds=(0,), at_per_class=1, finetune_epochs=1, resamples=50, finetune_lr=1e-4)
    controls = run_experiment("controls", base, exp, out, progress=False)
    methods = {r["method"] for r in controls.rows}
    assert methods == {"Baseline + Aug", *CONTROLS}
    strategies = run_experiment("strategies", base, exp, out, progress=False)
    assert {r["method"] for r in strategies.rows} == {
        "Baseline + Aug", "fine-tune (after supervised)", "combined (L + L_con)", "alternated",
    }  # fmt: skip
    # One supervised baseline; the method's fine-tuning is the same run in both experiments.
    names = [p.name for p in (out / "runs").iterdir()]
    assert sum(n.startswith("supervised-small") for n in names) == 1
    assert len(names) == 1 + len(CONTROLS) + 2  # fine-tuning with the method's mask is run once
    configs = {n: (out / "runs" / n / "config.toml").read_text() for n in names}
    assert any('mask_source = "sobel"' in c for c in configs.values())
    assert any('mask_source = "random_network"' in c for c in configs.values())
    assert any("detach_mask = true" in c for c in configs.values())
    assert "* vs (a) Guided Backprop mask (method)" in controls.markdown


def test_localization_command_over_architectures(tiny_voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "loc"
    args = ["experiment", "localization", "--out", str(out), "--data", str(tiny_voc), "--image-size", "32",
            "--epochs", "1", "--finetune-epochs", "1", "--seeds", "0", "--at-per-class", "1", "--resamples", "50",
            "--models", "small", "resnet18", "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    table = json.loads((out / "results" / "localization-small-resnet18.json").read_text())["rows"]
    assert {(r["group"], r["method"]) for r in table if r["metric"] == "iou"} == {
        (m, k) for m in ("small", "resnet18") for k in ("Baseline + Aug", "Baseline + Aug + Attention")
    }


@pytest.mark.parametrize("name", ["classification", "strategies", "controls"])
def test_pool_and_guard_reach_every_fine_tuning_run(
    name: str, base: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--pool N --guarded` changes the fine-tuning runs of the paper's experiments, and only them."""
    from atcon.experiments import suite
    from atcon.experiments.methods import GUARDED

    class Built(Exception):
        pass

    def capture(store: Store, runs: dict[str, list[object]], exp: ExperimentConfig) -> None:
        seen.append(runs)
        raise Built

    monkeypatch.setattr(suite, "_rows", capture)
    for exp, pooled in ((EXP, False), (dataclasses.replace(EXP, pool=10, finetune=GUARDED), True)):
        seen: list[dict[str, list[object]]] = []
        with pytest.raises(Built):
            run_experiment(name, base, exp, tmp_path / f"{name}-{pooled}", progress=False)
        cfgs = [run.cfg for runs in seen[0].values() for run in runs]  # type: ignore[attr-defined]
        tuned = [c for c in cfgs if c.strategy == "finetune"]
        others = [c for c in cfgs if c.strategy != "finetune"]
        assert tuned and others
        expected = ("pool:10", 1.0, "label-free") if pooled else (None, 0.0, "labels")
        assert all((c.unlabeled, c.anchor_weight, c.select) == expected for c in tuned)
        assert all((c.unlabeled, c.anchor_weight, c.select) == (None, 0.0, "labels") for c in others)
