"""The state and verbs of one training run: build, step, train an epoch, evaluate, save, restore.

:class:`Trainer` holds the network, optimizer, scheduler, data streams and :class:`RunState`;
what a step trains on and its loss come from the run's :class:`~atcon.train.strategies.Strategy`,
which checkpoint is the best from its :class:`~atcon.train.selection.SelectionRule`.
:func:`atcon.train.train` drives it. Its collaborators are built elsewhere, each from the settings
it reads: the loss's parts in :mod:`atcon.train.loss_setup`, the loaders in
:mod:`atcon.train.streams`; checkpoints are written and read by :mod:`atcon.train.snapshot`,
evaluation rows measured and written by :mod:`atcon.train.validation`, and the network answers
for its own saving (:mod:`atcon.train.network`).

``checkpoints/last.pt`` is the resume point (model, optimizer, scheduler, scaler, epoch, batch
within the epoch, RNG states). Augmentations and sampling are pure functions of
``(seed, epoch, index)``, so a resumed run equals an uninterrupted one with the same seed
(bitwise on CPU).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from atcon.models import build_model
from atcon.train import distributed as dist_utils
from atcon.train.config import TrainConfig
from atcon.train.data import TaskData
from atcon.train.engine import autocast, optimizer_step, touch_parameters
from atcon.train.guard import trainable_top_blocks
from atcon.train.loss_setup import BoxSettings, GuardSettings, build_loss_terms
from atcon.train.network import trained_network
from atcon.train.rundir import RunLog
from atcon.train.snapshot import (
    Optimization,
    RunState,
    best_payload,
    checkpoint_meta,
    last_payload,
    restore,
)
from atcon.train.strategies import Batch, Stream, strategy_class
from atcon.train.streams import LoaderSettings, build_streams, eval_loader
from atcon.train.training_state import atomic_save, non_finite_entries
from atcon.train.validation import NonFiniteLossError, RowWriter, holdout_signals, validation_metrics

__all__ = ["NonFiniteLossError", "RunState", "Trainer"]

# Testing hook: SIGKILL this process right after the given global step (0 = never).
_KILL_AT_STEP = int(os.environ.get("ATCON_FAULT_KILL_AT_STEP", "0"))


class Trainer:
    """State and verbs of one run; :func:`atcon.train.train` drives it.

    Building one writes nothing to disk: its log lines are held until ``self.log.release()``
    (:func:`atcon.train.train` releases them once the run folder is set up), and checkpoints,
    metrics and TensorBoard files are written from the first save or evaluation on.

    Args:
        cfg: the run's config.
        run_dir: the run folder (log, metrics and checkpoints are written there).
        info: this process's rank, world size and device.
        data: the run's datasets.
        resume: the trainer will be :meth:`restore`-d from a ``last`` checkpoint: the network is
            built without its starting weights (``cfg.weights`` is not read, so the run does not
            need that file any more) and nothing is computed from them (the Fisher weights of
            the parameter anchor come from the checkpoint).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        info: dist_utils.DistInfo,
        data: TaskData,
        *,
        resume: bool = False,
    ) -> None:
        self.cfg, self.run_dir, self.info, self.data = cfg, run_dir, info, data
        self.device = info.device
        self.log = RunLog(run_dir / "log.txt", info.is_main, held=True)
        loaders = LoaderSettings.of(cfg)
        kind = strategy_class(cfg.strategy)
        streams = build_streams(kind.streams_for(cfg), kind.two_views, data, loaders, cfg.seed, info)
        self.samplers, self.loaders = streams.samplers, streams.loaders
        self.strategy = kind(
            cfg, streams.sizes, {s: sampler.batches_per_epoch for s, sampler in self.samplers.items()}
        )
        # On resume every weight comes from last.pt: the architecture alone is built.
        weights = None if resume else cfg.weights
        classifier = build_model(cfg.model, len(data.classes), weights, new_head=cfg.new_head)
        if cfg.trainable_blocks:
            self.log(f"trainable blocks: {', '.join(trainable_top_blocks(classifier, cfg.trainable_blocks))}")
        # Before the strategy wraps the classifier: the frozen copies are of the starting network.
        self.loss = build_loss_terms(
            classifier,
            data,
            consistency=cfg.consistency,
            target_layer=cfg.target_layer,
            temperature=cfg.temperature,
            uses_consistency=kind.uses_consistency,
            label_free=cfg.select == "label-free",
            guard=GuardSettings.of(cfg),
            boxes=BoxSettings.of(cfg),
            loaders=loaders,
            seed=cfg.seed,
            device=self.device,
            resume=resume,
            log=self.log,
        )
        self.net: nn.Module = self.strategy.network(classifier).to(self.device)
        self.network = trained_network(self.net)
        self.model: nn.Module = self.net
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        self.terms = self.loss.bind(self.model)
        self.selection = self.strategy.selection(data.task, cfg.patience)
        self.steps_per_epoch = self.strategy.steps_per_epoch
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total, 1))
            if cfg.scheduler == "cosine"
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.optimization = Optimization(self.optimizer, self.scheduler, self.scaler)
        self.state = RunState()
        self.val_loader = eval_loader(data.val, loaders, self.device)
        self.rows = RowWriter(run_dir, info.is_main)

    # --- checkpoints ---------------------------------------------------------------------

    def save(self, kind: str) -> None:
        """Write ``checkpoints/{kind}.pt``: ``"last"`` (everything to resume) or ``"best"``."""
        if not self.info.is_main:
            return
        model_state = self.network.classifier_state()
        self.check_finite_weights(model_state)
        meta = checkpoint_meta(self.cfg, self.data)
        payload = (
            last_payload(
                model_state,
                meta,
                self.state,
                network=self.network,
                optimization=self.optimization,
                loss=self.loss,
            )
            if kind == "last"
            else best_payload(model_state, meta, self.state)
        )
        atomic_save(payload, self.run_dir / "checkpoints" / f"{kind}.pt")

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``last`` checkpoint: weights, optimizer, scheduler, state, RNG."""
        self.state = restore(ckpt, network=self.network, optimization=self.optimization, loss=self.loss)

    # --- one step ------------------------------------------------------------------------

    def step(self, batch: dict[Stream, Batch]) -> Tensor:
        """One optimizer step on one batch per drawn stream; returns the detached loss."""
        on_device = {s: (x.to(self.device, non_blocking=True), t) for s, (x, t) in batch.items()}
        with autocast(self.device, self.cfg.amp):
            loss = self.strategy.loss(self.terms, on_device)
        loss = touch_parameters(loss, self.net)
        optimizer_step(
            loss, self.optimizer, scaler=self.scaler, clip_grad=self.cfg.clip_grad, parameters=self.params
        )
        self.scheduler.step()
        return loss.detach()

    # --- epochs --------------------------------------------------------------------------

    def _iterators(self, epoch: int, start: int) -> dict[Stream, Any]:
        """Data iterators positioned at batch ``start`` of ``epoch`` (replaying the strategy's draws)."""
        drawn = [self.strategy.draw(epoch, b) for b in range(start)]
        remaining = self.steps_per_epoch - start
        for s, sampler in self.samplers.items():
            sampler.set_epoch(epoch, sum(s in d for d in drawn), remaining)
        # Each iterator spins up its workers: only the streams the strategy reads have one.
        return {s: iter(loader) for s, loader in self.loaders.items()}

    def train_one_epoch(self, epoch: int, progress: Any) -> Tensor:
        """Run the rest of ``epoch`` from ``state.batch``; returns the summed loss (on device)."""
        st = self.state
        iterators = self._iterators(epoch, st.batch)
        total = torch.full((), st.epoch_loss, device=self.device)
        for b in range(st.batch, self.steps_per_epoch):
            total += self.step({s: next(iterators[s]) for s in self.strategy.draw(epoch, b)})
            st.batch, st.global_step = b + 1, st.global_step + 1
            if st.global_step == _KILL_AT_STEP:  # fault injection for the resume tests
                os.kill(os.getpid(), signal.SIGKILL)
            if progress is not None:
                progress.update(1)
            if self.cfg.checkpoint_every and st.global_step % self.cfg.checkpoint_every == 0:
                self.check_finite(total)
                st.epoch_loss = float(total)
                self.save("last")
            if self.cfg.eval_every and st.global_step % self.cfg.eval_every == 0:
                self.evaluate(epoch, None)
        return total

    def _stop(self, msg: str) -> NoReturn:
        """Log why the run stops on a non-finite value, and stop it."""
        self.log(msg)
        raise NonFiniteLossError(msg)

    def check_finite(self, total: Tensor) -> None:
        """Raise :class:`NonFiniteLossError` when the summed loss is NaN or infinite."""
        if not torch.isfinite(total).item():  # one sync per checkpoint/epoch, not per step
            self._stop(
                f"the training loss became non-finite in epoch {self.state.epoch} (step <= {self.state.global_step}); "
                f"stopped. The last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'}. "
                "Try a lower --lr, --clip-grad, or --amp none."
            )

    def check_finite_weights(self, state: dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` when a weight is NaN or infinite, so that no such
        checkpoint is ever written (one sync per save)."""
        bad = non_finite_entries(state)
        if bad:
            last = self.run_dir / "checkpoints" / "last.pt"
            self._stop(
                f"the network's weights became non-finite ({bad[0]}, ...) by step {self.state.global_step}; stopped "
                f"without saving them. The last good checkpoint is {last}"
                f"{'' if last.exists() else ' (none was saved)'}. Try a lower --lr or --clip-grad."
            )

    def evaluate(self, epoch: int, train_loss: float | None) -> dict[str, Any]:
        """Validation metrics, model selection (best checkpoint) and one metrics row."""
        st = self.state
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": st.global_step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.network.has_validation_metrics:
            metrics = validation_metrics(self.net, self.val_loader, self.device, self.data.task, self.cfg.amp)
            if metrics is None:
                self.check_finite_weights(self.network.classifier_state())
                self._stop(
                    f"the network's validation outputs are non-finite at step {st.global_step}; stopped"
                )
            row.update(metrics)
        if self.loss.holdout_loader is not None:
            row.update(holdout_signals(self.net, self.loss, self.device))
        score = self.selection.score(row, st.history)
        row["selection"] = score
        verdict = self.selection.judge(score, st.history)
        if verdict.best:
            st.best_metric, st.best_epoch, st.bad_evals = score, epoch, 0
            self.save("best")
        else:
            st.bad_evals += 1
        st.stop_requested = verdict.stop
        row["best"] = verdict.best
        st.history.append(row)
        self.rows.write(st.history, st.global_step)
        self.log(
            f"epoch {epoch} step {st.global_step}: "
            + ", ".join(f"{k}={v}" for k, v in row.items() if k != "epoch")
        )
        return row
