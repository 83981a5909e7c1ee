"""The training config: precedence, TOML, validation, the field docs behind --help and --print-config."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from atcon.commands._config import add_config_arguments, config_from_args
from atcon.consistency import ConsistencyConfig
from atcon.train.config import TrainConfig, field_docs
from atcon.train.config_toml import read_toml, toml_reference

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _parser(exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atcon train")
    add_config_arguments(parser, exclude)
    return parser


def test_precedence_defaults_toml_flags_forced(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 5\nbatch_size = 3\nstrategy = "combined"\naugment = false\nlr = 0.1\n')
    args = _parser().parse_args(["--config", str(toml), "--epochs", "7", "--mask-center", "0.5"])
    cfg = config_from_args(args, strategy="finetune")
    assert cfg.epochs == 7  # flag over TOML
    assert cfg.batch_size == 3 and cfg.lr == 0.1 and cfg.augment is False  # TOML over default
    assert cfg.strategy == "finetune"  # forced over TOML
    assert cfg.mask_center == 0.5  # flag over default
    assert cfg.per_class == TrainConfig().per_class  # default
    # A flag that was not given leaves the TOML value; --augment/--no-augment both override it.
    assert config_from_args(_parser().parse_args(["--config", str(toml), "--augment"])).augment is True
    assert config_from_args(_parser().parse_args(["--no-augment"])).augment is False
    assert config_from_args(_parser().parse_args([])) == TrainConfig()


def test_reference_mask_from_flags_reaches_the_consistency_config() -> None:
    args = _parser().parse_args(["--mask-scale", "none", "--mask-center", "0.5", "--mask-sharpness", "8"])
    cfg = config_from_args(args, strategy="finetune")
    assert cfg.consistency == ConsistencyConfig(mask_scale="none", mask_center=0.5, mask_sharpness=8)
    # Every ConsistencyConfig field is a TrainConfig field of the same name and default.
    defaults = TrainConfig()
    for f in dataclasses.fields(ConsistencyConfig):
        assert getattr(defaults, f.name) == f.default, f.name
    with pytest.raises(ValueError, match="mask_sharpness must be > 0"):
        TrainConfig(mask_sharpness=0.0)
    with pytest.raises(ValueError, match="has no such mask"):
        TrainConfig(resolution="gb_pool", mask_source="sobel")


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(
        data='C:\\data\\"voc"', strategy="alternated", lr=3e-4, mask_center=0.5, augment=False, split=None
    )
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig(**read_toml(path)) == cfg
    assert "split" not in read_toml(path)  # unset values are left out


def test_toml_and_value_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("epochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match="unknown config key\\(s\\) learning_rate"):
        read_toml(path)
    path.write_text("epochs = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_toml(path)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="'epochs' must be int"):
        TrainConfig(epochs="two")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'strategy' must be 'supervised'"):
        TrainConfig(strategy="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="'augment' must be bool"):
        TrainConfig(augment=1)  # type: ignore[arg-type]


def test_data_draw_fields_val_size_group_by_multi_label(tmp_path: Path) -> None:
    # val_size is a count or a fraction, from flags and from TOML alike.
    assert config_from_args(_parser().parse_args(["--val-size", "40"])).val_size == 40
    assert config_from_args(_parser().parse_args(["--val-size", "0.3"])).val_size == 0.3
    for bad in (0, 1.0, 1.5, -3):
        with pytest.raises(ValueError, match="val_size must be a count >= 1 or a fraction in \\(0, 1\\)"):
            TrainConfig(val_size=bad)
    with pytest.raises(ValueError, match="'val_size' must be int"):
        TrainConfig(val_size=True)
    cfg = TrainConfig(val_size=0.25, group_by="subject", multi_label=False)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig(**read_toml(path)) == cfg
    path.write_text("val_size = 50\n")
    assert TrainConfig(**read_toml(path)).val_size == 50
    with pytest.raises(ValueError, match="'group_by' must be 'subject'"):
        TrainConfig(group_by="patient")  # type: ignore[arg-type]
    args = _parser().parse_args(["--group-by", "subject", "--no-multi-label"])
    assert (config_from_args(args).group_by, config_from_args(args).multi_label) == ("subject", False)
    assert TrainConfig().val_size is None and TrainConfig().multi_label is None


def test_strategy_defaults_come_from_the_strategy() -> None:
    assert TrainConfig(strategy="finetune").learning_rate == 5e-6
    assert TrainConfig(strategy="combined").learning_rate == 1e-3
    assert TrainConfig(strategy="finetune", lr=0.01).learning_rate == 0.01
    assert [
        s
        for s in ("supervised", "finetune", "combined", "alternated", "simclr")
        if TrainConfig(strategy=s).uses_consistency
    ] == [  # type: ignore[arg-type]
        "finetune",
        "combined",
        "alternated",
    ]


def test_every_field_is_documented_once_and_help_shows_it() -> None:
    docs = field_docs()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(docs) == names  # every field, in field order, nothing else
    assert all(len(text.split()) >= 3 for text in docs.values())
    parser = _parser(exclude=("strategy",))
    actions = {a.dest: a for a in parser._actions}
    assert "strategy" not in actions
    for name in names:
        if name == "strategy":
            continue
        help_text = actions[name].help or ""
        assert help_text.startswith(docs[name].replace("%", "%%")), name
        assert "(default: " in help_text
    # argparse renders it (a stray % would raise here).
    text = parser.format_help()
    assert "Seed of the few-shot draw" in text and "(default: unset)" in text


def test_print_config_is_a_toml_file_of_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--print-config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed == toml_reference()
    assert TrainConfig(**tomllib.loads(printed)) == TrainConfig()
    docs = field_docs()
    for f in dataclasses.fields(TrainConfig):
        assert docs[f.name].split()[0] in printed
        assert (f"# {f.name} =" if f.default is None else f"\n{f.name} = ") in printed, f.name
    assert "# one of: gb_mask, gradcam_mask, gradcam_upsample, gb_pool" in printed


def test_a_wrong_toml_value_is_an_error_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = "ten"\nbatch_size = 3\n')
    args = _parser().parse_args(["--config", str(toml), "--epochs", "7"])
    with pytest.raises(ValueError, match=r"run\.toml: config key 'epochs' must be int; got 'ten'"):
        config_from_args(args)
    toml.write_text('scheduler = "linear"\n')
    args = _parser().parse_args(["--config", str(toml), "--scheduler", "cosine"])
    with pytest.raises(ValueError, match=r"config key 'scheduler' must be 'none' \| 'cosine'"):
        config_from_args(args)


def test_command_defaults_sit_between_field_defaults_and_toml(tmp_path: Path) -> None:
    own = {"epochs": 3, "patience": 2, "augment": False}
    parser = argparse.ArgumentParser(prog="atcon finetune")
    add_config_arguments(parser, ("strategy",), defaults=own)
    cfg = config_from_args(parser.parse_args([]), own, strategy="finetune")
    assert (cfg.epochs, cfg.patience, cfg.augment, cfg.batch_size) == (3, 2, False, 4)
    toml = tmp_path / "ft.toml"
    toml.write_text("epochs = 5\n")
    cfg = config_from_args(parser.parse_args(["--config", str(toml), "--patience", "6"]), own)
    assert (cfg.epochs, cfg.patience, cfg.augment) == (5, 6, False)  # TOML, flag, command default
    cfg = config_from_args(parser.parse_args(["--augment"]), own, augment=False)
    assert cfg.augment is False  # forced wins over the flag
    options = " ".join(parser.format_help().split()).split("options:", 1)[1]
    assert "(default: 3)" in options.split("--epochs EPOCHS", 1)[1].split(" --", 1)[0]
    printed = tomllib.loads(toml_reference(own))
    assert printed["epochs"] == 3 and printed["augment"] is False and printed["batch_size"] == 4
    with pytest.raises(ValueError, match="unknown config key"):
        config_from_args(parser.parse_args([]), {"epoch": 3})
    with pytest.raises(ValueError, match="'epochs' must be int"):
        config_from_args(parser.parse_args([]), {"epochs": "3"})


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, TrainConfig]:
    """The config each `atcon train/finetune` call would train, under key "cfg" (nothing trains)."""
    configs: dict[str, TrainConfig] = {}

    def fake_train(cfg: TrainConfig, run_dir: Path, **kw: object) -> dict[str, object]:
        configs["cfg"] = cfg
        return {}

    monkeypatch.setattr("atcon.train.run.train", fake_train)
    return configs


def test_finetune_command_uses_its_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seen: dict[str, TrainConfig]
) -> None:
    from atcon.cli import main
    from atcon.commands import train as train_cmd

    monkeypatch.setitem(train_cmd.FINETUNE_DEFAULTS, "epochs", 13)
    with pytest.raises(SystemExit):
        main(["finetune", "--print-config"])
    assert tomllib.loads(capsys.readouterr().out)["epochs"] == 13
    assert main(["finetune", "--init", "x.pt"]) == 0
    assert seen["cfg"].epochs == 13 and seen["cfg"].strategy == "finetune"
    assert main(["finetune", "--init", "x.pt", "--epochs", "2"]) == 0
    assert seen["cfg"].epochs == 2
    assert main(["train"]) == 0
    assert seen["cfg"].epochs == 20  # other commands keep the field default


def test_finetune_init_takes_the_network_from_the_checkpoint(
    tmp_path: Path, seen: dict[str, TrainConfig]
) -> None:
    """`atcon finetune --init CKPT` rebuilds what the checkpoint holds; flags still win."""
    from atcon.cli import main

    ckpt = tmp_path / "best.pt"
    config = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "interpolation": "bicubic",
        "target_layer": "layer3",
    }
    torch.save({"model": {}, "model_name": "resnet50", "image_size": 96, "config": config}, ckpt)
    assert main(["finetune", "--init", str(ckpt)]) == 0
    cfg = seen["cfg"]
    assert (cfg.model, cfg.image_size, cfg.weights) == ("resnet50", 96, str(ckpt))
    assert (cfg.mean, cfg.std, cfg.interpolation) == ((0.5,) * 3, (0.25,) * 3, "bicubic")
    assert cfg.target_layer == "layer3"
    assert main(["finetune", "--init", str(ckpt), "--model", "resnet18", "--image-size", "64"]) == 0
    assert (seen["cfg"].model, seen["cfg"].image_size, seen["cfg"].mean) == ("resnet18", 64, (0.5,) * 3)
    assert main(["finetune", "--init", "IMAGENET1K_V1"]) == 0  # not a file: nothing inherited
    assert seen["cfg"].model == TrainConfig().model


def test_finetune_defaults_to_the_guard_and_label_free_selection(
    monkeypatch: pytest.MonkeyPatch, seen: dict[str, TrainConfig]
) -> None:
    """`atcon finetune` runs the measured-safe recipe; flags give the paper's back; other
    commands and the experiments keep the paper's defaults."""
    from atcon.cli import main
    from atcon.experiments.methods import GUARDED, method_runs

    assert main(["finetune", "--init", "x.pt"]) == 0
    cfg = seen["cfg"]
    assert (cfg.anchor_weight, cfg.select) == (1.0, "label-free")
    assert {k: getattr(cfg, k) for k, _ in GUARDED} == dict(GUARDED)
    assert main(["finetune", "--init", "x.pt", "--anchor-weight", "0", "--select", "labels"]) == 0
    assert (seen["cfg"].anchor_weight, seen["cfg"].select) == (0.0, "labels")
    assert main(["train"]) == 0
    assert (seen["cfg"].anchor_weight, seen["cfg"].select) == (0.0, "labels")

    captured: dict[str, Any] = {}

    class Outcome:
        markdown, files = "", ()

    def fake_experiment(name: str, cfg: TrainConfig, exp: Any, out: Path, **kw: Any) -> Outcome:
        captured.update(cfg=cfg, exp=exp)
        return Outcome()

    monkeypatch.setattr("atcon.experiments.suite.run_experiment", fake_experiment)
    assert main(["experiment", "classification", "--out", "x"]) == 0
    runs = method_runs(captured["cfg"], captured["exp"], per_class=2, seed=0, weights=None)
    tuned = [r.cfg for r in runs.values() if r.cfg.strategy == "finetune"]
    assert tuned and all((c.anchor_weight, c.select) == (0.0, "labels") for c in tuned)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number"),
        ({"mean": (0.5, float("nan"), 0.5)}, "mean must be a finite number"),
        ({"image_size": 0}, "image_size must be >= 16"),
        ({"image_size": 1}, "image_size must be >= 16"),
        ({"seed": 2**63}, r"seed and split_seed must be in \[0, 2\*\*63\)"),
        ({"seed": -1}, "seed and split_seed"),
    ],
)
def test_settings_that_would_train_into_nan_or_crash_are_refused(
    setting: dict[str, Any], message: str
) -> None:
    """Refused before a run starts (the CLI prints the line, exit 2), not found out mid-run."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(data="x", **setting)


def test_cli_refuses_lr_inf_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from atcon.cli import main

    assert main(["train", "--data", "x", "--lr", "inf", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr must be a finite number" in err[0]
    assert not (tmp_path / "r").exists()


def test_every_consistency_option_is_a_train_setting_of_the_same_name_type_and_default() -> None:
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for f in dataclasses.fields(ConsistencyConfig):
        assert f.name in train, f"ConsistencyConfig.{f.name} has no TrainConfig field"
        assert train[f.name].default == f.default, f.name
        assert str(train[f.name].type) == str(f.type), f.name
    changed = {
        "resolution": "gradcam_mask", "similarity": "ssim", "mask_scale": "none", "mask_center": 0.5,
        "mask_sharpness": 8.0, "detach_mask": True, "fold_norm": False, "lean_conv_grad": True,
    }  # fmt: skip
    cfg = TrainConfig(data="x", **changed).consistency
    assert {k: getattr(cfg, k) for k in changed} == changed
