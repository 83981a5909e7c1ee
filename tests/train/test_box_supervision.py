"""Box supervision in training runs: which images it reads, the strategies that take it, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from atcon.train import TrainConfig, train
from tests.data.userdata import multilabel_set, single_label_set, write_csv, write_folders

pytestmark = pytest.mark.filterwarnings("ignore:.*subject.*in two sets")

TINY = {"model": "small", "image_size": 32, "per_class": 2, "epochs": 2, "batch_size": 2, "seed": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("boxes")
    return {
        "single": write_csv(root / "sl" / "labels.csv", single_label_set(), split=True),
        "multi": write_csv(root / "ml" / "labels.csv", multilabel_set(), split=True),
        "folders": write_folders(root / "folders", single_label_set()),
    }


def losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]]


def log_line(run: Path, start: str) -> str:
    return next(line for line in (run / "log.txt").read_text().splitlines() if start in line)


@pytest.mark.parametrize("form", ["gradcam", "input_gradient"])
def test_supervised_runs_add_the_term_on_the_chosen_images(
    tmp_path: Path, data: dict[str, Path], form: str
) -> None:
    plain = TrainConfig(data=str(data["single"]), **TINY)  # type: ignore[arg-type]
    train(plain, tmp_path / "plain", progress=False)
    boxed = plain.replace(box_weight=5.0, box_loss=form)
    train(boxed, tmp_path / "boxed", progress=False)
    assert f"box supervision: {form}, weight 5, 6 of 6 labeled images (all annotated)" in log_line(
        tmp_path / "boxed", "box supervision"
    )
    # Same seeds and data: the only difference is the term, which changes the loss.
    assert losses(tmp_path / "plain") != losses(tmp_path / "boxed")
    few = boxed.replace(boxes_per_class=1)
    train(few, tmp_path / "few", progress=False)
    assert "3 of 6 labeled images (1 per class)" in log_line(tmp_path / "few", "box supervision")


def test_multilabel_combined_and_finetune_take_it(tmp_path: Path, data: dict[str, Path]) -> None:
    cfg = TrainConfig(data=str(data["multi"]), box_weight=1.0, **{**TINY, "per_class": 1})  # type: ignore[arg-type]
    base = train(cfg.replace(strategy="combined"), tmp_path / "combined", progress=False)
    assert "box supervision: gradcam" in log_line(tmp_path / "combined", "box supervision")
    tune = cfg.replace(strategy="finetune", weights=base["best_checkpoint"], select="labels", lr=1e-4)
    train(tune, tmp_path / "tune", progress=False)
    without = train(tune.replace(box_weight=0.0), tmp_path / "tune0", progress=False)
    # Fine-tuning reads a labeled batch beside each unlabeled one: same steps, another loss.
    assert without["epochs_run"] == 2
    assert losses(tmp_path / "tune") != losses(tmp_path / "tune0")


def test_data_without_boxes_and_strategies_without_labeled_steps_are_refused(
    tmp_path: Path, data: dict[str, Path]
) -> None:
    with pytest.raises(ValueError, match="box_weight needs boxes or regions to avoid"):
        train(TrainConfig(data=str(data["folders"]), box_weight=1.0, **TINY), tmp_path / "f", progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "f").exists()
    with pytest.raises(ValueError, match="strategy 'simclr' has none"):
        TrainConfig(strategy="simclr", box_weight=1.0)
    with pytest.raises(ValueError, match="boxes_per_class must be >= 1"):
        TrainConfig(boxes_per_class=0)
    with pytest.raises(ValueError, match="box_weight must be >= 0"):
        TrainConfig(box_weight=-1.0)
