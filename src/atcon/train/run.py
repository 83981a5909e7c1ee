"""A training run: data, model, the loop, model selection, checkpoints, resume.

``train(cfg, run_dir)`` reads top to bottom: set up the process and the run folder, build data
and model, restore a checkpoint when resuming, then for each epoch ``train_one_epoch`` and
``evaluate``. The run folder holds::

    config.toml        the resolved config
    split.json         the split file used (train/val/test ids)
    meta.json          library versions, git commit, devices, command line
    metrics.csv        one row per evaluation
    log.txt            human-readable log
    checkpoints/last.pt, checkpoints/best.pt
    summary.json       written when the run finishes

Every file is written atomically; ``checkpoints/last.pt`` is the resume point (model,
optimizer, scheduler, scaler, epoch, batch within the epoch, RNG states). Augmentations and
sampling are pure functions of (seed, epoch, index), so a resumed run equals an uninterrupted
one with the same seed (bitwise on CPU).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import atcon
from atcon.consistency import ConsistencyConfig
from atcon.data import Split, collate
from atcon.evaluate import classification_metrics, labels_of
from atcon.models import build_model, randomized_copy
from atcon.train import distributed as dist_utils
from atcon.train.checkpoint import atomic_save, atomic_write_text, load_checkpoint, rng_state, set_rng_state
from atcon.train.config import TrainConfig
from atcon.train.data import (
    SeededItems,
    StreamBatchSampler,
    TaskData,
    TwoViews,
    build_task_data,
    item_seed,
)
from atcon.train.engine import (
    autocast,
    consistency_loss,
    optimizer_step,
    predict,
    supervised_loss,
    touch_parameters,
)
from atcon.train.simclr import NTXentLoss, SimCLRNet

# Offset of the second view's augmentation seed in SimCLR.
_SECOND_VIEW_SEED = 7919
_MASK_MODEL_SEED = 104729

# Testing hook: SIGKILL this process right after the given global step (0 = never).
_KILL_AT_STEP = int(os.environ.get("ATCON_FAULT_KILL_AT_STEP", "0"))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    user_error = True


class RunExistsError(FileExistsError):
    """The run folder already holds a run."""


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
    history: list[dict[str, Any]] = field(default_factory=list)


def selection_metric(task: str) -> str:
    """Validation metric for model selection: mAP (multi-label) or macro F1 (multi-class)."""
    return "map" if task == "multilabel" else "f1_macro"


def _versions() -> dict[str, Any]:
    import torchvision

    commit = None
    src = Path(atcon.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "atcon": atcon.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
        "command": sys.argv,
    }


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Create the run folder, or check it may be (re)used.

    Raises:
        RunExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` without a checkpoint to resume from.
    """
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: {last} does not exist")
        return
    if (run_dir / "config.toml").exists() or last.exists():
        if not overwrite:
            done = " finished" if (run_dir / "summary.json").exists() else ""
            raise RunExistsError(
                f"{run_dir} already holds a{done} run; use --resume to continue it or --overwrite to replace it"
            )
        for name in (
            "checkpoints",
            "metrics.csv",
            "summary.json",
            "log.txt",
            "config.toml",
            "split.json",
            "meta.json",
        ):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


