"""A process-wide store of decoded files, shared by every dataset built with ``cache=True``.

Experiments build a fresh set of datasets for each few-shot split and seed, yet all of them read
the same validation and test files; keyed by file (and decoding settings), each file is decoded
once per process. :func:`clear` empties the store.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_STORE: dict[Hashable, Any] = {}


def get_or_decode(key: Hashable, decode: Callable[[], T]) -> T:
    """The value stored under ``key``, decoding (and storing) it on first use."""
    if key not in _STORE:
        _STORE[key] = decode()
    value: T = _STORE[key]
    return value


def clear() -> None:
    """Forget every decoded file."""
    _STORE.clear()


def size() -> int:
    """Number of decoded files held."""
    return len(_STORE)
