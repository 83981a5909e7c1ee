"""The state and verbs of one training run: build, step, train an epoch, evaluate, save, restore.

:class:`Trainer` holds the network, optimizer, scheduler, data streams and :class:`RunState`;
what a step trains on and its loss come from the run's :class:`~atcon.train.strategies.Strategy`,
which checkpoint is the best from its :class:`~atcon.train.selection.SelectionRule`.
:func:`atcon.train.train` drives it.

``checkpoints/last.pt`` is the resume point (model, optimizer, scheduler, scaler, epoch, batch
within the epoch, RNG states). Augmentations and sampling are pure functions of
``(seed, epoch, index)``, so a resumed run equals an uninterrupted one with the same seed
(bitwise on CPU).
"""

from __future__ import annotations

import copy
import math
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import atcon
from atcon.data import collate
from atcon.evaluate import classification_metrics
from atcon.guidance import boxed_ids
from atcon.models import build_model, randomized_copy
from atcon.train import distributed as dist_utils
from atcon.train.checkpoint import atomic_save, non_finite_entries, rng_state, set_rng_state
from atcon.train.config import TrainConfig
from atcon.train.data import TaskData
from atcon.train.engine import autocast, optimizer_step, predict, touch_parameters
from atcon.train.guard import Guard, ParameterAnchor, fisher_diagonal, guard_summary, trainable_top_blocks
from atcon.train.labelfree import label_free_signals
from atcon.train.rundir import RunLog, tensorboard, write_metrics
from atcon.train.sampling import SeededItems, StreamBatchSampler, TwoViews
from atcon.train.simclr import SimCLRNet
from atcon.train.strategies import Batch, BoxTerm, LossTerms, Strategy, Stream, strategy_class

# Offset of the second view's augmentation seed (two-view strategies).
_SECOND_VIEW_SEED = 7919
_MASK_MODEL_SEED = 104729
# Offset of each stream's sampling seed.
_STREAM_SEED: dict[Stream, int] = {"labelled": 0, "unlabelled": 1}

# Testing hook: SIGKILL this process right after the given global step (0 = never).
_KILL_AT_STEP = int(os.environ.get("ATCON_FAULT_KILL_AT_STEP", "0"))


class NonFiniteLossError(RuntimeError):
    """The training loss, the weights or the validation outputs became NaN or infinite; the last
    good checkpoint is kept and no non-finite one is written."""

    user_error = True


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


def _loader(
    items: Any, sampler: StreamBatchSampler, cfg: TrainConfig, device: torch.device
) -> DataLoader[Any]:
    return DataLoader(
        items,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        # Workers outlive epochs: few-shot epochs are short and worker start-up would dominate. The
        # batch sampler runs in this process, so set_epoch() still takes effect.
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _eval_loader(dataset: Any, cfg: TrainConfig, device: torch.device) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )


