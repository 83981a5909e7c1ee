"""Turning a device name from a flag or config into a :class:`torch.device`."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto", index: int | None = None) -> torch.device:
    """The device a name asks for; ``"auto"`` is CUDA when available, else the CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or a device.
        index: CUDA device index used when the name gives none (e.g. the local rank of a
            ``torchrun`` process); None keeps torch's current device.

    Returns:
        The device.

    Raises:
        ValueError: a CUDA device was asked for but none is available (a user error: pass
            ``cpu`` or ``auto`` instead).
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} requested but no CUDA device is available: use cpu or auto"
            )
        if dev.index is None and index is not None:
            dev = torch.device("cuda", index)
    return dev
