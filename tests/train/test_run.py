"""Training runs end to end on a tiny benchmark: strategies, run folder, resume after SIGKILL, faults."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atcon.train import NonFiniteLossError, RunExistsError, TrainConfig, train
from atcon.train.training_state import load_checkpoint


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
    from atcon.train import validation as run_module

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


def _cli(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "atcon.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        cwd=cwd,
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


def test_guarded_finetune_resume_after_sigkill_is_bit_exact_from_another_directory(
    tiny_voc: Path, tmp_path: Path
) -> None:
    """Relative --data/--init, killed mid-run, resumed from elsewhere with the --init file gone."""
    from atcon.train.data import build_task_data

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    train(config(tiny_voc, epochs=1), work / "base", progress=False)
    init = work / "base" / "checkpoints" / "best.pt"
    per_epoch = len(build_task_data(config(tiny_voc)).train)  # batches of 1: steps per epoch
    kill_at = per_epoch + 2  # inside the second epoch
    common = [
        "finetune",
        "--data",
        os.path.relpath(tiny_voc, work),
        "--init",
        "base/checkpoints/best.pt",
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
        "--lr",
        "1e-3",
        "--anchor-weight",
        "1",
        "--param-anchor-weight",
        "0.1",
        "--param-anchor-fisher",
        "--select",
        "label-free",
    ]
    killed = _cli([*common, "--out", "a"], env={"ATCON_FAULT_KILL_AT_STEP": str(kill_at)}, cwd=work)
    assert killed.returncode == -9, killed.stderr
    saved = load_checkpoint(work / "a" / "checkpoints" / "last.pt")
    assert saved["config"]["data"] == str(tiny_voc) and saved["config"]["weights"] == str(init)
    assert 'weights = "' + str(init) in (work / "a" / "config.toml").read_text()
    init.rename(init.with_suffix(".away"))  # resuming must not need the starting weights
    resumed = _cli(["finetune", "--resume", str(work / "a"), "--no-progress"], cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    init.with_suffix(".away").rename(init)
    straight = _cli([*common, "--out", "b"], cwd=work)
    assert straight.returncode == 0, straight.stderr
    a = load_checkpoint(work / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(work / "b" / "checkpoints" / "last.pt")
    assert a["state"]["finished"] and a["state"]["global_step"] == b["state"]["global_step"] == 3 * per_epoch
    for part in ("model", "reference", "fisher"):
        assert set(a[part]) == set(b[part]), part
        for k in b[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert not all(torch.equal(a["fisher"][k], torch.ones_like(a["fisher"][k])) for k in a["fisher"])
    keep = ("epoch", "step", "train_loss", "lf_consistency", "lf_agreement", "selection", "best")
    assert [{k: r[k] for k in keep} for r in a["state"]["history"]] == [
        {k: r[k] for k in keep} for r in b["state"]["history"]
    ]
    for name in ("best.pt", "last.pt"):
        wa = load_checkpoint(work / "a" / "checkpoints" / name)["model"]
        wb = load_checkpoint(work / "b" / "checkpoints" / name)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wb), name


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


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_old_run_until_the_new_one_can_start(
    tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from atcon.cli import main

    run = tmp_path / "run"
    train(config(tiny_voc, epochs=1), run, progress=False)
    before = _snapshot(run)
    assert "checkpoints/last.pt" in before and "summary.json" in before
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    common = ["--model", "small", "--image-size", "32", "--per-class", "2", "--epochs", "1"]
    for bad in (
        ["--data", str(tmp_path / "no-such-folder")],
        ["--data", str(tiny_voc), "--weights", str(broken)],
        ["--data", str(tiny_voc), "--split", str(tmp_path / "nope.json")],
    ):
        assert main(["train", *bad, *common, "--out", str(run), "--overwrite", "--no-progress"]) == 2
        assert capsys.readouterr().err.count("\n") == 1  # one message
        assert _snapshot(run) == before, bad
    # A good command replaces it.
    assert (
        main(["train", "--data", str(tiny_voc), *common, "--out", str(run), "--overwrite", "--no-progress"])
        == 0
    )
    assert (run / "summary.json").is_file() and _snapshot(run) != before


def test_a_failed_start_leaves_nothing_that_blocks_the_retry(
    tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon.cli import main
    from atcon.train.trainer import Trainer

    base = tmp_path / "base"
    train(config(tiny_voc, epochs=1), base, progress=False)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    common = ["--data", str(tiny_voc), "--model", "small", "--image-size", "32", "--per-class", "2"]
    common += ["--epochs", "1", "--batch-size", "1", "--no-progress"]
    ft = tmp_path / "ft2"
    assert main(["finetune", *common, "--init", str(broken), "--out", str(ft)]) == 2
    assert "broken.pt is not a readable checkpoint" in capsys.readouterr().err
    assert not ft.exists()
    # Bad data or split: no empty folder either; the message names the missing path.
    assert main(["train", *common, "--data", str(tmp_path / "nothing"), "--out", str(ft)]) == 2
    assert main(["train", *common, "--split", str(tmp_path / "nope.json"), "--out", str(ft)]) == 2
    err = capsys.readouterr().err
    assert f"split file not found: {tmp_path / 'nope.json'}" in err and str(tmp_path / "nothing") in err
    assert not ft.exists()
    # The same command with a good --init then simply runs.
    init = str(base / "checkpoints" / "best.pt")
    assert main(["finetune", *common, "--init", init, "--out", str(ft)]) == 0
    assert (ft / "summary.json").is_file()
    # Interrupted inside the first epoch, before any checkpoint: the start files go again.
    calls = {"n": 0}
    real_step = Trainer.step

    def interrupted(self: Trainer, batch: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "step", interrupted)
    sup = tmp_path / "sup"
    assert main(["train", *common, "--out", str(sup)]) == 130
    assert calls["n"] == 2 and not sup.exists()
    monkeypatch.undo()
    assert main(["train", *common, "--out", str(sup)]) == 0


def test_start_and_resume_remove_stale_temporary_files(tiny_voc: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(tiny_voc, epochs=1), run, progress=False)
    stale = [run / "checkpoints" / ".last.pt.k3j2x9.tmp", run / ".metrics.csv.a8b7c6.tmp"]
    for f in stale:
        f.write_bytes(b"half a write")
    keep = run / "checkpoints" / "notes.txt"  # not a temporary file of atcon's
    keep.write_text("mine")
    train(config(tiny_voc), run, resume=True, progress=False)
    assert not any(f.exists() for f in stale) and keep.read_text() == "mine"
    # A new run in a folder holding only a stale temporary file.
    fresh = tmp_path / "fresh" / "checkpoints"
    fresh.mkdir(parents=True)
    (fresh / ".best.pt.zz.tmp").write_bytes(b"x")
    train(config(tiny_voc, epochs=1), fresh.parent, progress=False)
    assert sorted(p.name for p in fresh.iterdir()) == ["best.pt", "last.pt"]


def test_saved_config_holds_absolute_paths(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atcon.data import Split
    from atcon.train.data import task_split

    task_split(config(tiny_voc)).save(tmp_path / "split.json")
    monkeypatch.chdir(tmp_path)
    cfg = config(Path(os.path.relpath(tiny_voc, tmp_path)), epochs=1, split="split.json", unlabeled="pool:3")
    train(cfg, "run", progress=False)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["config"]
    assert saved["data"] == str(tiny_voc) and saved["split"] == str(tmp_path / "split.json")
    assert saved["unlabeled"] == "pool:3" and saved["weights"] is None
    assert Split.load(tmp_path / "run" / "split.json").train == Split.load(tmp_path / "split.json").train
    builtin = config(tiny_voc).replace(data="cluttered-fashion")
    from atcon.train.run import absolute_paths

    assert absolute_paths(builtin).data == "cluttered-fashion"
    assert absolute_paths(builtin.replace(weights="IMAGENET1K_V1")).weights == "IMAGENET1K_V1"


def test_progress_in_a_log_file_is_one_line_per_epoch(tiny_voc: Path, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    args = ["train", "--data", str(tiny_voc), "--model", "small", "--image-size", "32", "--per-class", "2"]
    args += ["--epochs", "2", "--batch-size", "1", "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with log.open("w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "atcon.cli", *args], stdout=f, stderr=f, env=env, timeout=300, check=False
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("supervised run: epoch ")]
    assert [line.split(",")[0] for line in lines] == [
        "supervised run: epoch 0 (1/2)",
        "supervised run: epoch 1 (2/2)",
    ]
    assert all("val_map" in line for line in lines)
    assert re.search(r"^supervised run: epochs 0-1 of \d+ steps each$", text, re.MULTILINE)
    # One numbering: the epochs the console names are metrics.csv's and log.txt's.
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert sorted({int(r["epoch"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 0}) == [0, 1]
    logged = re.findall(r"epoch (\d+) step", (tmp_path / "run" / "log.txt").read_text())
    assert sorted(set(map(int, logged))) == [0, 1]


def test_tensorboard_holds_the_metrics_csv_scalars(tiny_voc: Path, tmp_path: Path) -> None:
    """With ``tensorboard`` installed (the ``[tensorboard]`` extra), every metrics.csv number is a
    scalar of the run's ``tensorboard/`` folder at its step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(config(tiny_voc), run, progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"train_loss", "val_map"} <= tags
    logged = {e.step: e.value for e in events.Scalars("val_map")}
    for row in rows:
        if row.get("val_map"):
            assert logged[int(row["step"])] == pytest.approx(float(row["val_map"]), rel=1e-6)


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_non_finite_weights_are_never_saved(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poison: str
) -> None:
    """Weights that turn non-finite while the epoch's loss still looks finite: the run stops
    (NonFiniteLossError, exit 2 in the CLI) and every checkpoint on disk stays finite."""
    from atcon.train.trainer import Trainer

    real = Trainer.train_one_epoch

    def poisoned(self: Trainer, epoch: int, bar: object) -> torch.Tensor:
        total = real(self, epoch, bar)  # type: ignore[arg-type]
        if epoch == 1:
            with torch.no_grad():
                self.net.fc.weight[0, 0] = float(poison)
        return total

    monkeypatch.setattr(Trainer, "train_one_epoch", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="non-finite") as err:
        train(config(tiny_voc, epochs=3), run, progress=False)
    assert str(run / "checkpoints" / "last.pt") in str(err.value)
    saved = list((run / "checkpoints").glob("*.pt"))
    assert {p.name for p in saved} >= {"last.pt", "best.pt"}
    for path in saved:
        ckpt = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point()), path
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["epoch"] == 1  # epoch 0's state


