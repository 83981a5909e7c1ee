"""Label-free signals and the label-free selection rule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import entropy

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.train.labelfree import (
    MAP_SIGNALS,
    LabelFreeSelection,
    label_free_signals,
    map_correlation,
    marginal_entropy,
    share_inside,
    spatial_entropy,
    top_share,
)
from atcon.train.selection import LowestTrainLoss, replay, replayed_choice
from tests.conftest import TinyCNN, randomize_bn


def test_marginal_entropy_against_scipy() -> None:
    top1 = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    counts = torch.bincount(top1, minlength=5).double().numpy()
    assert math.isclose(float(marginal_entropy(top1, 5)), entropy(counts) / math.log(5), rel_tol=1e-6)
    assert float(marginal_entropy(torch.arange(4), 4)) == pytest.approx(1.0)
    assert float(marginal_entropy(torch.zeros(9, dtype=torch.long), 4)) == pytest.approx(0.0, abs=1e-7)


def test_signals_of_the_starting_model_and_of_a_changed_one() -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(classes=4)).eval()
    batches = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    cfg = ConsistencyConfig()
    same = label_free_signals(model, copy.deepcopy(model), batches, cfg, "multilabel")
    assert same["agreement"] == 1.0
    assert same["kl_to_start"] == pytest.approx(0.0, abs=1e-6)
    direct = torch.cat([attention_consistency(model, x, cfg).loss.detach() for x in batches]).mean()
    assert same["consistency"] == pytest.approx(float(direct), abs=1e-6)
    other = randomize_bn(TinyCNN(classes=4), seed=3).eval()
    changed = label_free_signals(other, model, batches, cfg, "multiclass")
    assert changed["kl_to_start"] > 0
    assert 0.0 <= changed["agreement"] <= 1.0
    assert 0.0 <= changed["class_entropy"] <= 1.0
    # The map-shape signals: the start's maps correlate perfectly with themselves, not with another's.
    assert set(MAP_SIGNALS) <= set(same) and same["cam_vs_start"] == pytest.approx(1.0, abs=1e-5)
    assert changed["cam_vs_start"] < 0.99
    for key in ("cam_entropy", "cam_peak", "gb_peak", "gb_in_cam"):
        assert 0.0 <= same[key] <= 1.0, key
    # Control masks have no Guided Backprop: its signals are undefined, the others are not.
    control = label_free_signals(model, model, batches, ConsistencyConfig(mask_source="sobel"), "multilabel")
    assert math.isnan(control["gb_peak"]) and not math.isnan(control["cam_peak"])


def test_map_shape_signals_by_hand() -> None:
    flat = torch.ones(1, 4, 5)
    peak = torch.zeros(1, 4, 5)
    peak[0, 1, 2] = 3.0
    assert spatial_entropy(torch.cat([flat, peak])).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert math.isnan(float(spatial_entropy(-flat)[0]))  # no positive mass
    # 5% of 20 positions is one: the top position's share of the mass.
    values = torch.tensor([[4.0] + [1.0] * 19])
    assert float(top_share(values)[0]) == pytest.approx(4 / 23)
    assert float(top_share(values, 0.1)[0]) == pytest.approx(5 / 23)
    region = torch.zeros(1, 20, dtype=torch.bool)
    region[0, :2] = True
    assert float(share_inside(values, region)[0]) == pytest.approx(5 / 23)
    a = torch.arange(6.0).reshape(1, 2, 3)
    assert float(map_correlation(a, 2 * a + 1)[0]) == pytest.approx(1.0)
    assert float(map_correlation(a, -a)[0]) == pytest.approx(-1.0)
    assert math.isnan(float(map_correlation(a, torch.ones_like(a))[0]))


def _row(cons: float, agree: float = 1.0, ent: float = 0.9) -> dict[str, float]:
    return {"lf_consistency": cons, "lf_agreement": agree, "lf_class_entropy": ent, "lf_kl_to_start": 0.0}


def _run(rule: LabelFreeSelection, rows: list[dict[str, float]]) -> list[tuple[bool, bool]]:
    """(best, stop) per row, judged as the trainer does, up to the first stop."""
    return [(v.best, v.stop) for v in replay(rule, rows)]


def test_replay_judges_logged_rows_as_the_trainer_does() -> None:
    rows = [_row(-0.5), _row(-0.6), _row(-0.9, agree=0.5), _row(-0.95, ent=0.5), _row(-0.99)]
    rule = LabelFreeSelection(min_agreement=0.9, min_entropy_ratio=0.95, min_delta=0.01, patience=2)
    verdicts = replay(rule, rows)
    assert [(v.best, v.stop) for v in verdicts] == [
        (True, False),
        (True, False),
        (False, False),
        (False, True),
    ]
    assert replayed_choice(rule, rows) == 1
    # Without stopping, row 4 (admissible, most consistent) wins, whatever the floors; with
    # lower floors and only the first four rows, row 3.
    assert replayed_choice(LabelFreeSelection(patience=0), rows) == 4
    assert (
        replayed_choice(LabelFreeSelection(min_agreement=0.4, min_entropy_ratio=0.5, patience=0), rows) == 4
    )
    assert (
        replayed_choice(LabelFreeSelection(min_agreement=0.4, min_entropy_ratio=0.5, patience=0), rows[:4])
        == 3
    )
    assert replayed_choice(LabelFreeSelection(min_agreement=1.01), rows) == 0  # nothing beats the start
    as_strings = [{k: str(v) for k, v in r.items()} for r in rows]  # as read back from metrics.csv
    assert replayed_choice(rule, as_strings) == 1


def test_replay_stops_only_at_the_end_of_an_epoch() -> None:
    """A stop verdict in mid-epoch is overridden by a later best in the same epoch (the trainer
    checks for a stop after each epoch); an empty CSV value is a missing one."""
    rows = [
        {**_row(-0.5), "epoch": "-1", "train_loss": ""},
        {**_row(-0.4), "epoch": "0", "train_loss": ""},  # worse: stop verdict (patience 1) ...
        {**_row(-0.7), "epoch": "0", "train_loss": "0.3"},  # ... but this one is a new best
        {**_row(-0.6), "epoch": "1", "train_loss": "0.2"},  # worse at the end of epoch 1: stop
        {**_row(-0.9), "epoch": "2", "train_loss": "0.1"},  # never evaluated
    ]
    rule = LabelFreeSelection(min_delta=0.0, patience=1)
    assert [(v.best, v.stop) for v in replay(rule, rows)] == [
        (True, False), (False, True), (True, False), (False, True),
    ]  # fmt: skip
    assert replayed_choice(rule, rows) == 2
    assert replayed_choice(LowestTrainLoss(patience=0), rows) == 4  # the start has no train loss


def test_selection_keeps_the_best_admissible_and_stops_on_plateau() -> None:
    rule = LabelFreeSelection(min_agreement=0.9, min_entropy_ratio=0.95, min_delta=0.01, patience=2)
    verdicts = _run(
        rule,
        [
            _row(-0.5),  # the start: always best
            _row(-0.6),  # more consistent, admissible: best
            _row(-0.9, agree=0.5),  # predictions drifted: rejected (stale 1)
            _row(-0.95, ent=0.5),  # collapsing class histogram: rejected (stale 2 -> stop)
        ],
    )
    assert verdicts == [(True, False), (True, False), (False, False), (False, True)]
    assert rule.score(_row(-0.9, agree=0.5), [_row(-0.5)]) == -math.inf
    assert rule.score(_row(-0.9, agree=0.5), []) == 0.9  # the first row always counts


def test_selection_plateau_counts_small_improvements_as_stale() -> None:
    rule = LabelFreeSelection(min_delta=0.05, patience=2)
    verdicts = _run(rule, [_row(-0.5), _row(-0.51), _row(-0.52), _row(-0.7)])
    # Better but within min_delta: best, yet no progress; two such in a row stop the run.
    assert verdicts[:3] == [(True, False), (True, False), (True, True)]
    never = LabelFreeSelection(min_delta=0.05, patience=0)
    assert not any(stop for _, stop in _run(never, [_row(-0.5), _row(-0.5), _row(-0.5)]))
    progress = _run(
        LabelFreeSelection(min_delta=0.05, patience=2), [_row(-0.5), _row(-0.51), _row(-0.7), _row(-0.71)]
    )
    assert progress == [(True, False), (True, False), (True, False), (True, False)]


def test_selection_needs_the_signals() -> None:
    with pytest.raises(KeyError, match="lf_agreement"):
        LabelFreeSelection().score({"lf_consistency": 0.0})
