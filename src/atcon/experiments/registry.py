"""Every experiment ``atcon experiment NAME`` runs, in one list.

The command's choices and help, :func:`~atcon.experiments.suite.run_experiment` and the README's
list of experiments (held equal by a test) all come from :data:`EXPERIMENTS`. An entry's
``run`` takes the training settings, the experiment's settings, the output folder and the shard,
and returns the experiment's :class:`~atcon.experiments.output.Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from atcon.experiments.methods import ExperimentConfig
from atcon.experiments.output import Outcome
from atcon.experiments.runner import Store
from atcon.train.config import TrainConfig

Runner = Callable[[TrainConfig, ExperimentConfig, Store], Outcome]


@dataclass(frozen=True)
class Experiment:
    """One experiment.

    Attributes:
        name: its ``atcon experiment`` name.
        summary: one sentence for ``--help`` and the README: what it compares.
        runner: runs it into a :class:`~atcon.experiments.runner.Store` (finished runs reused).
        shardable: whether ``--shard K/N`` can split its runs between processes.
    """

    name: str
    summary: str
    runner: Callable[[], Runner]
    shardable: bool = True

    def run(
        self,
        base: TrainConfig,
        exp: ExperimentConfig,
        out: str | Path,
        *,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
    ) -> Outcome:
        """Run into ``out`` as process ``shard = (K, N)`` of N sharing the folder."""
        if shard[1] > 1 and not self.shardable:
            raise ValueError(f"the {self.name} experiment runs in one process: drop --shard")
        store = Store(out, device=exp.device, n_resamples=exp.resamples, progress=progress, shard=shard)
        return self.runner()(base, exp, store)


def _suite(name: str) -> Callable[[], Runner]:
    # Imported when run: the registry is read by every `atcon --help`, the runners pull in training.
    def load() -> Runner:
        from atcon.experiments import suite

        runner: Runner = getattr(suite, f"run_{name}")
        return runner

    return load


def _module(module: str, function: str) -> Callable[[], Runner]:
    def load() -> Runner:
        import importlib

        runner: Runner = getattr(importlib.import_module(f"atcon.experiments.{module}"), function)
        return runner

    return load


def _ablation(base: TrainConfig, exp: ExperimentConfig, store: Store) -> Outcome:
    """Table 4 at ``exp.at_per_class`` samples per class, one supervised run per seed."""
    from atcon.experiments.ablation import run_ablation_seeds

    result = run_ablation_seeds(
        base.replace(per_class=exp.at_per_class), store.out, list(exp.seeds), progress=store.progress
    )
    text = "Pearson correlation (%) between each consistency loss and the supervised validation loss:"
    files = [store.out / f"ablation.{ext}" for ext in ("md", "json", "csv", "html")]
    return Outcome("ablation", f"{text}\n{result['table']}", [], result["seconds"], files)


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "classification",
        "Baseline / + Aug / + Attention (clips: Baseline, B + Attention, SimCLR, S + Attention) over "
        "samples per class (the paper's Tables 1-2)",
        _suite("classification"),
    ),
    Experiment(
        "localization",
        "Grad-CAM IoU and pointing game per architecture (--models; Table 3)",
        _suite("localization"),
    ),
    Experiment(
        "ablation",
        "Pearson correlation of the 4 x 3 consistency-loss variants with the supervised validation "
        "loss, per seed (Table 4)",
        lambda: _ablation,
        shardable=False,
    ),
    Experiment(
        "strategies",
        "consistency fine-tuning vs combined vs alternated training (section 5)",
        _suite("strategies"),
    ),
    Experiment(
        "controls",
        "the consistency mask from Guided Backprop vs a re-initialised network, Sobel edges, a random "
        "smooth mask, and detach_mask: where does the gain come from?",
        _suite("controls"),
    ),
    Experiment(
        "safety",
        "fine-tuning on an unlabeled pool (--pool) with and without the collapse guard, kept at its "
        "final model or selected with and without labels, and the regret of label-free selection",
        _module("safety", "run_safety"),
    ),
    Experiment(
        "regimes",
        "+ Attention vs + Aug one factor at a time (source strength, samples per class, pool or not, "
        "guard, image size, architecture), with the mask controls where it lifts F1 or IoU",
        _module("regimes", "run_regimes"),
    ),
    Experiment(
        "shortcut",
        "a network that learned a class-correlated cue (shortcut-fashion, --rhos, --cue): consistency "
        "fine-tuning, box supervision from K boxes per class (both forms), the mask controls and a "
        "label-free warning analysis, on --networks scratch source imagenet",
        _module("shortcut", "run_shortcut"),
    ),
)
"""The experiments, in the order of the paper, then atcon's own."""

NAMES: tuple[str, ...] = tuple(e.name for e in EXPERIMENTS)


def experiment(name: str) -> Experiment:
    """The entry called ``name``; ValueError naming the choices for an unknown one."""
    for entry in EXPERIMENTS:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