@pytest.mark.timeout(120)
def test_a_batch_larger_than_the_data_is_clamped(tiny_voc: Path, tmp_path: Path) -> None:
    """`--batch-size 100000` on a handful of images used to build 100000-item batches (minutes of
    silence); now a step reads each training item once."""
    from atcon.train.trainer import Trainer

    seen: list[int] = []
    real = Trainer.train_one_epoch

    def count(self: Trainer, epoch: int, bar: object) -> torch.Tensor:
        seen.extend(s.batch_size for s in self.samplers.values())
        return real(self, epoch, bar)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_one_epoch", count)
        summary = train(config(tiny_voc, epochs=1, batch_size=100_000), tmp_path / "run", progress=False)
    assert summary["epochs_run"] == 1
    assert seen and all(b <= 2 * 3 for b in seen)  # 2 labeled images per class, 3 classes


def test_resume_refuses_changed_settings_and_an_edited_config(
    tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resumed run continues as it was configured: a flag that differs, or an edited
    config.toml, is refused instead of being silently ignored."""
    from atcon.cli import main

    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_voc), "--model", "small", "--image-size", "32", "--per-class", "2"]
    assert main([*args, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.5 (the run has None)" in err and len(err.strip().splitlines()) == 1
    # The same values as the run's, relative path included, are fine (nothing to ignore).
    assert (
        main(["train", "--resume", str(run), "--data", os.path.relpath(tiny_voc), "--image-size", "32"]) == 0
    )
    capsys.readouterr()
    toml = run / "config.toml"
    toml.write_text(toml.read_text().replace("epochs = 1", "epochs = 5"))
    assert main(["train", "--resume", str(run)]) == 2
    assert "was edited after the run started (epochs" in capsys.readouterr().err
