"""The split record: which ids train, validate and test, written to and read from JSON files.

Every method of an experiment must train on exactly the same images, so a split is computed once
for a seed and saved; training code reads the file. Images are referred to by id (VOC image id, a
manifest row's path, or a clip's ``clip_id``), so a split file stays valid when the dataset
folder moves. :mod:`atcon.data.fewshot` and :mod:`atcon.data.image_splits` draw splits.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from atcon.data._common import DataError, not_found

__all__ = ["SPLIT_FORMAT_VERSION", "Split", "with_unlabeled_pool"]

SPLIT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Image (or clip) ids of the train, validation and test sets.

    Attributes:
        train: Few-shot training ids.
        val: Validation ids (model selection).
        test: Test ids, never used for training or selection.
        classes: Class names in label order.
        per_class: ``N``, training samples requested per class.
        seed: Seed the split was drawn with.
        protocol: How it was built (``"voc-fewshot"``, ``"subject-disjoint"``).
        meta: Anything else worth recording (source folder, split names, sizes).
        unlabeled: Ids of an unlabeled pool for consistency fine-tuning (their labels are
            never read), drawn from the training pool, disjoint from ``val`` and ``test``; empty
            when the split has none (see :func:`with_unlabeled_pool`).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    classes: list[str]
    per_class: int
    seed: int
    protocol: str
    meta: dict[str, Any] = field(default_factory=dict)
    unlabeled: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": SPLIT_FORMAT_VERSION, **asdict(self)}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a split
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split file written by :meth:`save`.

        Raises:
            FileNotFoundError: No such file.
            DataError: Not a split file (message names it).
        """
        path = Path(path)
        if not path.is_file():
            raise not_found("split file", path)
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"not a JSON split file ({err})", path) from err
        if not isinstance(payload, dict) or payload.pop("version", None) != SPLIT_FORMAT_VERSION:
            raise DataError(f"not a split file of format version {SPLIT_FORMAT_VERSION}", path)
        try:
            return cls(**payload)
        except TypeError as err:
            raise DataError(f"malformed split file ({err})", path) from err


def with_unlabeled_pool(split: Split, candidates: Sequence[str], size: int, seed: int = 0) -> Split:
    """``split`` with an unlabeled pool of ``size`` ids drawn from ``candidates``.

    Ids of the validation and test sets are never drawn (the labeled training ids may be: the
    pool stands for all the images a user has, without labels). The draw depends only on the
    candidates, ``size`` and ``seed``.

    Raises:
        DataError: fewer than ``size`` candidates outside the validation and test sets.
    """
    held = set(split.val) | set(split.test)
    pool = sorted(c for c in dict.fromkeys(candidates) if c not in held)
    if size > len(pool):
        raise DataError(
            f"an unlabeled pool of {size} needs {size} training-pool items outside val/test; "
            f"there are {len(pool)}: ask for a pool of at most {len(pool)}"
        )
    rng = random.Random(seed)
    picked = sorted(rng.sample(pool, size))
    meta = {**split.meta, "unlabeled_pool": size, "unlabeled_seed": seed}
    return dataclasses.replace(split, unlabeled=picked, meta=meta)
