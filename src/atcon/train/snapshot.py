"""The checkpoints of a run: what ``checkpoints/{last,best}.pt`` hold and how a run continues
from ``last``.

A ``best`` checkpoint is the classifier with the run's description (:func:`checkpoint_meta`);
``last`` adds everything a resume needs: optimizer, scheduler, scaler, :class:`RunState`, RNG
states, and the parts of the network and loss that are not the classifier (SimCLR's projection
head, the frozen starting network, the Fisher weights, the mask model). The keys are a file
format: old run folders must keep loading, so they change only with a migration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import atcon
from atcon.train.loss_setup import LossSetup
from atcon.train.network import TrainedNetwork
from atcon.train.training_state import rng_state, set_rng_state

if TYPE_CHECKING:
    from atcon.train.config import TrainConfig
    from atcon.train.data import TaskData


@dataclass
class RunState:
    """Progress of a run, saved in every checkpoint."""

    epoch: int = 0  # epoch to run next (or being run)
    batch: int = 0  # next batch within that epoch
    epoch_loss: float = 0.0  # sum of the losses of the epoch's batches done so far
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_evals: int = 0
    finished: bool = False
    stopped_early: bool = False
    stop_requested: bool = False  # the selection rule's verdict at the latest evaluation
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Optimization:
    """The optimizer-side state of a run: saved in ``last`` and restored on resume."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None


def checkpoint_meta(cfg: TrainConfig, data: TaskData) -> dict[str, Any]:
    """What every checkpoint says about its run: config, classes, task, inputs, version."""
    return {
        "config": cfg.to_dict(),
        "classes": list(data.classes),
        "task": data.task,
        "model_name": cfg.model,
        "num_classes": len(data.classes),
        "image_size": data.image_size,
        "video": data.video,
        # The inputs' statistics, for whoever reads the checkpoint (None: clips, Kinetics).
        "mean": list(cfg.mean) if cfg.mean is not None else None,
        "std": list(cfg.std) if cfg.std is not None else None,
        "interpolation": cfg.interpolation,
        "atcon_version": atcon.__version__,
    }


def best_payload(model_state: dict[str, Tensor], meta: dict[str, Any], state: RunState) -> dict[str, Any]:
    """A ``best`` checkpoint: the classifier, the run's description, its epoch and metric."""
    return {"model": model_state, "kind": "best", **meta, "epoch": state.epoch, "metric": state.best_metric}


def last_payload(
    model_state: dict[str, Tensor],
    meta: dict[str, Any],
    state: RunState,
    *,
    network: TrainedNetwork,
    optimization: Optimization,
    loss: LossSetup,
) -> dict[str, Any]:
    """A ``last`` checkpoint: everything :func:`restore` needs to continue the run bit for bit."""
    scaler, anchor = optimization.scaler, loss.param_anchor
    return {
        "model": model_state,
        "kind": "last",
        **meta,
        "optimizer": optimization.optimizer.state_dict(),
        "scheduler": optimization.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": asdict(state),
        "rng": rng_state(),
        "projection": network.extra_state(),
        "reference": loss.reference.state_dict() if loss.reference is not None else None,
        "fisher": anchor.weights if anchor is not None else None,
        "mask_model": loss.mask_model.state_dict() if loss.mask_model is not None else None,
    }


def restore(
    ckpt: dict[str, Any], *, network: TrainedNetwork, optimization: Optimization, loss: LossSetup
) -> RunState:
    """Load a ``last`` checkpoint into the run's parts; returns its :class:`RunState`.

    The RNG states are set last, so nothing restored here draws from them afterwards.
    """
    network.load_classifier_state(ckpt["model"])
    network.load_extra_state(ckpt.get("projection"))
    optimization.optimizer.load_state_dict(ckpt["optimizer"])
    optimization.scheduler.load_state_dict(ckpt["scheduler"])
    if optimization.scaler is not None and ckpt.get("scaler") is not None:
        optimization.scaler.load_state_dict(ckpt["scaler"])
    if loss.reference is not None and ckpt.get("reference") is not None:
        loss.reference.load_state_dict(ckpt["reference"])
    if loss.mask_model is not None and ckpt.get("mask_model") is not None:
        loss.mask_model.load_state_dict(ckpt["mask_model"])
    anchor = loss.param_anchor
    if anchor is not None and anchor.weights is not None and anchor.names is not None:
        assert loss.reference is not None  # a parameter anchor is built around it
        fisher = ckpt.get("fisher")
        # Checkpoints written before the Fisher weights were saved: the same estimate again,
        # from the restored starting network.
        anchor.weights = (
            {k: v.to(loss.fisher.device) for k, v in fisher.items()}
            if fisher is not None
            else loss.fisher.weights(loss.reference, anchor.names)
        )
    state = RunState(**ckpt["state"])
    set_rng_state(ckpt["rng"])
    return state
