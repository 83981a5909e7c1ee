"""Which labeled images keep their boxes: ``--boxes-per-class K``.

A user with a few annotated images per class (a clinician's boxes on some X-rays) trains with
the boxes of those images only. :func:`boxed_ids` picks, for each class, ``K`` of the training
images that carry a box of that class or a region to avoid (seeded, so every method of an
experiment uses the same images); the union over classes keeps its boxes, the other images train
on their labels alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset


def _targets(dataset: Dataset[Any]) -> list[Mapping[str, Any]]:
    """Every item's target, without decoding images where the dataset allows it."""
    n = len(dataset)  # type: ignore[arg-type]
    read = getattr(dataset, "target", None)
    if callable(read):
        return [read(i) for i in range(n)]
    return [dataset[i][1] for i in range(n)]


def annotated_classes(target: Mapping[str, Any]) -> set[int]:
    """The classes an item can supervise: those with a box there, and, when it has regions to
    avoid, its positive classes."""
    classes = {int(c) for c in torch.as_tensor(target.get("box_labels", [])).reshape(-1).tolist()}
    if len(target.get("avoid", ())):
        labels = torch.as_tensor(target["labels"]).reshape(-1)
        classes |= set((labels == 1).nonzero()[:, 0].tolist())
    return classes


def boxed_ids(dataset: Dataset[Any], per_class: int | None, seed: int) -> frozenset[str]:
    """Ids of the training images whose boxes and regions to avoid are used.

    Args:
        dataset: the labeled training set (items with ``image_id``, ``labels``, ``box_labels``,
            ``avoid``).
        per_class: ``K`` images per class (None: every annotated image).
        seed: seed of the draw (the run's split seed).

    Returns:
        The chosen ids (empty when no image is annotated).
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"boxes_per_class must be >= 1, got {per_class}")
    targets = _targets(dataset)
    by_class: dict[int, list[str]] = {}
    for t in targets:
        for c in sorted(annotated_classes(t)):
            by_class.setdefault(c, []).append(str(t["image_id"]))
    if per_class is None:
        return frozenset(i for ids in by_class.values() for i in ids)
    chosen: set[str] = set()
    g = torch.Generator().manual_seed(seed)
    for c in sorted(by_class):
        ids = by_class[c]
        order = torch.randperm(len(ids), generator=g).tolist()
        chosen.update(ids[k] for k in order[:per_class])
    return frozenset(chosen)