class _Log:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a") as f:
            f.write(f"{stamp} {message}\n")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class Trainer:
    """State and verbs of one run; :func:`train` drives it."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, info: dist_utils.DistInfo, data: TaskData) -> None:
        self.cfg, self.run_dir, self.info, self.data = cfg, run_dir, info, data
        self.device = info.device
        self.log = _Log(run_dir / "log.txt", info.is_main)
        self.consistency = ConsistencyConfig(
            resolution=cfg.resolution,
            similarity=cfg.similarity,
            detach_mask=cfg.detach_mask,
            mask_source=cfg.mask_source,
        )
        classifier = build_model(cfg.model, len(data.classes), cfg.weights, new_head=cfg.new_head)
        # The "random network" mask control: a fixed, re-initialised copy of the starting network.
        self.mask_model = (
            randomized_copy(classifier, cfg.seed + _MASK_MODEL_SEED).to(self.device)
            if cfg.mask_source == "random_network"
            else None
        )
        self.simclr = SimCLRNet(classifier) if cfg.strategy == "simclr" else None
        self.net: nn.Module = (self.simclr or classifier).to(self.device)
        self.model: nn.Module = self.net
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        self.ntxent = NTXentLoss(cfg.temperature)

        labelled = data.train
        unlabelled = data.unlabeled if data.unlabeled is not None else data.train
        n_lab, n_unl = len(labelled), len(unlabelled)  # type: ignore[arg-type]
        self.sup_sampler = StreamBatchSampler(
            n_lab, cfg.batch_size, cfg.seed, rank=info.rank, world=info.world_size
        )
        self.con_sampler = StreamBatchSampler(
            n_unl, cfg.batch_size, cfg.seed + 1, rank=info.rank, world=info.world_size
        )
        self.sup_data, self.con_data = labelled, unlabelled
        # SimCLR reads each labelled item as two independently augmented views.
        sup_items = (
            TwoViews(labelled, cfg.seed, cfg.seed + _SECOND_VIEW_SEED)
            if cfg.strategy == "simclr"
            else SeededItems(labelled, cfg.seed)
        )
        self.sup_loader = _loader(sup_items, self.sup_sampler, cfg, self.device)
        self.con_loader = _loader(SeededItems(unlabelled, cfg.seed), self.con_sampler, cfg, self.device)
        n_sup, n_con = self.sup_sampler.batches_per_epoch, self.con_sampler.batches_per_epoch
        if cfg.strategy == "alternated":
            self.steps_per_epoch = n_sup + n_con
            weight = cfg.alternate_alpha * n_lab
            self.p_supervised = weight / (weight + n_unl)
        elif cfg.strategy in ("finetune", "simclr"):
            self.steps_per_epoch = n_con if cfg.strategy == "finetune" else n_sup
        else:
            self.steps_per_epoch = n_sup
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total, 1))
            if cfg.scheduler == "cosine"
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.state = RunState()
        self.val_loader = _eval_loader(data.val, cfg, self.device)
        self.tensorboard = _tensorboard(run_dir / "tensorboard") if info.is_main else None

    # --- checkpoints ---------------------------------------------------------------------

    def classifier_state(self) -> dict[str, Tensor]:
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
            "atcon_version": atcon.__version__,
        }

    def save(self, kind: str) -> None:
        if not self.info.is_main:
            return
        payload: dict[str, Any] = {"model": self.classifier_state(), "kind": kind, **self._meta()}
        if kind == "last":
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                state=asdict(self.state),
                rng=rng_state(),
                projection=self.simclr.projection.state_dict() if self.simclr is not None else None,
            )
        else:
            payload.update(epoch=self.state.epoch, metric=self.state.best_metric)
        atomic_save(payload, self.run_dir / "checkpoints" / f"{kind}.pt")

    def restore(self, ckpt: dict[str, Any]) -> None:
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
        self.state = RunState(**ckpt["state"])
        set_rng_state(ckpt["rng"])

    # --- one step ------------------------------------------------------------------------

    def _batch_kind(self, epoch: int, batch: int) -> str:
        s = self.cfg.strategy
        if s != "alternated":
            return {"finetune": "consistency", "simclr": "simclr"}.get(s, s)
        # Same draw on every process: seeded by (seed, epoch, batch) only.
        g = torch.Generator().manual_seed(item_seed(self.cfg.seed + 2, epoch, batch))
        return "supervised" if torch.rand((), generator=g).item() < self.p_supervised else "consistency"

    def _loss(self, kind: str, x: Tensor, target: dict[str, Any]) -> Tensor:
        cfg, model = self.cfg, self.model
        if kind == "simclr":
            x0, x1 = x.chunk(2)
            model.train()
            return self.ntxent(model(x0), model(x1))
        if kind == "consistency":
            return consistency_loss(model, x, self.consistency, cfg.target_layer, self.mask_model)
        model.train()
        labels = labels_of(target, self.data.task).to(self.device, non_blocking=True)
        loss = supervised_loss(model, x, labels, self.data.task)
        if kind == "combined":
            loss = loss + cfg.consistency_weight * consistency_loss(
                model, x, self.consistency, cfg.target_layer, self.mask_model
            )
        return loss

    def step(self, kind: str, x: Tensor, target: dict[str, Any]) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.amp):
            loss = self._loss(kind, x, target)
        loss = touch_parameters(loss, self.net)
        optimizer_step(
            loss, self.optimizer, scaler=self.scaler, clip_grad=self.cfg.clip_grad, parameters=self.params
        )
        self.scheduler.step()
        return loss.detach()

    # --- epochs --------------------------------------------------------------------------

    def _iterators(self, epoch: int, start: int) -> tuple[Any, Any]:
        """Data iterators positioned at batch ``start`` of ``epoch`` (replaying alternated draws)."""
        kinds = [self._batch_kind(epoch, b) for b in range(start)]
        n_sup = sum(k in ("supervised", "combined", "simclr") for k in kinds)
        n_con = len(kinds) - n_sup
        remaining = self.steps_per_epoch - start
        self.sup_sampler.set_epoch(epoch, n_sup, remaining)
        self.con_sampler.set_epoch(epoch, n_con, remaining)
        # Only the loaders this strategy reads are started (each iterator spins up its workers).
        uses_sup = self.cfg.strategy != "finetune"
        uses_con = self.cfg.strategy in ("finetune", "alternated")
        return (
            iter(self.sup_loader) if uses_sup else iter(()),
            iter(self.con_loader) if uses_con else iter(()),
        )

    def train_one_epoch(self, epoch: int, progress: Any) -> Tensor:
        """Run the rest of ``epoch`` from ``state.batch``; returns the summed loss (on device)."""
        st = self.state
        sup_it, con_it = self._iterators(epoch, st.batch)
        total = torch.full((), st.epoch_loss, device=self.device)
        for b in range(st.batch, self.steps_per_epoch):
            kind = self._batch_kind(epoch, b)
            if kind == "simclr":
                views, target = next(sup_it)  # (B, 2, C, *spatial)
                x = torch.cat([views[:, 0], views[:, 1]])
            else:
                x, target = next(con_it if kind == "consistency" else sup_it)
            total += self.step(kind, x, target)
            st.batch, st.global_step = b + 1, st.global_step + 1
            if st.global_step == _KILL_AT_STEP:  # fault injection for the resume tests
                os.kill(os.getpid(), signal.SIGKILL)
            if progress is not None:
                progress.update(1)
            if self.cfg.checkpoint_every and st.global_step % self.cfg.checkpoint_every == 0:
                self._check_finite(total)
                st.epoch_loss = float(total)
                self.save("last")
            if self.cfg.eval_every and st.global_step % self.cfg.eval_every == 0:
                self.evaluate(epoch, None)
        return total

    def _check_finite(self, total: Tensor) -> None:
        if not torch.isfinite(total).item():  # one sync per checkpoint/epoch, not per step
            msg = (
                f"the training loss became non-finite in epoch {self.state.epoch} (step <= {self.state.global_step}); "
                f"stopped. The last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'}. "
                "Try a lower --lr, --clip-grad, or --amp none."
            )
            self.log(msg)
            raise NonFiniteLossError(msg)

    def evaluate(self, epoch: int, train_loss: float | None) -> dict[str, Any]:
        """Validation metrics, model selection (best checkpoint) and one metrics row."""
        st, cfg = self.state, self.cfg
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": st.global_step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.simclr is None:
            scores, labels = predict(self.net, self.val_loader, self.device, self.data.task, cfg.amp)
            m = classification_metrics(scores, labels, self.data.task)
            row.update(
                val_map=float(m["map"]), val_f1_macro=float(m["f1_macro"]), val_f1_micro=float(m["f1_micro"])
            )
            metric = row["val_" + selection_metric(self.data.task)]
        else:
            metric = -train_loss if train_loss is not None else -math.inf
        row["selection"] = metric
        # The first evaluation always counts (even a nan metric), later ones must beat it.
        improved = metric > st.best_metric or not st.history
        if improved:
            st.best_metric, st.best_epoch, st.bad_evals = metric, epoch, 0
            self.save("best")
        else:
            st.bad_evals += 1
        row["best"] = improved
        st.history.append(row)
        if self.info.is_main:
            self._write_metrics()
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

    def _write_metrics(self) -> None:
        keys: list[str] = []
        for row in self.state.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.state.history)
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())


def _tensorboard(folder: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: TaskData | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary written to ``summary.json``.

    Args:
        cfg: the config (ignored when resuming: the run's own config is used).
        run_dir: the run folder.
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt``.
        overwrite: replace a run already in ``run_dir``.
        progress: show progress bars (main process only).
        data: datasets already built for ``cfg`` and its split (experiments share them between
            runs, so images are decoded once); default: built from ``cfg``.
    """
    run_dir = Path(run_dir)
    info = dist_utils.setup(cfg.device)
    try:
        if info.is_main:
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        dist_utils.barrier()
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt") if resume else None
        if ckpt is not None:
            cfg = TrainConfig(**ckpt["config"])
            if ckpt["state"]["finished"]:
                return json.loads((run_dir / "summary.json").read_text())
        split = Split.load(run_dir / "split.json") if resume else None
        _seed_everything(cfg.seed)
        data = data if data is not None else build_task_data(cfg, split)
        if info.is_main and not resume:
            data.split.save(run_dir / "split.json")
            atomic_write_text(run_dir / "config.toml", cfg.to_toml())
            atomic_write_text(
                run_dir / "meta.json",
                json.dumps(
                    {**_versions(), "world_size": info.world_size, "device": str(info.device)}, indent=1
                ),
            )
        trainer = Trainer(cfg, run_dir, info, data)
        if ckpt is not None:
            trainer.restore(ckpt)
            trainer.log(f"resumed at epoch {trainer.state.epoch} batch {trainer.state.batch}")
        else:
            trainer.log(f"start: {cfg.to_dict()}")
        return _loop(trainer, progress and info.is_main)
    finally:
        dist_utils.teardown()


