"""The user's images end to end: one generated set in every format trains, splits and evaluates the same;
single-label images train with softmax and are scored with accuracy, macro F1 and one-vs-rest mAP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from atcon.data import Split, with_unlabeled_pool
from atcon.evaluate import EvalSpec
from atcon.train import TrainConfig, train
from atcon.train.data import build_task_data, task_split, training_pool_ids
from atcon.train.selection import selection_metric
from atcon.trained_models import checkpoint_dataset, evaluate_checkpoint, load_model
from tests.data.userdata import (
    CLASSES,
    Img,
    multilabel_set,
    single_label_set,
    write_coco,
    write_csv,
    write_folders,
    write_voc,
)

# The single-label set's given train and test sets share subjects (on purpose: group_by is tested elsewhere).
pytestmark = pytest.mark.filterwarnings("ignore:.*subject.*in two sets")

TINY = {"model": "small", "image_size": 32, "per_class": 1, "epochs": 1, "batch_size": 2, "seed": 0}


def stem(image_id: str) -> str:
    return Path(image_id).stem


def stems(ids: list[str]) -> list[str]:
    return [stem(i) for i in ids]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """The multi-label set as VOC, CSV and COCO; the single-label set as CSV, COCO and class folders.

    Every format gives the same train/test sets (a ``split`` column, COCO ``split`` keys, VOC's
    ``train``/``test`` image sets, ``train/``/``test/`` folders), so that training draws the same
    validation images in each.
    """
    root = tmp_path_factory.mktemp("userdata")
    ml, sl = multilabel_set(), single_label_set()
    return {
        "multilabel": {
            "voc": write_voc(root / "ml" / "voc", ml),
            "csv": write_csv(root / "ml" / "csv" / "labels.csv", ml, split=True),
            "coco": write_coco(root / "ml" / "coco" / "instances_all.json", ml, split=True),
        },
        "single": {
            "csv": write_csv(root / "sl" / "csv" / "labels.csv", sl, split=True),
            "coco": write_coco(root / "sl" / "coco" / "instances_all.json", sl, split=True),
            "folders": write_folders(root / "sl" / "folders", sl, split=True),
        },
    }


def spec_images(kind: str) -> list[Img]:
    return multilabel_set() if kind == "multilabel" else single_label_set()


@pytest.mark.parametrize("kind", ["multilabel", "single"])
def test_one_run_per_format_gives_the_same_split_weights_and_evaluation(
    sources: dict[str, dict[str, Path]], kind: str, tmp_path: Path
) -> None:
    task = "multilabel" if kind == "multilabel" else "multiclass"
    images = spec_images(kind)
    runs = {}
    for fmt, data in sources[kind].items():
        train(TrainConfig(data=str(data), **TINY), tmp_path / fmt, progress=False)
        runs[fmt] = tmp_path / fmt
    splits = {fmt: Split.load(run / "split.json") for fmt, run in runs.items()}
    models = {fmt: load_model(run / "checkpoints" / "best.pt") for fmt, run in runs.items()}
    spec = EvalSpec(n_resamples=40)
    results = {fmt: evaluate_checkpoint(m, spec=spec) for fmt, m in models.items()}
    first, *others = runs

    # Splits: the given test images, one training image per class, validation drawn from the rest.
    ref = splits[first]
    assert stems(ref.test) == [im.name for im in images if im.split == "test"]
    assert len(ref.val) == round(0.2 * sum(im.split == "train" for im in images))  # the default draw
    positives = {im.name: im.positives for im in images}
    assert {c for i in ref.train for c in positives[stem(i)]} == set(CLASSES)
    if kind == "single":
        assert len(ref.train) == len(CLASSES)
    for fmt in others:
        s = splits[fmt]
        assert (stems(s.train), stems(s.val), stems(s.test)) == (
            stems(ref.train),
            stems(ref.val),
            stems(ref.test),
        )
        assert (s.classes, s.per_class, s.seed) == (ref.classes, ref.per_class, ref.seed)

    # The same training: task, steps and every weight.
    for fmt, m in models.items():
        assert m.task == task and m.classes == CLASSES, fmt
        last = torch.load(runs[fmt] / "checkpoints" / "last.pt", weights_only=True)
        assert last["state"]["global_step"] == -(-len(ref.train) // TINY["batch_size"])
    want = models[first].model.state_dict()
    for fmt in others:
        got = models[fmt].model.state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), fmt

    # The same evaluation: logits, labels, true-positive pairs, every metric and interval.
    a = results[first]
    for fmt in others:
        b = results[fmt]
        assert torch.equal(a.logits, b.logits) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.pairs, b.pairs)
        boxed = fmt != "folders"  # class folders have no boxes (no localization) and no groups
        unboxed = {"iou", "pointing", "energy", "energy_avoid"}
        keys = a.metrics.keys() if boxed else {k for k in a.metrics if k not in unboxed and "@" not in k}
        assert keys <= b.metrics.keys() and ("iou" in b.metrics) == boxed
        for k in keys:
            for x, y in (
                (a.metrics[k].estimate, b.metrics[k].estimate),
                (a.metrics[k].low, b.metrics[k].low),
            ):
                assert torch.equal(x, y) or (x.isnan().all() and y.isnan().all()), (fmt, k)
    if kind == "single":
        assert "accuracy" in a.metrics and {"f1_macro", "map"} <= a.metrics.keys()
        # Localization of single-label images scores the map of the true class, where it is the top-1.
        assert "iou" in a.metrics and a.n_pairs > 0
        top1 = a.logits.argmax(1)
        assert torch.equal(a.pairs[:, 1], a.labels[a.pairs[:, 0]])
        assert torch.equal(a.pairs[:, 0], (top1 == a.labels).nonzero()[:, 0])
    else:
        assert "accuracy" not in a.metrics


def test_single_label_images_train_with_cross_entropy_and_select_on_macro_f1(
    sources: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    cfg = TrainConfig(data=str(sources["single"]["folders"]), **TINY)
    data = build_task_data(cfg)
    assert data.task == "multiclass" and not data.video
    x, target = data.train[0]
    assert x.shape == (3, 32, 32) and target["label"].dtype == torch.int64
    assert selection_metric(data.task) == "f1_macro"
    # A manifest of the same images read as multi-label (the flag) trains with sigmoid outputs.
    forced = build_task_data(cfg.replace(data=str(sources["single"]["csv"]), multi_label=True))
    assert forced.task == "multilabel" and "label" not in forced.train[0][1]
    with pytest.raises(ValueError, match="multi_label applies to CSV manifests and COCO files"):
        task_split(cfg.replace(data=str(sources["multilabel"]["voc"]), multi_label=True))
    with pytest.raises(ValueError, match="class folders hold single-label images"):
        task_split(cfg.replace(multi_label=True))


def test_the_unlabeled_pool_of_own_images_is_the_training_pool_outside_val_and_test(
    sources: dict[str, dict[str, Path]],
) -> None:
    cfg = TrainConfig(data=str(sources["multilabel"]["csv"]), **TINY)
    split = task_split(cfg)
    pool = training_pool_ids(cfg, split)
    train_set = [f"images/{im.name}.png" for im in multilabel_set() if im.split == "train"]
    assert pool == [i for i in train_set if i not in split.val]
    assert set(split.train) <= set(pool)
    data = build_task_data(cfg.replace(unlabeled="pool:4"))
    assert len(data.split.unlabeled) == 4 and set(data.split.unlabeled) <= set(pool)
    assert data.unlabeled is not None and len(data.unlabeled) == 4  # type: ignore[arg-type]
    assert data.split.unlabeled == with_unlabeled_pool(split, pool, 4, seed=cfg.split_seed).unlabeled
    # Without given sets, the images left after validation and test are the training images.
    nosplit = write_csv(Path(sources["multilabel"]["csv"]).parent / "drawn.csv", multilabel_set())
    drawn_cfg = cfg.replace(data=str(nosplit))
    drawn = task_split(drawn_cfg)
    assert sorted(training_pool_ids(drawn_cfg, drawn)) == sorted(drawn.train)


def test_checkpoint_dataset_reads_another_format_with_the_checkpoints_task(
    sources: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    train(TrainConfig(data=str(sources["single"]["csv"]), **TINY), tmp_path / "run", progress=False)
    loaded = load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    own = checkpoint_dataset(loaded, "test")
    for fmt in ("coco", "folders"):
        other: Any = checkpoint_dataset(loaded, "test", str(sources["single"][fmt]))
        assert stems(other.ids) == stems(own.ids)  # type: ignore[attr-defined]
        assert other.task == "multiclass"
        assert torch.equal(other[0][0], own[0][0])
    with pytest.raises(ValueError, match="no image is in the given val set"):
        checkpoint_dataset(loaded, "val", str(sources["single"]["coco"]))
    with pytest.raises(ValueError, match=r"multi-label, but .* single-label model"):
        checkpoint_dataset(loaded, "test", str(sources["multilabel"]["voc"]))
