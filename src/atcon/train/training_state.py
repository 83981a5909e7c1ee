"""Resumable training checkpoints, written atomically.

Every file is written to a temporary sibling and renamed over the target
(:func:`atcon.results_io.atomic_open`), so a crash -- SIGKILL included -- leaves either the old
file or the new one, never a truncated file that looks valid.

A checkpoint holds what is needed to continue a run bit-for-bit: model, optimizer and scheduler
state, epoch and step, the position inside the epoch, every RNG state, and the resolved config.
It contains only tensors and plain Python values, so it loads with ``weights_only=True``.
Loading a finished run's model for evaluation is :mod:`atcon.trained_models`.
``atcon.train.checkpoint``, this module's former name, still imports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atcon.results_io import atomic_open, atomic_write_text

__all__ = [
    "atomic_open",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "non_finite_entries",
    "rng_state",
    "set_rng_state",
]


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically.

    Ctrl-C during the write is held until the file is complete, then raised
    (``KeyboardInterrupt``: the CLI's exit status 130), so an interrupt never turns into a
    serialisation error. A write that fails for want of space raises ``OSError(ENOSPC)`` saying
    so; the previous file at ``path`` is kept either way.
    """
    path = Path(path)
    with _sigint_held():
        try:
            with atomic_open(path, "wb") as f:
                torch.save(obj, f)
        except (OSError, RuntimeError) as err:
            if _no_space(err, path.parent):
                free = shutil.disk_usage(path.parent).free
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on the device while saving {path} ({free / 2**20:.0f} MiB free); "
                    f"the previous {path.name} is kept. Free some space, then continue with --resume",
                ) from None
            raise


def _no_space(err: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space (torch's writer reports it as a RuntimeError)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20 and "write" in str(err).lower()
    except OSError:
        return False


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Defer SIGINT until the block ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def non_finite_entries(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or infinite value (one host
    sync when all are finite)."""
    floats = {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}
    if not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats.values()]).all()):
        return []
    return [k for k, v in floats.items() if not torch.isfinite(v).all()]


def rng_state() -> dict[str, Any]:
    """Capture the Python, NumPy, torch CPU and CUDA RNG states (weights-only serialisable)."""
    py = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (weights only, on the CPU)."""
    from atcon._safe_load import load_tensors

    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not an atcon checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt
