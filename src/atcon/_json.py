"""JSON text for the files atcon writes: strict JSON, undefined numbers as ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON and which many
readers (``jq``, browsers, most languages' parsers) reject. Every JSON file atcon writes goes
through :func:`to_json`: non-finite floats become ``null`` first, and ``allow_nan=False`` then
makes any that slipped through (a type this conversion does not know) fail loudly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def to_json(obj: Any, *, indent: int | None = 1, default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON text of ``obj``; NaN and infinities are written as ``null``.

    Args:
        obj: dicts, lists, strings, numbers, booleans and None.
        indent: as for :func:`json.dumps`.
        default: called for objects JSON has no type for (e.g. ``str``); its results are
            converted as well.

    Raises:
        ValueError: a non-finite float that the conversion could not reach.
    """

    def fallback(o: Any) -> Any:
        if default is None:
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
        return finite_or_none(default(o))

    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False, default=fallback)
