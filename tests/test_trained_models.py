"""Trained checkpoints: rebuilding the model and its test items."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from atcon.data import IMAGENET_MEAN, IMAGENET_STD
from atcon.trained_models import (
    checkpoint_dataset,
    display_stats,
    evaluate_checkpoint,
    file_sha256,
    load_model,
)


def test_load_model_and_its_items(runs: dict[str, Path]) -> None:
    m = load_model(runs["a"])
    assert m.name == "a" and m.task == "multilabel" and m.target_layer == "layer4"
    assert m.sha256 == hashlib.sha256(runs["a"].read_bytes()).hexdigest()
    assert m.run_dir == runs["a"].parent.parent.resolve() and m.image_size == 32
    assert display_stats(m) == (IMAGENET_MEAN, IMAGENET_STD)
    ds = checkpoint_dataset(m, "test")
    x, target = ds[0]
    assert x.shape == (3, 32, 32) and "boxes" in target
    # Another data source: that source's own split list.
    assert len(checkpoint_dataset(m, "test", str(runs["data"]))) == 6  # type: ignore[arg-type]
    assert isinstance(m.model(x[None]), torch.Tensor)
    assert load_model(runs["a"], "named").name == "named"


def test_file_sha256_streams_large_files(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # over two read blocks
    f.write_bytes(data)
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()


def test_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "task": "multilabel"}, bad)
    with pytest.raises(ValueError, match="missing model_name, num_classes, classes, config"):
        load_model(bad)
    m = load_model(runs["a"])
    with pytest.raises(ValueError, match="'test' or 'val'"):
        checkpoint_dataset(m, "train")
    with pytest.raises(FileNotFoundError, match="neither a built-in benchmark"):
        checkpoint_dataset(m, "test", str(tmp_path / "nowhere"))


def test_evaluate_checkpoint_takes_task_classes_and_layer_from_the_checkpoint(runs: dict[str, Path]) -> None:
    from atcon.data import collate
    from atcon.evaluate import EvalSpec

    r = evaluate_checkpoint(runs["a"], spec=EvalSpec("multiclass", n_resamples=20))
    assert r.name == "a" and r.task == "multilabel" and r.classes == ("disc", "bar") and r.layer == "layer4"
    m = load_model(runs["a"])
    ds = checkpoint_dataset(m, "test")
    x, _ = collate([ds[i] for i in range(len(ds))])  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(r.logits, m.model(x), rtol=1e-4, atol=1e-5)
    assert r.n_resamples == 20
    other = evaluate_checkpoint(m, ds, EvalSpec(target_layer="layer3", n_resamples=20))
    assert other.layer == "layer3"
    torch.testing.assert_close(other.logits, r.logits)


def test_non_finite_weights_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """`atcon evaluate`/`explain` never report metrics of a NaN network."""
    ckpt = torch.load(runs["a"], weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = ckpt["model"][name].clone().fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match=f"non-finite weights \\({name}"):
        load_model(bad)


def test_the_former_module_name_still_imports(runs: dict[str, Path]) -> None:
    from atcon import checkpoints, trained_models

    assert checkpoints.load_model is trained_models.load_model
    assert checkpoints.LoadedModel is trained_models.LoadedModel
    assert isinstance(checkpoints.load_model(runs["a"]), trained_models.LoadedModel)
