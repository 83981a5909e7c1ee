"""The shortcut experiment on a tiny generated benchmark: its runs, the weight choice, the
controls, the warning analysis; and the shards that share an experiment folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tomllib

import atcon.data.benchmarks as bench
from atcon.experiments import shortcut
from atcon.experiments.methods import ExperimentConfig
from atcon.experiments.runner import Run, Store
from atcon.experiments.suite import run_experiment
from atcon.train.config import TrainConfig


@pytest.fixture
def tiny_data(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fashion_source: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> None:
    """Benchmarks built from synthetic objects into a temporary data folder."""

    def fake(
        split: str = "train", root: object = None, download: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        images, labels = fashion_source(n_per_class=6, seed=0 if split == "train" else 1)
        order = np.random.default_rng(1).permutation(len(labels))
        return images[order], labels[order]

    monkeypatch.setattr(bench, "load_fashion_mnist", fake)
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path / "data"))


def configs(out: Path) -> list[dict[str, Any]]:
    return [tomllib.loads((r / "config.toml").read_text()) for r in sorted((out / "runs").iterdir())]


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~100 s alone on 2 cores; several times that on a loaded machine
def test_shortcut_runs_chooses_weights_on_validation_and_runs_controls_where_moved(
    tiny_data: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shortcut, "_moves", lambda p: ["iou"])  # every fine-tuning "moved"
    base = TrainConfig(batch_size=2, data_size=0.02, epochs=1, eval_every=0)
    exp = ExperimentConfig(
        seeds=(0,), at_per_class=1, finetune_epochs=1, finetune_lr=1e-3, resamples=20, pool=12,
        finetune_eval_every=2, networks=("scratch",), rhos=(0.9,), cam_weights=(0.5, 2.0),
        gradient_weights=(), box_k=(1,),
    )  # fmt: skip
    out = tmp_path / "exp"
    outcome = run_experiment("shortcut", base, exp, out, progress=False)
    found = configs(out)
    meta = json.loads((out / "results" / "shortcut-scratch.json").read_text())["meta"]
    boxed = {
        (c["box_loss"], c["box_weight"], c.get("boxes_per_class", 0))
        for c in found
        if c.get("box_weight", 0) > 0
    }
    # The grid (every box) and K = 1 at the chosen weight; K = all at that weight is a grid run.
    chosen = meta["box_weights"]["scratch"]
    assert boxed == {("gradcam", 0.5, 0), ("gradcam", 2.0, 0), ("gradcam", chosen["gradcam"], 1)}
    grid = [g for g in meta["grid"] if g["form"] == "gradcam"]
    best = max(grid, key=lambda g: g["val_f1_macro"])
    assert meta["box_weights"]["scratch"]["gradcam"] == best["weight"] and best["chosen_by_validation"]
    # Every fine-tuning starts from + Aug; the pool runs read pool:12, the paper's selects on labels.
    tuned = [c for c in found if c["strategy"] == "finetune"]
    assert {(c["select"], c.get("unlabeled")) for c in tuned} >= {("labels", None), ("label-free", "pool:12")}
    # The controls of both controlled fine-tunings: 4 mask variants each.
    sources = sorted(
        c.get("mask_source", "guided_backprop") + ("+detach" if c.get("detach_mask") else "") for c in tuned
    )
    for control in ("random_network", "sobel", "random_smooth", "guided_backprop+detach"):
        assert sources.count(control) == 2, control
    assert outcome.markdown.count("## Mask controls") == 2
    # The cue-free reference is evaluated for every run, the final checkpoint of label-free runs too.
    for run in (out / "runs").iterdir():
        assert (run / "reference_eval.pt").is_file()
        cfg = tomllib.loads((run / "config.toml").read_text())
        assert (run / "test_eval_last.pt").is_file() == (cfg.get("select") == "label-free")
    points = meta["warning_points"]
    assert points and all(p["checkpoint"] in ("selected", "final") for p in points)
    assert {"cam_entropy", "gb_peak", "cam_vs_start"} <= set(points[0]["signals"])
    assert "Label-free shortcut warning" in outcome.markdown
    assert (out / "results" / "shortcut-maps-rho0.9-scratch.png").is_file()
    rows = {(r["method"], r["metric"]) for r in outcome.rows}
    assert ("+ Aug", "accuracy@conflicting") in rows and ("+ Attention", "energy_avoid") in rows


def test_prefetch_gives_each_shard_every_nth_run_and_waits_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [Run(f"m{k}", TrainConfig(seed=k)) for k in range(5)]
    trained: dict[int, list[str]] = {0: [], 1: []}
    for index in (0, 1):
        store = Store(tmp_path, shard=(index, 2), device="cpu", progress=False)
        calls: list[str] = []
        monkeypatch.setattr(
            store, "get", lambda r, calls=calls: calls.append(r.key) or SimpleNamespace(run=r)
        )
        after: list[str] = []
        store.prefetch([*runs, runs[0]], after=lambda rec, after=after: after.append(rec.run.key))
        trained[index] = after
        assert calls[: len(after)] == after and len(calls) == len(after) + 6  # then every run, in order
    assert trained[0] == [runs[k].key for k in (0, 2, 4)] and trained[1] == [runs[k].key for k in (1, 3)]
    with pytest.raises(ValueError, match="write K/N"):
        Store(tmp_path, shard=(2, 2))


def test_a_run_of_another_shard_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("m", TrainConfig())
    store = Store(tmp_path, shard=(1, 2), device="cpu", progress=False, poll=0.01)
    store._owner[run.key] = 0
    assert not store.owns(run)
    target = tmp_path / "runs" / run.key / "record.json"
    seen = []

    def sleep(seconds: float) -> None:  # the other process finishes while this one waits
        seen.append(seconds)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")

    monkeypatch.setattr("atcon.experiments.runner.time.sleep", sleep)
    store.wait_for(target, "m")
    assert seen == [0.01]
