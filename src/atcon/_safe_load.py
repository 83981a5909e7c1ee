"""Reading ``torch.save`` files without unpickling arbitrary objects, with errors a user can act on.

Every checkpoint and weights file atcon opens goes through :func:`load_tensors`, which calls
``torch.load(weights_only=True)``: only tensors and plain Python values are rebuilt, so a file
cannot run code when it is opened. When a file holds anything else, PyTorch's own error is
several paragraphs long and suggests loading it unsafely; atcon says instead, in one paragraph,
what the file is and what it accepts.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

ACCEPTED = (
    "atcon reads files that hold only tensors and plain values (numbers, strings, lists, dicts): its "
    "own run checkpoints (RUN/checkpoints/best.pt or last.pt), a state dict saved with "
    "torch.save(model.state_dict(), PATH), or a .safetensors file"
)
"""What atcon accepts as a checkpoint or weights file (the end of every refusal)."""


def load_tensors(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``.

    Args:
        path: a file written by ``torch.save``.

    Returns:
        What the file holds (tensors, dicts, lists, numbers, strings).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds other Python objects (it is not a safe checkpoint), or it is
            not a readable ``torch.save`` file (truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch.save) warns about its protocol before failing below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        # PyTorch names the first object it refused as "Unsupported global: GLOBAL module.name".
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if isinstance(err, pickle.UnpicklingError) and found:
            raise ValueError(
                f"{path} is not a safe checkpoint: it stores Python objects (such as {found.group(1)}) "
                "besides tensors, and opening it could run code, so atcon does not load it. "
                f"{ACCEPTED}. If you trust the file, save its state dict again in the environment that "
                "wrote it and pass that file."
            ) from None
        raise ValueError(
            f"{path} is not a readable checkpoint: it is truncated or was not written by torch.save "
            f"({type(err).__name__}: {_reason(text)}). {ACCEPTED}."
        ) from None


def _reason(text: str) -> str:
    """The part of PyTorch's message that says what is wrong, without its advice."""
    operand = re.search(r"Unsupported operand \d+", text)
    if operand:
        return operand.group(0)
    return re.split(r"(?<=\.)\s", text.strip())[0] or "no message"
