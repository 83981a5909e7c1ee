"""Few-shot splits of the user's labeled images (class folders, CSV manifests, COCO files).

The same protocol as for VOC (N per class for training, a validation draw from the rest of the
training pool, the given or remaining images as test), with the validation size rule of
:data:`~atcon.data.fewshot.DEFAULT_VAL_SIZE` and, with ``group_by="subject"``, subject-disjoint sets.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from atcon.data._common import DataError
from atcon.data.fewshot import sample_per_class, subject_disjoint_split, val_count, val_rule
from atcon.data.split import Split


class LabeledImages(Protocol):
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
    data: LabeledImages, subjects: Sequence[Hashable], splits: Sequence[str]
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
    data: str | Path | LabeledImages,
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

    One function on purpose: the order of the draws (test, val, per-class training) is the
    split's reproducibility contract, kept readable top to bottom.
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
