"""Training runs end to end on a tiny benchmark: strategies, run folder, resume after SIGKILL, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atcon.train import NonFiniteLossError, RunExistsError, TrainConfig, train
from atcon.train.checkpoint import load_checkpoint


def config(data: Path, **kw: object) -> TrainConfig:
    base = {
        "data": str(data),
        "model": "small",
        "image_size": 32,
        "per_class": 2,
        "epochs": 2,
        "batch_size": 2,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["supervised", "combined", "alternated", "simclr"])
def test_strategies_run_and_write_the_run_folder(
    tiny_voc: Path, tmp_path: Path, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon.train.strategies import LossTerms

    calls = {"supervised": 0, "attention": 0, "contrastive": 0}
    for term in calls:
        real = getattr(LossTerms, term)

        def counted(self: LossTerms, batch: object, _real: object = real, _term: str = term) -> torch.Tensor:
            calls[_term] += 1
            return _real(self, batch)  # type: ignore[operator]

        monkeypatch.setattr(LossTerms, term, counted)
    run = tmp_path / strategy
    summary = train(config(tiny_voc, strategy=strategy), run, progress=False)
    for name in ("config.toml", "split.json", "meta.json", "metrics.csv", "log.txt", "summary.json"):
        assert (run / name).is_file(), name
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["finished"] and last["state"]["epoch"] == 2
    assert last["task"] == "multilabel" and last["classes"] == ["ring", "bar", "cross"]
    assert set(last["model"]) >= {"fc.weight", "fc.bias", "layer4.conv1.weight"}
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "train_loss" in rows[0]
    assert summary["epochs_run"] == 2
    meta = json.loads((run / "meta.json").read_text())
    assert meta["torch"] == torch.__version__ and "git_commit" in meta
    # Every step computed the strategy's terms: combined both on every step; alternated one of
    # the two on every step, each at least once (the draw is seeded, so this is not luck).
    steps = last["state"]["global_step"]
    assert steps > 0
    expected = {
        "supervised": {"supervised": steps, "attention": 0, "contrastive": 0},
        "combined": {"supervised": steps, "attention": steps, "contrastive": 0},
        "simclr": {"supervised": 0, "attention": 0, "contrastive": steps},
    }
    if strategy == "alternated":
        assert calls["supervised"] + calls["attention"] == steps and calls["contrastive"] == 0
        assert calls["supervised"] > 0 and calls["attention"] > 0
    else:
        assert calls == expected[strategy]


def test_finetune_from_checkpoint_changes_weights(tiny_voc: Path, tmp_path: Path) -> None:
    train(config(tiny_voc, epochs=1), tmp_path / "sup", progress=False)
    init = tmp_path / "sup" / "checkpoints" / "best.pt"
    train(config(tiny_voc, strategy="finetune", weights=str(init), lr=1e-3), tmp_path / "ft", progress=False)
    before = load_checkpoint(init)["model"]
    after = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    assert not torch.equal(before["layer4.conv2.weight"], after["layer4.conv2.weight"])
    # Normalisation frozen during consistency steps: running statistics untouched.
    assert torch.equal(before["layer4.bn1.running_mean"], after["layer4.bn1.running_mean"])
    assert torch.equal(before["fc.bias"], after["fc.bias"])  # no map depends on the output bias


def test_finetune_keeps_the_starting_model_when_validation_only_gets_worse(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon.train import trainer as run_module

    train(config(tiny_voc, epochs=1), tmp_path / "sup", progress=False)
    init = tmp_path / "sup" / "checkpoints" / "best.pt"
    real = run_module.classification_metrics
    maps = iter([0.9, 0.5, 0.6, 0.4])  # start, then three fine-tuning epochs, all worse

    def scripted(*args: object, **kw: object) -> dict[str, torch.Tensor]:
        out = real(*args, **kw)  # type: ignore[arg-type]
        return {**out, "map": torch.tensor(next(maps))}

    monkeypatch.setattr(run_module, "classification_metrics", scripted)
    cfg = config(tiny_voc, strategy="finetune", weights=str(init), lr=1e-3, epochs=3)
    summary = train(cfg, tmp_path / "ft", progress=False)
    assert summary["best_epoch"] == -1 and summary["best_metric"] == pytest.approx(0.9)
    best = load_checkpoint(tmp_path / "ft" / "checkpoints" / "best.pt")["model"]
    start = load_checkpoint(init)["model"]
    last = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(start[k], best[k]) for k in start)
    assert not torch.equal(last["layer4.conv2.weight"], start["layer4.conv2.weight"])


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "atcon.cli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


@pytest.mark.parametrize("strategy", ["supervised", "alternated"])
def test_resume_after_sigkill_equals_uninterrupted(tiny_voc: Path, tmp_path: Path, strategy: str) -> None:
    from atcon.train.data import build_task_data

    per_epoch = len(build_task_data(config(tiny_voc)).train)  # batches of 1: steps per epoch (supervised)
    assert per_epoch >= 2
    kill_at = per_epoch + 2  # the last checkpoint (every step) is then inside the second epoch
    common = [
        "train",
        "--data",
        str(tiny_voc),
        "--model",
        "small",
        "--image-size",
        "32",
        "--per-class",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--strategy",
        strategy,
        "--lr",
        "1e-3",
    ]
    killed = _cli([*common, "--out", str(tmp_path / "a")], env={"ATCON_FAULT_KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9, killed.stderr
    partial = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["state"]
    assert partial["global_step"] == kill_at - 1 and not partial["finished"]
    if strategy == "supervised":
        assert (partial["epoch"], partial["batch"]) == (1, 1)  # mid-epoch
    resumed = _cli(["train", "--resume", str(tmp_path / "a"), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    straight = _cli([*common, "--out", str(tmp_path / "b")])
    assert straight.returncode == 0, straight.stderr
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["state"]["global_step"] == b["state"]["global_step"]
    keep = ("epoch", "step", "train_loss", "val_map")
    assert [{k: r[k] for k in keep} for r in a["state"]["history"]] == [
        {k: r[k] for k in keep} for r in b["state"]["history"]
    ]


def test_run_folder_guards(tiny_voc: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(tiny_voc, epochs=1), run, progress=False)
    with pytest.raises(RunExistsError, match="finished run"):
        train(config(tiny_voc, epochs=1), run, progress=False)
    train(config(tiny_voc, epochs=1), run, overwrite=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config(tiny_voc), tmp_path / "empty", resume=True, progress=False)
    # Resuming a finished run returns its summary without training again.
    assert train(config(tiny_voc), run, resume=True, progress=False)["epochs_run"] == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_voc: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(config(tiny_voc, lr=1e30, epochs=3, checkpoint_every=1), run, progress=False)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_cli_errors(tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atcon.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 2\nlearning_rate = 0.1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key(s) learning_rate" in capsys.readouterr().err
    bad.write_text('epochs = "two"\n')
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "'epochs' must be int" in capsys.readouterr().err
    args = [
        "finetune",
        "--init",
        str(tmp_path / "missing.pt"),
        "--data",
        str(tiny_voc),
        "--out",
        str(tmp_path / "y"),
    ]
    assert main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--data", "no-such-benchmark", "--out", str(tmp_path / "z")]) == 2
    assert "neither a built-in benchmark" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_voc), "--model", "small3d", "--out", str(tmp_path / "w")]) == 2
    assert "is a video model" in capsys.readouterr().err


def test_tensorboard_scalars_when_installed(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    written: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, folder: str) -> None:
            assert folder.endswith("tensorboard")

        def add_scalar(self, key: str, value: float, step: int) -> None:
            written.append((key, value, step))

        def flush(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    train(config(tiny_voc, epochs=1), tmp_path / "tb", progress=False)
    assert {"train_loss", "val_map"} <= {k for k, _, _ in written}
