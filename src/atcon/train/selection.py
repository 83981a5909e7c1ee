"""Model selection: after each evaluation, is this the best model so far, and should training stop?

A :class:`SelectionRule` turns one row of signals (the metrics row an evaluation writes:
``train_loss``, ``val_map``, ``val_f1_macro``, ...) into a score, higher is better, and judges
it against the rows before it::

    rule = ValidationMetric("map", patience=3)
    score = rule.score(row)                    # row["val_map"]
    verdict = rule.judge(score, history)       # Verdict(best=..., stop=...)

The trainer saves ``checkpoints/best.pt`` when ``verdict.best`` and ends the run after the
current epoch when ``verdict.stop``. The default :meth:`SelectionRule.judge` is "the first
evaluation counts, later ones must beat the best so far; stop after ``patience`` evaluations
without a new best"; a rule with another signal overrides :meth:`~SelectionRule.score`, one with
another stopping criterion overrides :meth:`~SelectionRule.judge`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """What a rule decided about one evaluation.

    Attributes:
        best: this evaluation's model is the best so far (it becomes ``best.pt``).
        stop: stop training at the end of the current epoch.
    """

    best: bool
    stop: bool


class SelectionRule:
    """Base of the selection rules (see the module docstring).

    Attributes:
        patience: stop after this many evaluations in a row without a new best (0: never stop).
    """

    patience: int = 0

    @property
    def name(self) -> str:
        """The signal's name, written into ``summary.json`` as ``selection_metric``."""
        raise NotImplementedError

    def score(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> float:
        """The row's selection score, higher is better (``history``: the earlier rows, first is
        the first evaluation; rules that compare with the start read it)."""
        raise NotImplementedError

    def judge(self, score: float, history: Sequence[Mapping[str, Any]]) -> Verdict:
        """Judge ``score`` against the earlier rows (each with its ``selection`` score and ``best`` flag).

        The first evaluation always counts (even a ``nan`` score); later ones must beat the
        score of the last best row. ``stop`` once ``patience`` evaluations in a row, this one
        included, brought no new best.
        """
        bests = [row["selection"] for row in history if row["best"]]
        best = not history or score > bests[-1]
        since = 0
        if not best:
            since = 1
            for row in reversed(history):
                if row["best"]:
                    break
                since += 1
        return Verdict(best=best, stop=self.patience > 0 and since >= self.patience)


@dataclass(frozen=True)
class ValidationMetric(SelectionRule):
    """Highest validation metric: ``row["val_" + metric]`` (``"map"`` or ``"f1_macro"``)."""

    metric: str = "map"
    patience: int = 0

    @property
    def name(self) -> str:
        return self.metric

    def score(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> float:
        return float(row["val_" + self.metric])


@dataclass(frozen=True)
class LowestTrainLoss(SelectionRule):
    """Lowest training loss of the epoch (for networks without a classifier to validate, e.g.
    SimCLR); an evaluation without a training loss (mid-epoch) scores ``-inf``."""

    patience: int = 0

    @property
    def name(self) -> str:
        return "train_loss"

    def score(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> float:
        loss = row.get("train_loss")
        return -float(loss) if loss is not None else -math.inf


@dataclass(frozen=True)
class LastEvaluation(SelectionRule):
    """No selection: every evaluation replaces the best, so the final model is kept."""

    patience: int = 0

    @property
    def name(self) -> str:
        return "last"

    def score(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> float:
        return float(len(history))


def selection_metric(task: str) -> str:
    """Validation metric for model selection: mAP (multi-label) or macro F1 (multi-class)."""
    return "map" if task == "multilabel" else "f1_macro"


def replay(rule: SelectionRule, rows: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """Judge a run's logged metrics rows one by one, as the trainer does, with ``rule``.

    Answers "which checkpoint would other settings have chosen?" from a finished run's
    ``metrics.csv`` without training again (values may be the CSV's strings; an empty one is a
    missing value). As in the trainer, a ``stop`` verdict ends the run only when it is the last
    evaluation of its epoch (rows carry ``epoch``; without it each row is its own epoch); rows
    after that get no verdict.

    Returns:
        One verdict per judged row; the selected row is the last one with ``best``.
    """
    history: list[dict[str, Any]] = []
    verdicts = []
    for i, logged in enumerate(rows):
        row = {k: (None if v == "" else v) for k, v in logged.items()}
        score = rule.score(row, history)
        verdict = rule.judge(score, history)
        history.append({**row, "selection": score, "best": verdict.best})
        verdicts.append(verdict)
        last_of_epoch = (
            i + 1 == len(rows) or "epoch" not in row or rows[i + 1].get("epoch") != logged["epoch"]
        )
        if verdict.stop and last_of_epoch:
            break
    return verdicts


def replayed_choice(rule: SelectionRule, rows: Sequence[Mapping[str, Any]]) -> int:
    """Index in ``rows`` of the row ``rule`` selects when it replays them (:func:`replay`)."""
    return max(i for i, v in enumerate(replay(rule, rows)) if v.best)
