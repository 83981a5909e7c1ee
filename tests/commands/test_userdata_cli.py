"""The user's own images through the ``atcon`` commands: data info/split, train, evaluate, explain, sanity,
experiment; subject-disjoint splits; small VOC folders; bad input as one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from atcon.cli import main
from atcon.data import Split
from tests.data.userdata import (
    CLASSES,
    Img,
    Obj,
    multilabel_set,
    single_label_set,
    write_coco,
    write_csv,
    write_folders,
    write_voc,
)

TINY = ["--model", "small", "--image-size", "32", "--epochs", "1", "--batch-size", "2", "--no-progress"]


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The command's stderr, checked to be one ``atcon COMMAND: error: ...`` line (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"atcon {command}: error: "), err
    return err


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-label set as class folders with a subject folder per patient, no given sets."""
    return write_folders(tmp_path_factory.mktemp("xrays") / "xrays", single_label_set())


def test_class_folders_end_to_end_subject_disjoint(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "info", str(folders)]) == 0
    out = capsys.readouterr().out
    assert "image class folders" in out and "18 images, 3 classes (single-label)" in out
    assert "subjects: 6" in out and all(f"{c}" in out for c in CLASSES)

    run = tmp_path / "run"
    argv = ["train", "--data", str(folders), "--per-class", "1", "--group-by", "subject", *TINY]
    assert main([*argv, "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["selection_metric"] == "f1_macro"  # single-label: softmax, selected on macro F1
    split = Split.load(run / "split.json")
    assert split.protocol == "subject-disjoint" and split.meta["group_by"] == "subject"
    assert split.meta["format"] == "folders" and split.meta["task"] == "multiclass"
    subject = {p.relative_to(folders).as_posix(): p.parent.name for p in folders.rglob("*.png")}
    sets = [{subject[i] for i in ids} for ids in (split.train, split.val, split.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sorted(Path(i).parts[0] for i in split.train) == sorted(CLASSES)  # one per class
    # `atcon data split images` writes the split that training draws.
    split_file = tmp_path / "split.json"
    split_argv = ["data", "split", "images", str(folders), "--per-class", "1", "--group-by", "subject"]
    assert main([*split_argv, "--out", str(split_file)]) == 0
    assert "subject-disjoint" in capsys.readouterr().out
    assert Split.load(split_file) == split

    ckpt = run / "checkpoints" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--resamples", "30", "--figures", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Accuracy" in printed and "No boxes in the data" in printed
    results = json.loads((run / "evaluation-test" / "results.json").read_text())["results"][0]
    assert results["task"] == "multiclass" and results["n_items"] == len(split.test)
    for key in ("accuracy", "f1_macro", "map"):
        m = results["metrics"][key]
        assert m["low"] <= m["value"] <= m["high"], key
    raw = torch.load(next((run / "evaluation-test").glob("evaluation-*.pt")), weights_only=True)
    top1_right = (raw["logits"].argmax(1) == raw["labels"]).float().mean()
    assert results["metrics"]["accuracy"]["value"] == pytest.approx(float(top1_right))

    explain = tmp_path / "explain"
    assert main(["explain", "test:3", "--checkpoint", str(ckpt), "--out", str(explain)]) == 0
    capsys.readouterr()
    maps = torch.load(explain / "maps.pt", weights_only=True)
    model = maps["models"][0]
    assert torch.equal(model["target_class"], model["logits"].argmax(1))  # top-1 targets
    assert [Path(n.split("-", 1)[1]).parts[0] in CLASSES for n in maps["inputs"]] == [True] * 3
    assert maps["ground_truth"] == [Path(i).parts[0] for i in split.test[:3]]

    assert main(["sanity", "--checkpoint", str(ckpt), "--n", "2", "--out", str(tmp_path / "sanity")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "sanity" / "sanity.json").read_text())["classes"] == list(CLASSES)


@pytest.mark.filterwarnings("ignore:.*subject.*in two sets")  # no --group-by: the drawn sets share patients
def test_experiment_classification_on_class_folders(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["experiment", "classification", "--data", str(folders), "--out", str(tmp_path / "exp")]
    argv += ["--seeds", "0", "--samples-per-class", "1", "--finetune-epochs", "1", "--resamples", "20"]
    argv += [a for a in TINY if a != "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "exp" / "results" / "classification.json").read_text())
    rows = results["rows"]
    assert {r["method"] for r in rows} == {"Baseline", "Baseline + Aug", "Baseline + Aug + Attention"}
    assert {r["metric"] for r in rows} >= {"accuracy", "f1_macro", "map"}
    assert "| Accuracy" in (tmp_path / "exp" / "results" / "classification.md").read_text()
    splits = list((tmp_path / "exp" / "splits").glob("*.json"))
    assert len(splits) == 1 and Split.load(splits[0]).meta["task"] == "multiclass"


def test_group_by_subject_needs_subjects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = single_label_set()
    plain = write_folders(tmp_path / "plain", images, subjects=False)
    assert main(["train", "--data", str(plain), "--group-by", "subject", "--out", str(tmp_path / "r1")]) == 2
    err = one_line_error(capsys, "train")
    assert "needs a subject for every image; 18 of 18 have none" in err and str(plain) in err
    voc = write_voc(tmp_path / "voc", multilabel_set())
    assert main(["train", "--data", str(voc), "--group-by", "subject", "--out", str(tmp_path / "r2")]) == 2
    assert "VOC-layout data has none" in one_line_error(capsys, "train")
    # Given sets that put a patient on both sides are refused, naming both rows.
    csv = write_csv(tmp_path / "given" / "labels.csv", images, split=True)
    argv = ["data", "split", "images", str(csv), "--per-class", "1", "--group-by", "subject"]
    assert main([*argv, "--out", str(tmp_path / "s.json")]) == 2
    err = one_line_error(capsys, "data")
    assert "is in two given sets" in err and "labels.csv: line" in err


def small_voc(root: Path, n_train: int = 120, n_val: int = 30) -> Path:
    """A VOC2012-like folder (``train`` and ``val`` image sets) of ``n_train + n_val`` tiny images."""
    images = []
    for k in range(n_train + n_val):
        name = CLASSES[k % 3]
        images.append(
            Img(f"v{k:03d}", 16, 16, (Obj(name, 2, 3, 12, 13),), "s", "train" if k < n_train else "test")
        )
    write_voc(root, images)
    main_sets = root / "ImageSets" / "Main"
    (main_sets / "test.txt").rename(main_sets / "val.txt")
    return root


def test_small_voc_folder_trains_with_a_validation_draw_that_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_voc(tmp_path / "voc")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--per-class", "4", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    split = Split.load(run / "split.json")
    assert len(split.val) == 24 and len(split.test) == 30  # 20% of the 120 pool images; VOC val as test
    assert split.meta["val_rule"] == "default: min(500, 20% of the pool)"
    assert not set(split.val) & set(split.train)
    # Asking for too many says what to do instead.
    argv = [
        "train",
        "--data",
        str(root),
        "--per-class",
        "4",
        "--val-size",
        "500",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    err = one_line_error(capsys, "train")
    assert "val_size 500" in err and "no training images in 120" in err and "--val-size 24" in err
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
    split_file = tmp_path / "s.json"
    argv = ["data", "split", "voc", "--root", str(root), "--per-class", "4", "--val-size", "0.1"]
    assert main([*argv, "--out", str(split_file)]) == 0
    capsys.readouterr()
    assert len(Split.load(split_file).val) == 12
    assert Split.load(split_file).meta["val_rule"] == "asked: 0.1 of the pool"


def test_val_size_flag_and_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    from atcon.cli import build_parser

    for command in ("train", "finetune", "experiment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--val-size" in text and "min(500, 20% of the pool)" in text, command
        assert "--group-by {subject}" in text and "--multi-label" in text, command
    parser = build_parser()
    assert parser.parse_args(["train", "--val-size", "30"]).val_size == 30
    assert parser.parse_args(["train", "--val-size", "0.25"]).val_size == 0.25
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--val-size", "some"])
    assert "invalid count or fraction value" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_bad_rows_reach_the_cli_as_one_line_naming_file_and_row(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = multilabel_set()
    if fmt == "csv":
        data = write_csv(tmp_path / "d" / "labels.csv", images)
        lines = data.read_text().splitlines()
        lines[3] = lines[3].replace("images/a03.png", "images/missing.png")
        data.write_text("\n".join(lines) + "\n")
        where = f"{data}: line 4: image not found"
    else:
        data = write_coco(tmp_path / "d" / "instances_x.json", images)
        coco = json.loads(data.read_text())
        coco["annotations"][2]["bbox"] = [1, 2, -5, 4]
        data.write_text(json.dumps(coco))
        where = f"{data}: image 101 ('a02.png'):"
    for argv in (["data", "info", str(data)], ["train", "--data", str(data), "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert where in one_line_error(capsys, argv[0])


@pytest.mark.parametrize("fmt", ["voc", "csv", "coco", "folders"])
def test_data_info_says_what_it_found(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = single_label_set() if fmt == "folders" else multilabel_set()
    writers = {
        "voc": lambda: write_voc(tmp_path / "voc", images),
        "csv": lambda: write_csv(tmp_path / "c" / "labels.csv", images, split=True),
        "coco": lambda: write_coco(tmp_path / "annotations" / "instances_val.json", images),
        "folders": lambda: write_folders(tmp_path / "f", images, split=True),
    }
    path = writers[fmt]()
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    found = {
        "voc": "a VOC layout",
        "csv": "a CSV image manifest",
        "coco": "a COCO JSON file",
        "folders": "image class folders",
    }
    assert out.splitlines()[0] == f"{path}: {found[fmt]} ({out.splitlines()[0].split(' (', 1)[1]}"
    if fmt == "voc":
        assert "train (8)" in out and "test (4)" in out
    elif fmt == "csv":
        assert "12 images, 3 classes (multi-label)" in out and "all (12)" in out and "test (4)" in out
    elif fmt == "coco":
        assert "boxes: 20 (2 difficult)" in out and "all (12)" in out
    else:
        assert "given splits: train 12, val 0, test 6" in out and "test (6)" in out
