"""Small helpers shared by the commands."""

from __future__ import annotations

import re


def slug(name: str, default: str = "item") -> str:
    """``name`` made safe as part of a file name: runs of other characters than ``A-Za-z0-9._-`` become ``_``.

    Args:
        name: a model, run or input name.
        default: returned when nothing is left.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or default
