"""The experiment store: run keys, shared splits and data, skip-if-done, resume of killed runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from atcon.experiments.runner import Run, Store
from atcon.train.config import TrainConfig


@pytest.fixture()
def base(tiny_voc: Path) -> TrainConfig:
    return TrainConfig(data=str(tiny_voc), model="small", image_size=32, epochs=1, batch_size=2, per_class=1)


def test_run_key_depends_on_config_and_parent_not_on_labels(base: TrainConfig) -> None:
    a = Run("Baseline + Aug", base, tags={"seed": 0})
    assert a.key == Run("another name", base, tags={"seed": 9}).key
    assert a.key.startswith("supervised-small-pc1-s0-")
    changes: list[dict[str, Any]] = [{"seed": 1}, {"lr": 0.1}, {"mask_center": 0.5}, {"augment": False}]
    keys = {Run("m", base.replace(**c)).key for c in changes}
    assert len(keys) == len(changes) and a.key not in keys
    ft = base.replace(strategy="finetune")
    assert Run("x", ft, a).key != Run("x", ft, Run("Baseline + Aug", base.replace(lr=0.1))).key
    assert Run("x", ft, a).key != Run("x", ft).key


def test_a_new_config_field_at_its_default_keeps_every_key(base: TrainConfig) -> None:
    # A later version of the config with one more field: runs that leave it at its default keep
    # their keys (and so their finished runs), runs that set it get new ones.
    extended = dataclasses.make_dataclass(
        "Extended",
        [("guard_weight", float, 0.0)],
        bases=(TrainConfig,),
        frozen=True,
        namespace={"__post_init__": lambda self: None},
    )
    values = dataclasses.asdict(base)
    assert Run("m", extended(**values)).key == Run("m", base).key
    assert Run("m", extended(**values, guard_weight=0.5)).key != Run("m", base).key
    parent = Run("p", base)
    assert Run("m", extended(**values), parent).key == Run("m", base, parent).key


def test_split_files_and_datasets_are_shared(base: TrainConfig, tmp_path: Path) -> None:
    store = Store(tmp_path / "exp", device="cpu", n_resamples=20, progress=False)
    path = store.split_file(base)
    assert path == tmp_path / "exp" / "splits" / f"{Path(base.data).name}-d0-pc1-s0.json"
    first = path.read_text()
    assert store.split_file(base.replace(seed=5, strategy="finetune")) == path  # training seed: same split
    assert path.read_text() == first
    assert store.split_file(base.replace(split_seed=1)) != path
    assert store.split_file(base.replace(split=str(tmp_path / "mine.json"))) == tmp_path / "mine.json"
    cfg = store.with_split(base)
    assert store.data(cfg) is store.data(cfg.replace(seed=3, strategy="combined"))
    assert store.data(cfg) is not store.data(cfg.replace(augment=False))


def test_store_trains_and_evaluates_once_and_later_stores_reuse(
    base: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon.train import run as run_module

    calls: list[dict[str, Any]] = []
    real_train = run_module.train

    def counting_train(cfg: TrainConfig, run_dir: Path, **kw: Any) -> dict[str, Any]:
        calls.append({"run_dir": Path(run_dir), **kw})
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(run_module, "train", counting_train)
    out = tmp_path / "exp"
    parent = Run("Baseline", base, tags={"seed": 0})
    child = Run("B + Attention", base.replace(strategy="finetune", lr=1e-4), parent, tags={"seed": 0})
    store = Store(out, device="cpu", n_resamples=20, progress=False)
    record = store.get(child)  # trains the parent first: the child starts from its best checkpoint
    assert [c["run_dir"].name for c in calls] == [parent.key, child.key]
    assert all(c["resume"] is False and c["overwrite"] is True for c in calls)
    assert record.trained_now and record.result.n_items > 0 and record.train_seconds > 0
    assert store.get(child) is record and len(calls) == 2
    config = (out / "runs" / child.key / "config.toml").read_text()
    assert f'weights = "{out / "runs" / parent.key / "checkpoints" / "best.pt"}"' in config
    saved = json.loads((out / "runs" / child.key / "record.json").read_text())
    assert saved["method"] == "B + Attention" and saved["tags"] == {"seed": 0}

    later = Store(out, device="cpu", n_resamples=20, progress=False)
    again = later.get(child)
    assert len(calls) == 2 and not again.trained_now
    assert again.train_seconds == pytest.approx(saved["train_seconds"])
    assert again.result.metrics["map"].estimate == record.result.metrics["map"].estimate


def test_a_killed_run_is_resumed(base: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atcon.train import run as run_module

    seen: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def recording_train(cfg: TrainConfig, run_dir: Path, **kw: Any) -> dict[str, Any]:
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(run_module, "train", recording_train)
    run = Run("Baseline", base)
    store = Store(tmp_path / "exp", device="cpu", n_resamples=20, progress=False)
    folder = tmp_path / "exp" / "runs" / run.key / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"partial run")  # killed: a checkpoint, no summary.json
    with pytest.raises(Stop):
        store.get(run)
    assert seen[0]["resume"] is True and seen[0]["overwrite"] is False
