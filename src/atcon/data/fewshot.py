"""Few-shot draws (paper, section 4.1): N per class, the VOC and clip protocols, subject-disjoint sets.

The draws return :class:`~atcon.data.split.Split` records (saved as JSON split files); splits of
the user's own image formats are in :mod:`atcon.data.image_splits`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from atcon.data._common import DataError
from atcon.data.split import Split

DEFAULT_VAL_SIZE = "min(500, 20% of the pool)"
"""The validation draw when ``val_size`` is not given (:func:`val_count`): the paper's 500 images on
PASCAL VOC, a fifth of a smaller pool."""


def val_rule(val_size: float | None) -> str:
    """How a validation draw was sized, as split files record it (``meta["val_rule"]``)."""
    if val_size is None:
        return f"default: {DEFAULT_VAL_SIZE}"
    if isinstance(val_size, float):
        return f"asked: {val_size:g} of the pool"
    return f"asked: {val_size} images"


def val_count(val_size: float | None, n: int, where: str = "the pool") -> int:
    """Number of validation images drawn from a pool of ``n``.

    Args:
        val_size: A count (``int`` >= 1), a fraction of the pool (``float`` in ``(0, 1)``), or
            ``None`` for :data:`DEFAULT_VAL_SIZE`: ``min(500, round(0.2 * n))``, at least 1.
        n: Pool size.
        where: What the pool is, for the error message.

    Raises:
        ValueError: ``val_size`` is neither a count nor a fraction.
        DataError: The draw would leave no training image; the message says what to pass instead.
    """
    if val_size is None:
        count = min(500, max(1, round(0.2 * n)))
    elif isinstance(val_size, bool) or val_size <= 0:
        raise ValueError(f"val_size must be a count >= 1 or a fraction in (0, 1), got {val_size!r}")
    elif isinstance(val_size, float):
        if val_size >= 1:
            raise ValueError(
                f"val_size {val_size} is a float >= 1; give a count as an int or a fraction in (0, 1)"
            )
        count = max(1, round(val_size * n))
    else:
        count = int(val_size)
    if count >= n:
        fits = max(1, round(0.2 * n))
        asked = "the default" if val_size is None else f"val_size {val_size!r}"
        raise DataError(
            f"{asked} ({count} validation images) leaves no training images in {n} ({where}); "
            f"ask for fewer (--val-size {fits}, or a fraction such as --val-size 0.2)"
            + (", or add images" if n < 2 else "")
        )
    return count


def _as_class_sets(labels: torch.Tensor | Sequence[int]) -> list[set[int]]:
    """Per-item sets of class indices from multi-hot ``(N, C)`` or single labels ``(N,)``."""
    t = torch.as_tensor(labels)
    if t.ndim == 2:
        sets: list[set[int]] = [set() for _ in range(t.shape[0])]
        rows, cols = torch.nonzero(t > 0, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            sets[r].add(c)
        return sets
    if t.ndim == 1:
        return [{int(v)} for v in t.tolist()]
    raise ValueError(f"labels must have shape (N,) or (N, C), got {tuple(t.shape)}")


def sample_per_class(
    labels: torch.Tensor | Sequence[int],
    per_class: int,
    seed: int,
    *,
    pool: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> list[int]:
    """Pick ``per_class`` items of every class, without replacement (paper, section 4.1).

    Classes are visited in a seeded random order; an item counts for every class it contains, so a class
    already covered by items picked for other classes gets fewer new items (and a class may end with
    more than ``per_class`` items when its co-occurring classes bring them in).

    Args:
        labels: Multi-hot ``(N, C)`` or class indices ``(N,)``.
        per_class: ``N`` per class, at least 1.
        seed: Same seed, same pool, same labels: same result.
        pool: Indices allowed (default: all).
        classes: Class names, used in error messages.

    Returns:
        Sorted indices into ``labels``.

    Raises:
        DataError: "class X has only K images, N requested" for a class with too few items in the pool.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    sets = _as_class_sets(labels)
    candidates = sorted(set(range(len(sets)) if pool is None else pool))
    present = sorted(set().union(*(sets[i] for i in candidates))) if candidates else []
    num_classes = int(torch.as_tensor(labels).shape[1]) if torch.as_tensor(labels).ndim == 2 else None
    all_classes = list(range(num_classes)) if num_classes is not None else present
    if classes is not None:
        all_classes = list(range(len(classes)))
    by_class: dict[int, list[int]] = {c: [i for i in candidates if c in sets[i]] for c in all_classes}
    for c, items in by_class.items():
        if len(items) < per_class:
            name = classes[c] if classes is not None else str(c)
            total = sum(1 for labels_of in sets if c in labels_of)
            # A class with 1 image whose image went to validation "has only 0": say where it is.
            everywhere = f" ({total} image{'s' if total != 1 else ''} in all)" if total > len(items) else ""
            raise DataError(f"class {name!r}{everywhere} has only {len(items)} images, {per_class} requested")
    rng = random.Random(seed)
    order = list(by_class)
    rng.shuffle(order)
    chosen: set[int] = set()
    for c in order:
        have = sum(1 for i in chosen if c in sets[i])
        need = per_class - have
        if need > 0:
            free = [i for i in by_class[c] if i not in chosen]
            chosen.update(rng.sample(free, need))
    return sorted(chosen)


