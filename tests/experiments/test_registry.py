"""The experiment registry: one list behind the command, its help, run_experiment and the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atcon.experiments.methods import ExperimentConfig
from atcon.experiments.registry import EXPERIMENTS, NAMES, experiment
from atcon.experiments.suite import run_experiment
from atcon.train.config import TrainConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def test_names_are_unique_and_every_entry_has_a_summary() -> None:
    assert len(set(NAMES)) == len(NAMES) == len(EXPERIMENTS)
    assert {"ablation", "safety", "shortcut"} <= set(NAMES)
    assert all(e.summary and not e.summary.endswith(".") for e in EXPERIMENTS)


def test_every_runner_resolves_to_a_function() -> None:
    for entry in EXPERIMENTS:
        assert callable(entry.runner()), entry.name


def test_readme_lists_exactly_the_registered_experiments() -> None:
    listed = set(re.findall(r"^atcon experiment (\w+)", README.read_text(), flags=re.M))
    assert listed == set(NAMES)


def test_unknown_name_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of classification, localization, ablation"):
        experiment("tables")
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("tables", TrainConfig(), ExperimentConfig(), "unused")


def test_ablation_refuses_shards(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="drop --shard"):
        experiment("ablation").run(TrainConfig(), ExperimentConfig(), tmp_path, shard=(1, 2))


def test_guarded_adds_the_recipe_under_explicit_finetune_settings() -> None:
    from atcon.experiments.methods import finetune_config
    from atcon.train.config import GUARDED_RECIPE

    base = TrainConfig()
    plain = finetune_config(base, ExperimentConfig())
    guarded = finetune_config(base, ExperimentConfig(guarded=True))
    assert (guarded.anchor_weight, guarded.select) == (GUARDED_RECIPE["anchor_weight"], "label-free")
    assert (plain.anchor_weight, plain.select) == (TrainConfig().anchor_weight, TrainConfig().select)
    over = finetune_config(base, ExperimentConfig(guarded=True, finetune=(("select", "last"),)))
    assert (over.anchor_weight, over.select) == (GUARDED_RECIPE["anchor_weight"], "last")
