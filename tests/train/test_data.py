"""From a config to datasets: labels, splits, pools, folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.evaluate import IGNORE
from atcon.evaluate.metrics import labels_of
from atcon.train.config import TrainConfig
from atcon.train.data import build_task_data


def test_labels_of_both_tasks() -> None:
    assert torch.equal(labels_of({"label": [2, 0]}, "multiclass"), torch.tensor([2, 0]))
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    ignore = torch.tensor([[False, True, False], [False, False, False]])
    got = labels_of({"labels": labels, "ignore": ignore}, "multilabel")
    assert got.dtype == torch.float32
    assert got.tolist() == [[1.0, IGNORE, 1.0], [0.0, 1.0, 0.0]]
    assert torch.equal(labels_of({"labels": labels}, "multilabel"), labels.float())


def test_build_task_data_from_a_voc_folder(tiny_voc: Path) -> None:
    cfg = TrainConfig(data=str(tiny_voc), model="small", image_size=32, per_class=2)
    data = build_task_data(cfg)
    assert data.task == "multilabel" and not data.video and data.image_size == 32
    assert data.classes == ("ring", "bar", "cross") and data.unlabeled is None
    assert len(data.train) == len(data.split.train) >= 2  # type: ignore[arg-type]
    assert not set(data.split.train) & set(data.split.val)
    x, target = data.val[0]
    assert x.shape == (3, 32, 32) and target["labels"].shape == (3,)
    with pytest.raises(ValueError, match="is a video model"):
        build_task_data(cfg.replace(model="small3d"))
    with pytest.raises(FileNotFoundError, match="neither a built-in benchmark"):
        build_task_data(cfg.replace(data=str(tiny_voc / "missing")))