def max_per_class(labels: torch.Tensor | Sequence[int], pool: Sequence[int] | None = None) -> int:
    """Largest ``per_class`` that :func:`sample_per_class` is guaranteed to satisfy (the rarest class's count)."""
    sets = _as_class_sets(labels)
    idx = range(len(sets)) if pool is None else pool
    t = torch.as_tensor(labels)
    num_classes = t.shape[1] if t.ndim == 2 else max(max(s) for s in sets) + 1
    counts = [0] * int(num_classes)
    for i in idx:
        for c in sets[i]:
            counts[c] += 1
    return min(counts)


def voc_fewshot_split(
    root: str | Path,
    per_class: int,
    seed: int = 0,
    *,
    val_size: float | None = None,
    train_split: str = "train",
    test_split: str = "val",
    val_split: str | None = None,
    classes: Sequence[str] | None = None,
) -> Split:
    """The paper's PASCAL protocol on a VOC-layout folder.

    ``val_size`` random images of ``train_split`` form the validation set (unless ``val_split`` names a
    ready validation split, as the generated benchmarks have); ``per_class`` images per class are
    sampled from the rest for training; ``test_split`` is the test set. The draw is the one
    :func:`image_fewshot_split` makes from a given train set: the same images in the same order give
    the same split in every format.

    Args:
        root: VOC folder.
        per_class: Training images per class (2, 4, 8, 12, 16, ... in the paper).
        seed: Random seed.
        val_size: Validation images drawn from ``train_split``: a count, a fraction of it, or ``None``
            for :data:`DEFAULT_VAL_SIZE` (500 on VOC2012's 5717 ``train`` images, as in the paper).
        train_split: Pool split (VOC2012 ``train``, 5717 images).
        test_split: Test split (VOC2012 ``val``, 5823 images).
        val_split: Use this split as validation instead of drawing from the pool.
        classes: Label order; default read from the dataset.

    Returns:
        The split (ids), with ``meta`` recording the source and split names.
    """
    from atcon.data.voc import VOCDataset

    pool_ds = VOCDataset(root, train_split, classes=classes)
    labels = pool_ds.label_matrix()
    rng = random.Random(seed)
    all_idx = list(range(len(pool_ds)))
    if val_split is None:
        try:
            count = val_count(val_size, len(all_idx), f"the {train_split!r} image set")
        except DataError as err:
            raise DataError(str(err), pool_ds.root) from err
        val_idx = sorted(rng.sample(all_idx, count))
        val_ids = [pool_ds.ids[i] for i in val_idx]
    else:
        val_idx = []
        val_ids = read_ids(root, val_split)
    rest = sorted(set(all_idx) - set(val_idx))
    train_idx = sample_per_class(labels, per_class, seed, pool=rest, classes=pool_ds.classes)
    return Split(
        train=[pool_ds.ids[i] for i in train_idx],
        val=val_ids,
        test=read_ids(root, test_split),
        classes=list(pool_ds.classes),
        per_class=per_class,
        seed=seed,
        protocol="voc-fewshot",
        meta={
            "root": str(pool_ds.root),
            "format": "voc",
            "train_split": train_split,
            "val_split": val_split,
            "val_size": len(val_ids),
            "val": "given" if val_split is not None else "drawn",
            **({} if val_split is not None else {"val_rule": val_rule(val_size)}),
            "test_split": test_split,
            "group_by": None,
        },
    )


