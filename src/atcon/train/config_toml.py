"""TOML files of :class:`~atcon.train.config.TrainConfig`: reading one (checked key by key) and the
commented reference of every key (:mod:`atcon.settings` does the work for every command's settings).

``atcon train --config FILE`` reads with :func:`read_toml`; ``atcon train --print-config`` prints
:func:`toml_reference`, which parses back to the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atcon import settings
from atcon.train.config import check_defaults, train_settings

__all__ = ["read_toml", "toml_reference"]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML training config; unknown keys and values of the wrong type are errors."""
    return settings.read_toml(path, train_settings())


def toml_reference(defaults: Mapping[str, Any] | None = None) -> str:
    """A TOML file documenting every training key, each set to its default (unset ones commented
    out); ``defaults``: a command's own, shown instead of the fields'."""
    return settings.toml_reference(train_settings(), check_defaults(defaults), "atcon training config")
