"""Guarded fine-tuning on an unlabeled pool with label-free selection, end to end on a tiny benchmark."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from atcon.data import Split, with_unlabeled_pool
from atcon.train import TrainConfig, train
from atcon.train.data import build_task_data, task_split, training_pool_ids
from atcon.train.training_state import load_checkpoint


def _config(data: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "data": str(data), "model": "small", "image_size": 32, "per_class": 2, "epochs": 2, "batch_size": 2,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def start(tiny_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("start")
    train(_config(tiny_voc, epochs=1), out / "sup", progress=False)
    return out / "sup" / "checkpoints" / "best.pt"


def _pool_split(data: Path, tmp: Path, size: int = 12) -> Path:
    cfg = _config(data)
    split = task_split(cfg)
    pooled = with_unlabeled_pool(split, training_pool_ids(cfg, split), size, seed=0)
    return pooled.save(tmp / "split.json")


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_pool_split_is_disjoint_from_val_and_test_and_round_trips(tiny_voc: Path, tmp_path: Path) -> None:
    path = _pool_split(tiny_voc, tmp_path)
    split = Split.load(path)
    assert len(split.unlabeled) == 12 and len(set(split.unlabeled)) == 12
    assert not set(split.unlabeled) & (set(split.val) | set(split.test))
    assert Split.load(path) == split
    with pytest.raises(ValueError, match="at most"):
        with_unlabeled_pool(split, training_pool_ids(_config(tiny_voc), split), 10_000)


def test_label_free_data_holds_out_part_of_the_pool(tiny_voc: Path, tmp_path: Path) -> None:
    split = _pool_split(tiny_voc, tmp_path)
    data = build_task_data(
        _config(tiny_voc, strategy="finetune", split=str(split), select="label-free", holdout=0.25)
    )
    assert data.unlabeled is not None and data.holdout is not None
    assert len(data.unlabeled) + len(data.holdout) == 12 and len(data.holdout) == 3
    trained = {data.unlabeled.dataset.ids[i] for i in data.unlabeled.indices}  # type: ignore[attr-defined]
    held = {data.holdout.dataset.ids[i] for i in data.holdout.indices}  # type: ignore[attr-defined]
    assert not trained & held
    # Without a pool, the validation images are the label-free slice.
    plain = build_task_data(_config(tiny_voc, strategy="finetune", select="label-free"))
    assert plain.holdout is plain.val


def test_guarded_label_free_finetune_logs_signals_and_reads_no_label(
    tiny_voc: Path, start: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = _pool_split(tiny_voc, tmp_path)
    cfg = _config(
        tiny_voc, strategy="finetune", weights=str(start), split=str(split), lr=1e-3, epochs=3,
        select="label-free", anchor_weight=1.0, param_anchor_weight=0.1, param_anchor_fisher=True,
        trainable_blocks=2, min_agreement=0.0, min_entropy_ratio=0.0, plateau_delta=0.0,
    )  # fmt: skip
    summary = train(cfg, tmp_path / "a", progress=False)
    rows = _rows(tmp_path / "a")
    assert summary["selection_metric"] == "label-free"
    assert [r["epoch"] for r in rows] == ["-1", "0", "1", "2"]
    for key in ("lf_consistency", "lf_agreement", "lf_class_entropy", "lf_kl_to_start", "val_map"):
        assert all(r[key] != "" for r in rows), key
    assert float(rows[0]["lf_agreement"]) == 1.0 and float(rows[0]["lf_kl_to_start"]) == pytest.approx(
        0, abs=1e-6
    )
    # The selected epoch is the one with the lowest held-out consistency (every epoch admissible here).
    best = min(rows, key=lambda r: float(r["lf_consistency"]))
    assert summary["best_epoch"] == int(best["epoch"])
    # Replaying the logged rows with the run's rule finds the same checkpoint.
    from atcon.train.labelfree import LabelFreeSelection
    from atcon.train.selection import replayed_choice

    rule = LabelFreeSelection(cfg.min_agreement, cfg.min_entropy_ratio, cfg.plateau_delta, cfg.patience)
    assert int(rows[replayed_choice(rule, rows)]["epoch"]) == summary["best_epoch"]
    # Only the top two blocks moved.
    before, after = (
        load_checkpoint(start)["model"],
        load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"],
    )
    moved = {
        k
        for k in before
        if not torch.equal(before[k], after[k]) and "running" not in k and "num_batches" not in k
    }
    assert moved and all(k.startswith(("layer4.", "fc.")) for k in moved)
    # Shuffled validation labels, and other boxes and regions to avoid: the label-free choice and
    # the selected weights do not change.
    from atcon.data.voc import VOCDataset, avoid_boxes

    real = VOCDataset.__getitem__

    def shuffled(self: VOCDataset, index: int):  # type: ignore[no-untyped-def]
        x, target = real(self, index)
        target = dict(target)
        target["labels"] = target["labels"].flip(0)
        target["boxes"] = target["boxes"].flip(0)
        target["avoid"] = avoid_boxes([(0.0, 0.0, 16.0, 16.0)], *x.shape[-2:])
        return x, target

    monkeypatch.setattr(VOCDataset, "__getitem__", shuffled)
    summary_b = train(cfg, tmp_path / "b", progress=False)
    assert summary_b["best_epoch"] == summary["best_epoch"]
    rows_b = _rows(tmp_path / "b")
    assert [r["val_map"] for r in rows_b] != [r["val_map"] for r in rows]  # the labels did change
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "best.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_label_free_floors_reject_drift_and_keep_the_start(
    tiny_voc: Path, start: Path, tmp_path: Path
) -> None:
    # Impossible floors: only the starting network is admissible, so it is kept and the run stops.
    cfg = _config(
        tiny_voc, strategy="finetune", weights=str(start), lr=1e-2, epochs=4, select="label-free",
        min_agreement=1.0, min_entropy_ratio=1.0, patience=2,
    )  # fmt: skip
    with torch.no_grad():
        pass
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    drifted = [
        r
        for r in rows[1:]
        if float(r["lf_agreement"]) < 1.0 or float(r["lf_class_entropy"]) < float(rows[0]["lf_class_entropy"])
    ]
    assert drifted  # lr 1e-2 moves the predictions
    if len(drifted) == len(rows) - 1:
        assert summary["best_epoch"] == -1
    assert summary["stopped_early"] or summary["epochs_run"] == 4


def test_anchor_changes_the_update_and_zero_weights_are_the_paper(
    tiny_voc: Path, start: Path, tmp_path: Path
) -> None:
    common = {"strategy": "finetune", "weights": str(start), "lr": 1e-3, "epochs": 1}
    paper = train(_config(tiny_voc, **common), tmp_path / "p", progress=False)
    zero = train(
        _config(tiny_voc, **common, anchor_weight=0.0, param_anchor_weight=0.0),
        tmp_path / "z",
        progress=False,
    )
    anchored = train(_config(tiny_voc, **common, anchor_weight=10.0), tmp_path / "g", progress=False)
    assert paper["best_epoch"] == zero["best_epoch"]
    last = {k: load_checkpoint(tmp_path / k / "checkpoints" / "last.pt")["model"] for k in ("p", "z", "g")}
    assert all(torch.equal(last["p"][k], last["z"][k]) for k in last["p"])
    assert any(not torch.equal(last["p"][k], last["g"][k]) for k in last["p"])
    _ = anchored


def test_label_free_is_refused_for_supervised_training(tiny_voc: Path) -> None:
    with pytest.raises(ValueError, match="select labels"):
        _config(tiny_voc, select="label-free")
    assert (
        dataclasses.replace(_config(tiny_voc), strategy="finetune", select="label-free").select
        == "label-free"
    )


@pytest.mark.parametrize("select", ["label-free", "labels"])
def test_replay_of_a_logged_run_makes_the_trainers_decisions(
    select: str, tiny_voc: Path, start: Path, tmp_path: Path
) -> None:
    """Several evaluations an epoch and early stopping: replaying metrics.csv with the run's own
    rule reproduces every best flag, where the run stopped, and the selected checkpoint."""
    from atcon.train.labelfree import LabelFreeSelection
    from atcon.train.selection import ValidationMetric, replay, replayed_choice

    split = _pool_split(tiny_voc, tmp_path)
    cfg = _config(
        tiny_voc, strategy="finetune", weights=str(start), split=str(split), lr=3e-3, epochs=4,
        select=select, anchor_weight=1.0, eval_every=2, patience=2, plateau_delta=0.0, min_agreement=0.5,
        min_entropy_ratio=0.5,
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    per_epoch = {r["epoch"] for r in rows[1:]}
    assert len(rows) - 1 > len(per_epoch)  # more than one evaluation an epoch
    rule = (
        LabelFreeSelection(cfg.min_agreement, cfg.min_entropy_ratio, cfg.plateau_delta, cfg.patience)
        if select == "label-free"
        else ValidationMetric("map", cfg.patience)
    )
    verdicts = replay(rule, rows)
    assert [v.best for v in verdicts] == [r["best"] == "True" for r in rows]
    assert len(verdicts) == len(rows)  # a run that stopped stopped where the replay does
    assert summary["stopped_early"] and verdicts[-1].stop  # the settings make this run stop early
    assert int(rows[replayed_choice(rule, rows)]["epoch"]) == summary["best_epoch"]