def read_ids(root: str | Path, split: str) -> list[str]:
    """Image ids of a VOC split file (see :func:`atcon.data.voc.read_image_set`)."""
    from atcon.data.voc import read_image_set

    return read_image_set(root, split)


def subject_disjoint_split(
    labels: torch.Tensor | Sequence[int],
    subjects: Sequence[Hashable],
    seed: int = 0,
    num_sets: int = 3,
) -> list[list[int]]:
    """Partition items into class-balanced sets of similar size with no subject in two sets.

    The paper separates its patients' clips into three such sets. Subjects are dealt greedily, largest
    first (ties broken by a seeded shuffle), each to the set where it least increases the sum over classes
    of the squared share of the class held by that set; the squared share penalises piling one class
    into one set, which balances classes and sizes at once. A subject whose items span several classes
    goes whole to one set, counted under each of its classes; a multi-label item counts for every class it
    has, and an item without a class (a negative) only for the set's size.

    Args:
        labels: Class index per item ``(N,)``, or multi-hot ``(N, C)``.
        subjects: Subject (patient, object identity) per item.
        seed: Random seed.
        num_sets: Number of sets.

    Returns:
        ``num_sets`` sorted lists of item indices.
    """
    sets_of = _as_class_sets(labels)
    if len(sets_of) != len(subjects):
        raise ValueError(f"{len(sets_of)} labels but {len(subjects)} subjects")
    if num_sets < 1:
        raise ValueError(f"num_sets must be >= 1, got {num_sets}")
    classes = sorted(set().union(*sets_of))
    col = {c: j for j, c in enumerate(classes)}
    totals = [0] * len(classes)
    by_subject: dict[Hashable, list[int]] = {}
    for i, (ys, s) in enumerate(zip(sets_of, subjects)):
        by_subject.setdefault(s, []).append(i)
        for y in ys:
            totals[col[y]] += 1
    groups = list(by_subject.values())
    random.Random(seed).shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: the shuffle decides among equal sizes
    counts = [[0] * len(classes) for _ in range(num_sets)]
    sets: list[list[int]] = [[] for _ in range(num_sets)]
    for items in groups:
        vec = [0] * len(classes)
        for i in items:
            for y in sets_of[i]:
                vec[col[y]] += 1

        def cost(k: int, vec: list[int] = vec) -> tuple[float, int]:
            delta = sum(
                ((counts[k][j] + v) ** 2 - counts[k][j] ** 2) / totals[j] ** 2 for j, v in enumerate(vec) if v
            )
            return delta, len(sets[k])

        best = min(range(num_sets), key=cost)
        sets[best].extend(items)
        counts[best] = [a + b for a, b in zip(counts[best], vec)]
    return [sorted(s) for s in sets]


def clip_fewshot_split(
    ids: Sequence[str],
    labels: Sequence[int],
    subjects: Sequence[Hashable],
    per_class: int,
    seed: int = 0,
    *,
    classes: Sequence[str],
    roles: tuple[int, int, int] = (0, 1, 2),
    meta: Mapping[str, Any] | None = None,
) -> Split:
    """The paper's video protocol: three subject-disjoint sets, ``per_class`` training clips per class.

    Args:
        ids: Clip ids.
        labels: Class index per clip.
        subjects: Subject per clip.
        per_class: Training clips per class, sampled from the training set.
        seed: Random seed (same seed: same sets and same sample).
        classes: Class names in label order.
        roles: Which of the three sets is (train, val, test).
        meta: Extra entries for ``Split.meta``.

    Returns:
        The split (clip ids).
    """
    if sorted(roles) != [0, 1, 2]:
        raise ValueError(f"roles must be a permutation of (0, 1, 2), got {roles}")
    sets = subject_disjoint_split(labels, subjects, seed=seed, num_sets=3)
    train_set, val_set, test_set = (sets[r] for r in roles)
    picked = sample_per_class(list(labels), per_class, seed, pool=train_set, classes=classes)
    return Split(
        train=[ids[i] for i in picked],
        val=[ids[i] for i in val_set],
        test=[ids[i] for i in test_set],
        classes=list(classes),
        per_class=per_class,
        seed=seed,
        protocol="subject-disjoint",
        meta={"set_sizes": [len(s) for s in sets], **(meta or {})},
    )
