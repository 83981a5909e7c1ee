"""The run folder: creating it, the files written at the start of a run, the log and metrics.

A run folder holds::

    config.toml        the resolved config
    split.json         the split file used (train/val/test ids)
    meta.json          library versions, git commit, devices, command line
    metrics.csv        one row per evaluation
    log.txt            human-readable log
    checkpoints/last.pt, checkpoints/best.pt
    summary.json       written when the run finishes
    tensorboard/       scalars, when the ``tensorboard`` package is installed

Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import atcon
from atcon.data import Split
from atcon.train.checkpoint import atomic_write_text
from atcon.train.config import TrainConfig

# Everything a run writes, removed by ``overwrite``.
RUN_FILES = (
    "checkpoints",
    "metrics.csv",
    "summary.json",
    "log.txt",
    "config.toml",
    "split.json",
    "meta.json",
)


class RunExistsError(FileExistsError):
    """The run folder already holds a run."""


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
        for name in RUN_FILES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def versions() -> dict[str, Any]:
    """Library versions, the source's git commit (None outside a checkout) and the command line."""
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


def write_start_files(run_dir: Path, cfg: TrainConfig, split: Split, meta: dict[str, Any]) -> None:
    """``split.json``, ``config.toml`` and ``meta.json`` (:func:`versions` plus ``meta``)."""
    split.save(run_dir / "split.json")
    atomic_write_text(run_dir / "config.toml", cfg.to_toml())
    atomic_write_text(run_dir / "meta.json", json.dumps({**versions(), **meta}, indent=1))


def write_metrics(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """All rows as CSV; the columns are every key any row has, in order of first appearance."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


class RunLog:
    """Appends time-stamped lines to ``log.txt`` (a no-op on processes other than the main one)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a") as f:
            f.write(f"{stamp} {message}\n")


def tensorboard(folder: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))