def _loop(trainer: Trainer, show: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    cfg, st = trainer.cfg, trainer.state
    start = time.perf_counter()
    bar = tqdm(
        total=cfg.epochs * trainer.steps_per_epoch,
        initial=st.epoch * trainer.steps_per_epoch + st.batch,
        desc=f"{cfg.strategy} {trainer.run_dir.name}",
        disable=not show,
        leave=False,
    )
    if cfg.strategy == "finetune" and st.global_step == 0 and not st.history:
        # The starting checkpoint is a candidate too: selection on validation may keep it when
        # fine-tuning does not help.
        trainer.evaluate(-1, None)
        trainer.save("last")
    while st.epoch < cfg.epochs and not st.stopped_early:
        epoch = st.epoch
        total = trainer.train_one_epoch(epoch, bar)
        trainer._check_finite(total)
        loss = float(dist_utils.all_reduce_mean(total)) / trainer.steps_per_epoch
        if not cfg.eval_every:
            trainer.evaluate(epoch, loss)
        st.epoch, st.batch, st.epoch_loss = epoch + 1, 0, 0.0
        if cfg.patience and st.bad_evals >= cfg.patience:
            st.stopped_early = True
            trainer.log(f"early stopping after epoch {epoch}: no improvement in {cfg.patience} evaluations")
        trainer.save("last")
    bar.close()
    st.finished = True
    trainer.save("last")
    summary = {
        "run_dir": str(trainer.run_dir),
        "strategy": cfg.strategy,
        "selection_metric": selection_metric(trainer.data.task),
        "best_metric": st.best_metric,
        "best_epoch": st.best_epoch,
        "epochs_run": st.epoch,
        "stopped_early": st.stopped_early,
        "seconds": time.perf_counter() - start,
        "best_checkpoint": str(trainer.run_dir / "checkpoints" / "best.pt"),
    }
    if trainer.info.is_main:
        atomic_write_text(trainer.run_dir / "summary.json", json.dumps(summary, indent=1))
    trainer.log(f"finished: {summary}")
    return summary
