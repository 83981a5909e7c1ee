"""Few-shot splits (paper, section 4.1), written to and read back from JSON split files.

Every method of an experiment must train on exactly the same images, so a split is computed once for a
seed and saved; training code reads the file. Images are referred to by id (VOC image id, or a clip's
``clip_id``), so a split file stays valid when the dataset folder moves.
"""

from __future__ import annotations

import dataclasses
import json
import random
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from atcon.data._common import DataError, not_found

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
        unlabeled: Ids of an unlabelled pool for consistency fine-tuning (their labels are
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
            raise DataError(f"class {name!r} has only {len(items)} images, {per_class} requested")
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


class LabelledImages(Protocol):
    """What :func:`image_fewshot_split` reads from a dataset (any image dataset of :mod:`atcon.data`).

    Optional attributes, used when present: ``subjects`` and ``splits`` (one entry per item, ``None``
    where the source gives none), ``source``, ``format``, and ``where(index)`` (the item's file and row,
    for messages).
    """

    @property
    def ids(self) -> list[str]: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    def label_matrix(self) -> torch.Tensor: ...


GroupBy = Literal["subject"]


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


def _draw_subjects(
    pool: list[int], subjects: Sequence[Hashable], count: int, rng: random.Random
) -> list[int]:
    """Whole subjects of ``pool``, in seeded random order, until at least ``count`` items are drawn."""
    by_subject: dict[Hashable, list[int]] = {}
    for i in pool:
        by_subject.setdefault(subjects[i], []).append(i)
    groups = list(by_subject.values())
    rng.shuffle(groups)
    drawn: list[int] = []
    for items in groups:
        if len(drawn) >= count:
            break
        drawn.extend(items)
    return sorted(drawn)


def _check_given_sets_disjoint(
    data: LabelledImages, subjects: Sequence[Hashable], splits: Sequence[str]
) -> None:
    first: dict[Hashable, int] = {}
    where = getattr(data, "where", None)
    for i, (s, name) in enumerate(zip(subjects, splits)):
        j = first.setdefault(s, i)
        if splits[j] != name:
            at = (lambda k: where(k)) if callable(where) else (lambda k: repr(data.ids[k]))
            raise DataError(
                f"subject {s!r} is in two given sets: {splits[j]} ({at(j)}) and {name} ({at(i)}); "
                "group_by='subject' needs each subject's images in one set"
            )


def image_fewshot_split(
    data: str | Path | LabelledImages,
    per_class: int,
    seed: int = 0,
    *,
    val_size: float | None = None,
    group_by: GroupBy | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Split:
    """The few-shot protocol on the user's images (class folders, CSV manifest, COCO JSON, or any dataset).

    Which images form the three sets:

    - **Given sets** (a ``split`` column, ``train/``/``val/``/``test/`` folders, COCO ``split`` keys): the
      ``train`` images are the pool and ``test`` the test set; ``val`` is the validation set, or, when no
      image is marked ``val``, ``val_size`` images are drawn from the pool (as the VOC protocol draws them
      from VOC's ``train``; with the same order and seed, the same images).
    - **No given sets**: ``val_size`` images drawn at random form the validation set, ``per_class`` per
      class are sampled from the others for training, and all the rest is the test set.
    - ``group_by="subject"``: no subject in two sets. With given sets, a subject in two of them is an
      error, and a drawn validation set takes whole subjects (until ``val_size`` images). Without
      given sets, the subjects are dealt into three class-balanced subject-disjoint sets of similar size
      (:func:`subject_disjoint_split`, the clip protocol: train pool, validation, test); ``val_size``
      does not apply. A subject whose images span several classes goes whole to one set.

    Training takes ``per_class`` images of every class from the pool (:func:`sample_per_class`): exactly
    that many for single-label data; for multi-label data an image counts for every class it has, so a
    class may get more. Pool images not sampled for training are left unused with given sets and with
    ``group_by="subject"`` (so a training image's subject never reaches validation or test); otherwise
    they join the test set.

    Args:
        data: A dataset (ids, classes, label_matrix; subjects and splits if any) or the path of class
            folders, a CSV manifest or a COCO file (read with default options).
        per_class: Training images per class.
        seed: Same data, same seed: same split.
        val_size: Validation images drawn: a count (``int``) or a fraction of the pool (``float`` in
            ``(0, 1)``); default :data:`DEFAULT_VAL_SIZE`, ``min(500, 20%)``. Not used when a
            validation set is given.
        group_by: ``"subject"`` for subject-disjoint sets; default none.
        meta: Extra entries for ``Split.meta``.

    Returns:
        The split; ``protocol`` is ``"image-fewshot"`` or ``"subject-disjoint"``, and ``meta`` records
        ``group_by``, whether the sets were ``given`` or ``drawn``, how validation was formed (``val``,
        and ``val_rule`` for a drawn one) and the source.

    Raises:
        DataError: Too few images of a class, a ``group_by`` the data cannot support (no subjects), a
            subject in two given sets, an empty given set, or images with and without a given set.
    """
    if isinstance(data, (str, Path)):
        from atcon.data.formats import detect_data, open_image_dataset

        found = detect_data(data)
        if found.format not in ("folders", "csv", "coco"):
            raise ValueError(
                f"{data} is {found.description}; image_fewshot_split reads class folders, CSV manifests and "
                "COCO files (for a VOC-layout folder use voc_fewshot_split or pass a VOCDataset)"
            )
        data = open_image_dataset(found.path)
    if group_by not in (None, "subject"):
        raise ValueError(f"group_by must be None or 'subject', got {group_by!r}")
    ids, classes = list(data.ids), list(data.classes)
    labels = data.label_matrix()
    n = len(ids)
    source = str(getattr(data, "source", None) or getattr(data, "root", None) or "")
    info: dict[str, Any] = {"source": source, "format": getattr(data, "format", None), "group_by": group_by}
    subjects = getattr(data, "subjects", None)
    if group_by == "subject":
        missing = n if subjects is None else sum(s is None for s in subjects)
        if missing:
            raise DataError(
                f"group_by='subject' needs a subject for every image; {missing} of {n} have none (a "
                "manifest's subject column, class folders <class>/<subject>/<image>, or a COCO image's "
                "'subject' key)",
                source or None,
            )
    raw_splits = getattr(data, "splits", None)
    given = raw_splits is not None and any(s is not None for s in raw_splits)
    rng = random.Random(seed)
    if given:
        splits: list[str] = list(raw_splits)  # type: ignore[arg-type]
        unset = sum(s is None for s in splits)
        if unset:
            raise DataError(
                f"{unset} of {n} images have no given set while the others have one; give every image "
                "train, val or test, or none",
                source or None,
            )
        if group_by == "subject":
            _check_given_sets_disjoint(data, subjects, splits)  # type: ignore[arg-type]
        pool = [i for i, s in enumerate(splits) if s == "train"]
        test = [i for i, s in enumerate(splits) if s == "test"]
        for name, items in (("train", pool), ("test", test)):
            if not items:
                raise DataError(f"no image is in the given {name} set", source or None)
        val = [i for i, s in enumerate(splits) if s == "val"]
        info.update(sets="given", val="given" if val else "drawn")
        if not val:
            info["val_rule"] = val_rule(val_size)
            count = val_count(val_size, len(pool), "the given train set")
            if group_by == "subject":
                val = _draw_subjects(pool, subjects, count, rng)  # type: ignore[arg-type]
            else:
                val = sorted(rng.sample(pool, count))
        rest = sorted(set(pool) - set(val))
        pool_note = "the given train set" + (
            " less the drawn validation images" if info["val"] == "drawn" else ""
        )
    elif group_by == "subject":
        if val_size is not None:
            raise ValueError(
                "val_size does not apply to group_by='subject' without given sets: the images are dealt "
                "into three class-balanced subject-disjoint sets"
            )
        rest, val, test = subject_disjoint_split(labels, subjects, seed=seed)  # type: ignore[arg-type]
        info.update(sets="drawn", val="subject-disjoint", set_sizes=[len(rest), len(val), len(test)])
        pool_note = "the subject-disjoint training third"
    else:
        count = val_count(val_size, n, "the dataset")
        val = sorted(rng.sample(range(n), count))
        rest = sorted(set(range(n)) - set(val))
        test = []  # the rest, once training images are known
        info.update(sets="drawn", val="drawn", val_rule=val_rule(val_size))
        pool_note = "the images left after drawing validation"
    try:
        train = sample_per_class(labels, per_class, seed, pool=rest, classes=classes)
    except DataError as err:
        raise DataError(f"{err} in {pool_note}; lower per_class", source or None) from err
    if info["sets"] == "drawn" and group_by is None:
        test = sorted(set(rest) - set(train))
    if group_by is None and subjects is not None:
        _warn_shared_subjects(subjects, (train, val, test))
    info["val_size"] = len(val)
    return Split(
        train=[ids[i] for i in train],
        val=[ids[i] for i in val],
        test=[ids[i] for i in test],
        classes=classes,
        per_class=per_class,
        seed=seed,
        protocol="subject-disjoint" if group_by == "subject" else "image-fewshot",
        meta={**info, **(meta or {})},
    )


def _warn_shared_subjects(subjects: Sequence[Hashable | None], sets: Sequence[Sequence[int]]) -> None:
    owner: dict[Hashable, int] = {}
    shared: set[Hashable] = set()
    for k, items in enumerate(sets):
        for i in items:
            s = subjects[i]
            if s is not None and owner.setdefault(s, k) != k:
                shared.add(s)
    if shared:
        warnings.warn(
            f"{len(shared)} subject(s) have images in two sets (e.g. {sorted(map(str, shared))[0]!r}), which "
            "inflates test scores; group_by='subject' keeps each subject in one set",
            stacklevel=3,
        )


def with_unlabeled_pool(split: Split, candidates: Sequence[str], size: int, seed: int = 0) -> Split:
    """``split`` with an unlabelled pool of ``size`` ids drawn from ``candidates``.

    Ids of the validation and test sets are never drawn (the labelled training ids may be: the
    pool stands for all the images a user has, without labels). The draw depends only on the
    candidates, ``size`` and ``seed``.

    Raises:
        DataError: fewer than ``size`` candidates outside the validation and test sets.
    """
    held = set(split.val) | set(split.test)
    pool = sorted(c for c in dict.fromkeys(candidates) if c not in held)
    if size > len(pool):
        raise DataError(
            f"an unlabelled pool of {size} needs {size} training-pool items outside val/test; "
            f"there are {len(pool)}: ask for a pool of at most {len(pool)}"
        )
    rng = random.Random(seed)
    picked = sorted(rng.sample(pool, size))
    meta = {**split.meta, "unlabeled_pool": size, "unlabeled_seed": seed}
    return dataclasses.replace(split, unlabeled=picked, meta=meta)
