"""A training run from top to bottom: ``train(cfg, run_dir)``.

Set up the process and the run folder (:mod:`atcon.train.rundir`), build data and the
:class:`~atcon.train.trainer.Trainer`, restore ``checkpoints/last.pt`` when resuming, then for
each epoch ``train_one_epoch`` and ``evaluate`` until the epochs are done or the selection rule
says stop; finally ``summary.json``. A resumed run equals an uninterrupted one with the same
seed (bitwise on CPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcon._json import to_json
from atcon._progress import interactive, line
from atcon.data import Split
from atcon.results_io import atomic_write_text
from atcon.train import distributed as dist_utils
from atcon.train.config import TrainConfig, pool_size
from atcon.train.data import TaskData, build_task_data, with_preprocess
from atcon.train.rundir import (
    RunExistsError,
    RunLockedError,
    check_run_dir,
    remove_run_files,
    remove_stale_temporaries,
    run_lock,
    write_start_files,
)
from atcon.train.trainer import NonFiniteLossError, Trainer
from atcon.train.training_state import load_checkpoint

__all__ = ["NonFiniteLossError", "RunExistsError", "RunLockedError", "Trainer", "train"]


def check_resume_settings(run_dir: Path, cfg: TrainConfig, asked: Mapping[str, Any] | None) -> None:
    """Refuse to resume when ``config.toml`` was edited after the run started, or when ``asked``
    (settings given with ``--resume``) differs from the run's: a resumed run continues exactly
    as it was configured (its checkpoint's config), so a changed setting would be silently
    ignored.

    Raises:
        ValueError: naming the settings and both values.
    """
    from atcon.train.config_toml import read_toml

    toml = run_dir / "config.toml"
    if toml.is_file():
        written = TrainConfig(**read_toml(toml))
        edited = [f.name for f in fields(TrainConfig) if getattr(written, f.name) != getattr(cfg, f.name)]
        if edited:
            k = edited[0]
            raise ValueError(
                f"{toml} was edited after the run started ({', '.join(edited)}; {k} = {getattr(written, k)!r} there, "
                f"{getattr(cfg, k)!r} in checkpoints/last.pt): a resume continues the run as it started. Undo the "
                "edit, or start a new run with --config pointing at the edited file"
            )
    if asked:
        wanted = absolute_paths(cfg.replace(**asked))
        differ = [k for k in asked if getattr(wanted, k) != getattr(cfg, k)]
        if differ:
            shown = ", ".join(
                f"--{k.replace('_', '-')} {getattr(wanted, k)!r} (the run has {getattr(cfg, k)!r})"
                for k in differ
            )
            raise ValueError(
                f"--resume continues the run in {run_dir} with its own settings; these differ: {shown}. "
                "Drop them, or start a new run (--out elsewhere, or --overwrite)"
            )


def _resume(
    run_dir: Path, info: Any, progress: bool, data: TaskData | None, asked: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` (its lock held)."""
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg = TrainConfig(**ckpt["config"])
    check_resume_settings(run_dir, cfg, asked)
    dist_utils.barrier()  # every process has read last.pt before temporaries go
    stale = remove_stale_temporaries(run_dir) if info.is_main else []
    if ckpt["state"]["finished"]:
        return dict(json.loads((run_dir / "summary.json").read_text()))
    _seed_everything(cfg.seed)
    data = data if data is not None else build_task_data(cfg, Split.load(run_dir / "split.json"))
    trainer = Trainer(cfg, run_dir, info, data, resume=True)
    trainer.restore(ckpt)
    trainer.log.release()
    for tmp in stale:
        trainer.log(f"removed {tmp.name}, left by an interrupted write")
    trainer.log(f"resumed at epoch {trainer.state.epoch} batch {trainer.state.batch}")
    return _loop(trainer, progress and info.is_main)


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
    asked: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary written to ``summary.json``.

    A new run validates everything it needs -- the config, the data and split, the starting
    weights -- by building its datasets and trainer before it touches ``run_dir``: a run that
    cannot start leaves the folder as it was (with ``overwrite``, the old run stays in place).
    Should it fail before its first checkpoint, it removes what it wrote, so the same command
    can simply be run again. Paths in the config are stored absolute, and a resumed run reads
    every weight from ``checkpoints/last.pt``: resuming works from any working directory and
    without the starting weights file.

    Args:
        cfg: the config (ignored when resuming: the run's own config is used).
        run_dir: the run folder.
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt``.
        overwrite: replace a run already in ``run_dir`` (once the new one has been built).
        progress: show progress (main process only): a bar on a terminal, else one line per
            epoch.
        data: datasets already built for ``cfg`` and its split (experiments share them between
            runs, so images are decoded once); default: built from ``cfg``.
        asked: with ``resume``, the settings the caller gave (the command line's flags): refused
            if they differ from the run's own (:func:`check_resume_settings`).

    Raises:
        RunExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        RunLockedError: another live process is writing a run into ``run_dir`` (its lock file,
            ``.lock``, names it); nothing is touched.
        NonFiniteLossError: the loss became NaN or infinite (``last.pt`` keeps the last good state).
    """
    run_dir = Path(run_dir)
    info = dist_utils.setup(cfg.device)
    try:
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if resume:
            with run_lock(run_dir) if info.is_main else contextlib.nullcontext():
                return _resume(run_dir, info, progress, data, asked)
        cfg = with_preprocess(absolute_paths(cfg))
        _seed_everything(cfg.seed)
        data = data if data is not None else build_task_data(cfg)
        trainer = Trainer(cfg, run_dir, info, data)
        # Everything needed to start exists: only now is the folder (and an old run) touched,
        # under its lock, so that no other run writes into it meanwhile.
        created = not run_dir.exists()
        dist_utils.barrier()
        failed = False
        try:
            with run_lock(run_dir) if info.is_main else contextlib.nullcontext():
                if info.is_main:
                    remove_run_files(run_dir)
                    remove_stale_temporaries(run_dir)
                    write_start_files(
                        run_dir, cfg, data.split, {"world_size": info.world_size, "device": str(info.device)}
                    )
                dist_utils.barrier()
                try:
                    trainer.log.release()
                    trainer.log(f"start: {cfg.to_dict()}")
                    return _loop(trainer, progress and info.is_main)
                except BaseException:
                    failed = True
                    if info.is_main and not (run_dir / "checkpoints" / "last.pt").exists():
                        # Nothing to resume: leave no trace that would block running the command again.
                        remove_run_files(run_dir)
                    raise
        finally:
            if failed and info.is_main and created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
    finally:
        dist_utils.teardown()


def _epoch_line(name: str, trainer: Trainer, loss: float, seconds: float) -> str:
    """``"finetune ft: epoch 1 (2/10), loss 0.41, val_map 0.62, 12 s"``: the epoch just finished,
    numbered from 0 as in ``metrics.csv`` and ``log.txt``, how many of all are done, and the latest
    evaluation's metric."""
    st = trainer.state
    text = f"{name}: epoch {st.epoch - 1} ({st.epoch}/{trainer.cfg.epochs}), loss {loss:.4g}"
    row = st.history[-1] if st.history else {}
    metric = next((k for k in ("val_map", "lf_consistency", "selection") if row.get(k) is not None), None)
    if metric is not None:
        text += f", {metric} {row[metric]:.4g}"
    if st.stopped_early:
        text += ", stopping early"
    return f"{text}, {seconds:.0f} s"


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its file and folder settings made absolute, so that the saved config (and a
    resume) does not depend on the working directory.

    ``data`` (unless a built-in benchmark name), ``split``, ``weights`` (when it names an
    existing file, not a pretrained tag) and ``unlabeled`` (unless ``pool:N``) are made
    absolute; a path that does not exist is left as given, for the error that names it.
    """
    from atcon.data import BENCHMARKS

    def absolute(value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return os.path.abspath(path) if path.exists() else value

    changes = {
        "data": cfg.data if cfg.data in BENCHMARKS else absolute(cfg.data),
        "split": absolute(cfg.split),
        "weights": absolute(cfg.weights),
        "unlabeled": cfg.unlabeled if pool_size(cfg.unlabeled) is not None else absolute(cfg.unlabeled),
    }
    return cfg.replace(**{k: v for k, v in changes.items() if v != getattr(cfg, k)})


def _loop(trainer: Trainer, show: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    cfg, st = trainer.cfg, trainer.state
    start = time.perf_counter()
    name = f"{cfg.strategy} {trainer.run_dir.name}"
    # A live bar on a terminal; in a log file one line per epoch instead of every redraw.
    live = show and interactive()
    bar = tqdm(
        total=cfg.epochs * trainer.steps_per_epoch,
        initial=st.epoch * trainer.steps_per_epoch + st.batch,
        desc=name,
        disable=not live,
        leave=False,
    )
    if show and not live:
        line(f"{name}: epochs {st.epoch}-{cfg.epochs - 1} of {trainer.steps_per_epoch} steps each")
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
        if show and not live:
            line(_epoch_line(name, trainer, loss, time.perf_counter() - start))
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
        atomic_write_text(trainer.run_dir / "summary.json", to_json(summary))
    trainer.log(f"finished: {summary}")
    return summary