def _streams(
    kind: type[Strategy], cfg: TrainConfig, info: dist_utils.DistInfo, data: TaskData
) -> tuple[dict[Stream, int], dict[Stream, StreamBatchSampler], dict[Stream, DataLoader[Any]]]:
    """Item counts, batch samplers and loaders of the streams the strategy reads.

    ``labelled`` is the training set; ``unlabelled`` is ``--unlabeled`` or the training set
    without its labels. Each stream has its own sampling seed; items are augmented with seeds
    from ``(seed, epoch, index)`` (two such views for two-view strategies).
    """
    sources: dict[Stream, Any] = {
        "labelled": data.train,
        "unlabelled": data.unlabeled if data.unlabeled is not None else data.train,
    }
    sizes, samplers, loaders = {}, {}, {}
    for s in kind.streams_for(cfg):
        sizes[s] = len(sources[s])
        # A batch larger than the stream would repeat its items many times over in every step.
        batch = max(1, min(cfg.batch_size, -(-sizes[s] // info.world_size)))
        samplers[s] = StreamBatchSampler(
            sizes[s], batch, cfg.seed + _STREAM_SEED[s], rank=info.rank, world=info.world_size
        )
        items = (
            TwoViews(sources[s], cfg.seed, cfg.seed + _SECOND_VIEW_SEED)
            if kind.two_views
            else SeededItems(sources[s], cfg.seed)
        )
        loaders[s] = _loader(items, samplers[s], cfg, info.device)
    return sizes, samplers, loaders


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
        self.resuming = resume
        self.log = RunLog(run_dir / "log.txt", info.is_main, held=True)
        kind = strategy_class(cfg.strategy)
        sizes, self.samplers, self.loaders = _streams(kind, cfg, info, data)
        self.strategy = kind(
            cfg, sizes, {s: sampler.batches_per_epoch for s, sampler in self.samplers.items()}
        )
        # On resume every weight comes from last.pt: the architecture alone is built.
        weights = None if resume else cfg.weights
        classifier = build_model(cfg.model, len(data.classes), weights, new_head=cfg.new_head)
        if cfg.trainable_blocks:
            self.log(f"trainable blocks: {', '.join(trainable_top_blocks(classifier, cfg.trainable_blocks))}")
        # The frozen starting network: the collapse guards' anchor and label-free selection's reference.
        needs_reference = self.strategy.uses_consistency and (
            cfg.anchor_weight > 0 or cfg.param_anchor_weight > 0 or cfg.select == "label-free"
        )
        self.reference = (
            copy.deepcopy(classifier).eval().requires_grad_(False).to(self.device)
            if needs_reference
            else None
        )
        # The "random network" mask control: a fixed, re-initialised copy of the starting network.
        self.mask_model = (
            randomized_copy(classifier, cfg.seed + _MASK_MODEL_SEED).to(self.device)
            if cfg.mask_source == "random_network"
            else None
        )
        self.net: nn.Module = self.strategy.network(classifier).to(self.device)
        self.simclr = self.net if isinstance(self.net, SimCLRNet) else None
        self.model: nn.Module = self.net
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        self.param_anchor: ParameterAnchor | None = None
        self.terms = LossTerms(
            self.model,
            data.task,
            cfg.consistency,
            cfg.target_layer,
            self.mask_model,
            cfg.temperature,
            self._guard(classifier),
            self._boxes(),
        )
        self.holdout_loader = (
            _eval_loader(data.holdout, cfg, self.device)
            if cfg.select == "label-free" and data.holdout is not None
            else None
        )
        self.selection = self.strategy.selection(data.task, cfg.patience)
        self.steps_per_epoch = self.strategy.steps_per_epoch
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total, 1))
            if cfg.scheduler == "cosine"
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.state = RunState()
        self.val_loader = _eval_loader(data.val, cfg, self.device)
        self._tensorboard: Any = None  # created at the first evaluation (building writes nothing)

    @property
    def tensorboard(self) -> Any:
        """The TensorBoard writer (main process, ``tensorboard`` installed), else None."""
        if self._tensorboard is None and self.info.is_main:
            self._tensorboard = tensorboard(self.run_dir / "tensorboard") or False
        return self._tensorboard or None

    def _guard(self, classifier: nn.Module) -> Guard | None:
        """The collapse guards the config switches on (None: the paper's loss)."""
        cfg = self.cfg
        if self.reference is None or not (cfg.anchor_weight > 0 or cfg.param_anchor_weight > 0):
            return None
        anchor = None
        if cfg.param_anchor_weight > 0:
            names = [n for n, p in classifier.named_parameters() if p.requires_grad]
            weights = None
            if cfg.param_anchor_fisher:
                # On resume, restore() puts the starting network's Fisher weights in place.
                weights = (
                    {n: torch.ones((), device=self.device) for n in names}
                    if self.resuming
                    else self._fisher(names)
                )
            anchor = self.param_anchor = ParameterAnchor(self.reference, names, weights)
        self.log(f"collapse guard: {guard_summary(cfg)}")
        return Guard(self.reference, self.data.task, cfg.anchor_weight, anchor, cfg.param_anchor_weight)

    def _boxes(self) -> BoxTerm | None:
        """Box supervision of the labelled batches, when the config asks for it."""
        cfg = self.cfg
        if cfg.box_weight <= 0:
            return None
        if self.data.video:
            raise ValueError(
                "box supervision (box_weight) is for images; clips have no boxes to pull maps into"
            )
        boxed = boxed_ids(self.data.train, cfg.boxes_per_class, cfg.split_seed)
        if not boxed:
            raise ValueError(
                "box_weight needs boxes or regions to avoid on the labelled training images (a manifest's "
                "boxes/avoid columns, COCO annotations, VOC objects); these have none"
            )
        per_class = "all annotated" if cfg.boxes_per_class is None else f"{cfg.boxes_per_class} per class"
        self.log(
            f"box supervision: {cfg.box_loss}, weight {cfg.box_weight:g}, {len(boxed)} of "
            f"{len(self.data.train)} labelled images ({per_class})"  # type: ignore[arg-type]
        )
        return BoxTerm(cfg.box_weight, cfg.box_loss, boxed)

    def _fisher(self, names: list[str]) -> dict[str, Tensor]:
        """Diagonal Fisher of the starting network on unlabelled training items (no label read),
        with a fixed seed for the items' augmentation so that a resumed run gets the same."""
        assert self.reference is not None
        source = self.data.unlabeled if self.data.unlabeled is not None else self.data.train
        loader = DataLoader(source, batch_size=self.cfg.batch_size, shuffle=False, collate_fn=collate)
        probe = copy.deepcopy(self.reference).requires_grad_(False)
        for name, p in probe.named_parameters():
            p.requires_grad_(name in names)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            return fisher_diagonal(probe, (x for x, _ in loader), self.data.task, device=self.device)

    # --- checkpoints ---------------------------------------------------------------------

    def classifier_state(self) -> dict[str, Tensor]:
        """The classifier's weights (for SimCLR: the encoder with its set-aside head)."""
        if self.simclr is None:
            return self.net.state_dict()
        state = dict(self.simclr.encoder.state_dict())
        state.update({f"fc.{k}": v for k, v in self.simclr.__dict__["_fc"].state_dict().items()})
        return state

    def _meta(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "classes": list(self.data.classes),
            "task": self.data.task,
            "model_name": self.cfg.model,
            "num_classes": len(self.data.classes),
            "image_size": self.data.image_size,
            "video": self.data.video,
            # The inputs' statistics, for whoever reads the checkpoint (None: clips, Kinetics).
            "mean": list(self.cfg.mean) if self.cfg.mean is not None else None,
            "std": list(self.cfg.std) if self.cfg.std is not None else None,
            "interpolation": self.cfg.interpolation,
            "atcon_version": atcon.__version__,
        }

    def save(self, kind: str) -> None:
        """Write ``checkpoints/{kind}.pt``: ``"last"`` (everything to resume) or ``"best"``."""
        if not self.info.is_main:
            return
        model_state = self.classifier_state()
        self.check_finite_weights(model_state)
        payload: dict[str, Any] = {"model": model_state, "kind": kind, **self._meta()}
        if kind == "last":
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                state=asdict(self.state),
                rng=rng_state(),
                projection=self.simclr.projection.state_dict() if self.simclr is not None else None,
                reference=self.reference.state_dict() if self.reference is not None else None,
                fisher=self.param_anchor.weights if self.param_anchor is not None else None,
                mask_model=self.mask_model.state_dict() if self.mask_model is not None else None,
            )
        else:
            payload.update(epoch=self.state.epoch, metric=self.state.best_metric)
        atomic_save(payload, self.run_dir / "checkpoints" / f"{kind}.pt")

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``last`` checkpoint: weights, optimizer, scheduler, state, RNG."""
        model_state = ckpt["model"]
        if self.simclr is not None:
            fc_state = {k[3:]: v for k, v in model_state.items() if k.startswith("fc.")}
            self.simclr.__dict__["_fc"].load_state_dict(fc_state)
            self.simclr.encoder.load_state_dict(
                {k: v for k, v in model_state.items() if not k.startswith("fc.")}
            )
            self.simclr.projection.load_state_dict(ckpt["projection"])
        else:
            self.net.load_state_dict(model_state)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.reference is not None and ckpt.get("reference") is not None:
            self.reference.load_state_dict(ckpt["reference"])
        if self.mask_model is not None and ckpt.get("mask_model") is not None:
            self.mask_model.load_state_dict(ckpt["mask_model"])
        anchor = self.param_anchor
        if anchor is not None and anchor.weights is not None and anchor.names is not None:
            fisher = ckpt.get("fisher")
            # Checkpoints written before the Fisher weights were saved: the same estimate again,
            # from the restored starting network.
            anchor.weights = (
                {k: v.to(self.device) for k, v in fisher.items()}
                if fisher is not None
                else self._fisher(anchor.names)
            )
        self.state = RunState(**ckpt["state"])
        set_rng_state(ckpt["rng"])

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

    def check_finite(self, total: Tensor) -> None:
        """Raise :class:`NonFiniteLossError` when the summed loss is NaN or infinite."""
        if not torch.isfinite(total).item():  # one sync per checkpoint/epoch, not per step
            msg = (
                f"the training loss became non-finite in epoch {self.state.epoch} (step <= {self.state.global_step}); "
                f"stopped. The last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'}. "
                "Try a lower --lr, --clip-grad, or --amp none."
            )
            self.log(msg)
            raise NonFiniteLossError(msg)

    def check_finite_weights(self, state: dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` when a weight is NaN or infinite, so that no such
        checkpoint is ever written (one sync per save)."""
        bad = non_finite_entries(state)
        if bad:
            msg = (
                f"the network's weights became non-finite ({bad[0]}, ...) by step {self.state.global_step}; stopped "
                f"without saving them. The last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'}"
                f"{'' if (self.run_dir / 'checkpoints' / 'last.pt').exists() else ' (none was saved)'}. "
                "Try a lower --lr or --clip-grad."
            )
            self.log(msg)
            raise NonFiniteLossError(msg)

    def evaluate(self, epoch: int, train_loss: float | None) -> dict[str, Any]:
        """Validation metrics, model selection (best checkpoint) and one metrics row."""
        st = self.state
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": st.global_step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.simclr is None:
            scores, labels = predict(self.net, self.val_loader, self.device, self.data.task, self.cfg.amp)
            if not bool(torch.isfinite(scores).all()):
                self.check_finite_weights(self.classifier_state())
                msg = f"the network's validation outputs are non-finite at step {self.state.global_step}; stopped"
                self.log(msg)
                raise NonFiniteLossError(msg)
            m = classification_metrics(scores, labels, self.data.task)
            row.update(
                val_map=float(m["map"]), val_f1_macro=float(m["f1_macro"]), val_f1_micro=float(m["f1_micro"])
            )
        if self.holdout_loader is not None:
            row.update(self.holdout_signals())
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
        if self.info.is_main:
            write_metrics(self.run_dir / "metrics.csv", st.history)
            if self.tensorboard is not None:
                for key, value in row.items():
                    if (
                        isinstance(value, (int, float))
                        and not isinstance(value, bool)
                        and key not in ("epoch", "step")
                    ):
                        self.tensorboard.add_scalar(key, value, st.global_step)
                self.tensorboard.flush()
        self.log(
            f"epoch {epoch} step {st.global_step}: "
            + ", ".join(f"{k}={v}" for k, v in row.items() if k != "epoch")
        )
        return row

    def holdout_signals(self) -> dict[str, float]:
        """The label-free signals on the held-out unlabelled slice (``lf_*`` row keys)."""
        assert self.holdout_loader is not None and self.reference is not None
        signals = label_free_signals(
            self.net,
            self.reference,
            (x for x, _ in self.holdout_loader),  # the targets are never read
            self.cfg.consistency,
            self.data.task,
            target_layer=self.cfg.target_layer,
            device=self.device,
            mask_model=self.mask_model,
        )
        return {f"lf_{k}": v for k, v in signals.items()}
