"""A training run from top to bottom: ``train(cfg, run_dir)``.

Set up the process and the run folder (:mod:`atcon.train.rundir`), build data and the
:class:`~atcon.train.trainer.Trainer`, restore ``checkpoints/last.pt`` when resuming, then for
each epoch ``train_one_epoch`` and ``evaluate`` until the epochs are done or the selection rule
says stop; finally ``summary.json``. A resumed run equals an uninterrupted one with the same
seed (bitwise on CPU).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcon.data import Split
from atcon.train import distributed as dist_utils
from atcon.train.checkpoint import atomic_write_text, load_checkpoint
from atcon.train.config import TrainConfig
from atcon.train.data import TaskData, build_task_data
from atcon.train.rundir import RunExistsError, prepare_run_dir, write_start_files
from atcon.train.trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "RunExistsError", "Trainer", "train"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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

    Raises:
        RunExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        NonFiniteLossError: the loss became NaN or infinite (``last.pt`` keeps the last good state).
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
            write_start_files(
                run_dir, cfg, data.split, {"world_size": info.world_size, "device": str(info.device)}
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
    if trainer.strategy.start_is_candidate and st.global_step == 0 and not st.history:
        # The starting network is a candidate too: selection on validation may keep it when
        # training does not help.
        trainer.evaluate(-1, None)
        trainer.save("last")
    while st.epoch < cfg.epochs and not st.stopped_early:
        epoch = st.epoch
        total = trainer.train_one_epoch(epoch, bar)
        trainer.check_finite(total)
        loss = float(dist_utils.all_reduce_mean(total)) / trainer.steps_per_epoch
        if not cfg.eval_every:
            trainer.evaluate(epoch, loss)
        st.epoch, st.batch, st.epoch_loss = epoch + 1, 0, 0.0
        if st.stop_requested:
            st.stopped_early = True
            trainer.log(f"early stopping after epoch {epoch}: no improvement in {cfg.patience} evaluations")
        trainer.save("last")
    bar.close()
    st.finished = True
    trainer.save("last")
    summary = {
        "run_dir": str(trainer.run_dir),
        "strategy": cfg.strategy,
        "selection_metric": trainer.selection.name,
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
