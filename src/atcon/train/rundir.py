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

import contextlib
import csv
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import atcon
from atcon._json import to_json
from atcon.data import Split
from atcon.results_io import atomic_write_text
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
    "tensorboard",
)


class RunExistsError(FileExistsError):
    """The run folder already holds a run."""


class RunLockedError(FileExistsError):
    """Another live process holds the run folder's lock."""


LOCK = ".lock"
"""The run folder's lock file: ``{"pid", "host", "since"}`` of the one process writing the run."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(run_dir: Path) -> dict[str, Any] | None:
    """The lock's holder, or None when there is no lock or its holder is a dead process of this host
    (a stale lock, left by a killed run). A lock from another host is taken as held."""
    try:
        text = (run_dir / LOCK).read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        return None  # a lock its writer never finished: stale
    if host == socket.gethostname() and not _alive(pid):
        return None
    return holder


def check_unlocked(run_dir: Path) -> dict[str, Any] | None:
    """Raise :class:`RunLockedError` when another live process holds ``run_dir``; else return
    the lock's holder (this process) or None (no lock, or a stale one)."""
    holder = _holder(run_dir)
    if holder is not None and not (holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()):
        raise RunLockedError(
            f"{run_dir} is in use by process {holder['pid']} on {holder['host']} (since {holder.get('since', '?')}); "
            f"wait for it to finish, or, if that process is gone, delete {run_dir / LOCK}"
        )
    return holder


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block: one writer per run folder.

    The lock file is created exclusively (``O_EXCL``), so of two runs started at once exactly
    one gets it; a stale lock (its process dead, same host) is replaced. The folder is created if
    missing. The lock is removed when the block ends, also on error.

    Raises:
        RunLockedError: another live process holds the folder.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    for _ in range(2):
        if check_unlocked(run_dir) is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale (or unfinished) lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another process took it between the check and the create: check again
        with os.fdopen(fd, "w") as f:
            f.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    }
                )
            )
        break
    else:
        check_unlocked(run_dir)
        raise RunLockedError(f"{run_dir} is in use by another process; try again once it has finished")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run (its start files or a checkpoint)."""
    return (run_dir / "config.toml").exists() or (run_dir / "checkpoints" / "last.pt").exists()


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a run may start (or resume) in ``run_dir``, without changing anything on disk.

    Raises:
        RunLockedError: another live process writes into the folder.
        RunExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` without a checkpoint to resume from.
    """
    check_unlocked(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            hint = (
                "; the run there never saved a checkpoint: start it again with --overwrite"
                if (run_dir / "config.toml").exists()
                else ""
            )
            raise FileNotFoundError(f"nothing to resume in {run_dir}: {last} does not exist{hint}")
        return
    if holds_run(run_dir) and not overwrite:
        done = " finished" if (run_dir / "summary.json").exists() else ""
        raise RunExistsError(
            f"{run_dir} already holds a{done} run; use --resume to continue it or --overwrite to replace it"
        )


def remove_run_files(run_dir: Path) -> None:
    """Delete what a run wrote into ``run_dir`` (:data:`RUN_FILES`); other files stay."""
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left (``.NAME.XXXX.tmp``).

    Only call this when no process writes into the run (at the start of a run or a resume).

    Returns:
        The files removed.
    """
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink()
                    removed.append(tmp)
    return removed


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
    atomic_write_text(run_dir / "meta.json", to_json({**versions(), **meta}))


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
    """Appends time-stamped lines to ``log.txt`` (a no-op on processes other than the main one).

    A log created ``held`` keeps its lines in memory until :meth:`release`: a run's trainer is
    built (and may fail) before the run folder is touched, and what it logged then is written
    once the run starts.
    """

    def __init__(self, path: Path, enabled: bool, *, held: bool = False) -> None:
        self.path, self.enabled = path, enabled
        self.pending: list[str] | None = [] if held else None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n"
        if self.pending is not None:
            self.pending.append(line)
            return
        with self.path.open("a") as f:
            f.write(line)

    def release(self) -> None:
        """Write the held lines; from now on lines are written as they come."""
        pending, self.pending = self.pending or [], None
        if self.enabled and pending:
            with self.path.open("a") as f:
                f.writelines(pending)


def tensorboard(folder: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))
