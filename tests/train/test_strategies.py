"""Strategies: what each reads, its steps per epoch, the alternated draw, its loss; selection rules."""

from __future__ import annotations

import math
import random
from typing import Any, get_args

import pytest
import torch

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.models import build_model
from atcon.train.config import TrainConfig
from atcon.train.engine import classification_loss
from atcon.train.selection import LowestTrainLoss, SelectionRule, ValidationMetric
from atcon.train.simclr import NTXentLoss, SimCLRNet
from atcon.train.strategies import (
    REGISTRY,
    STRATEGIES,
    LossTerms,
    Strategy,
    StrategyName,
    register,
    strategy_class,
)


def _make(name: str, labeled: int = 10, unlabeled: int = 30, batch: int = 4, **cfg: Any) -> Strategy:
    kind = strategy_class(name)
    items = {"labeled": labeled, "unlabeled": unlabeled}
    batches = {s: -(-n // batch) for s, n in items.items()}
    return kind(TrainConfig(strategy=name, batch_size=batch, **cfg), items, batches)  # type: ignore[arg-type]


def test_registry_is_the_config_vocabulary() -> None:
    assert set(REGISTRY) == set(get_args(StrategyName)) == set(STRATEGIES)
    assert all(cls.__doc__ and cls.name == name for name, cls in REGISTRY.items())
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategy_class("nope")

    class Unlisted(Strategy):
        name = "unlisted"
        streams = ("labeled",)

    with pytest.raises(ValueError, match="add it there"):
        register(Unlisted)


def test_streams_and_steps_per_epoch() -> None:
    # 10 labeled items -> 3 batches of 4; 30 unlabeled -> 8.
    expected = {
        "supervised": (("labeled",), 3),
        "combined": (("labeled",), 3),
        "simclr": (("labeled",), 3),
        "finetune": (("unlabeled",), 8),
        "alternated": (("labeled", "unlabeled"), 11),
    }
    for name, (streams, steps) in expected.items():
        s = _make(name)
        assert (s.streams, s.steps_per_epoch) == (streams, steps), name
        if name != "alternated":
            assert all(s.draw(e, b) == streams for e in range(2) for b in range(steps))
    assert strategy_class("simclr").two_views and not strategy_class("combined").two_views
    assert (
        strategy_class("finetune").start_is_candidate and not strategy_class("alternated").start_is_candidate
    )


@pytest.mark.parametrize(("alpha", "p"), [(1.0, 10 / 40), (3.0, 30 / 60)])
def test_alternated_draw_is_seeded_and_has_the_stated_probability(alpha: float, p: float) -> None:
    s = _make("alternated", alternate_alpha=alpha, seed=3)
    assert s.p_supervised == pytest.approx(p)  # type: ignore[attr-defined]
    draws = [s.draw(e, b) for e in range(40) for b in range(100)]
    assert set(draws) == {("labeled",), ("unlabeled",)}
    share = sum(d == ("labeled",) for d in draws) / len(draws)
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / len(draws))
    # A pure function of (seed, epoch, step): a resumed run replays it in any order.
    again = _make("alternated", alternate_alpha=alpha, seed=3)
    keys = [(e, b) for e in range(40) for b in range(100)]
    random.Random(0).shuffle(keys)
    assert all(again.draw(e, b) == draws[100 * e + b] for e, b in keys)
    other_seed = _make("alternated", alternate_alpha=alpha, seed=4)
    assert [other_seed.draw(e, b) for e in range(40) for b in range(100)] != draws


def _batch(n: int = 3) -> tuple[torch.Tensor, dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), {"labels": (torch.rand(n, 3, generator=g) > 0.5).long()}


def test_combined_and_alternated_losses_compose_the_terms() -> None:
    torch.manual_seed(0)
    model = build_model("small", 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    terms = LossTerms(model, "multilabel")
    x, target = _batch()

    def fresh() -> torch.nn.Module:  # training-mode passes move BatchNorm statistics: start over
        model.load_state_dict(start)
        return model

    sup = classification_loss(fresh().train()(x), target["labels"].float(), "multilabel")
    con_after_sup = attention_consistency(model.eval(), x, ConsistencyConfig()).loss.mean()
    con = attention_consistency(fresh().eval(), x, ConsistencyConfig()).loss.mean()
    combined = _make("combined", consistency_weight=0.25)
    fresh()
    torch.testing.assert_close(combined.loss(terms, {"labeled": (x, target)}), sup + 0.25 * con_after_sup)
    alternated = _make("alternated")
    fresh()
    torch.testing.assert_close(alternated.loss(terms, {"labeled": (x, target)}), sup)
    fresh()
    torch.testing.assert_close(alternated.loss(terms, {"unlabeled": (x, {})}), con)
    fresh()
    torch.testing.assert_close(_make("finetune").loss(terms, {"unlabeled": (x, {})}), con)
    fresh()
    torch.testing.assert_close(_make("supervised").loss(terms, {"labeled": (x, target)}), sup)


def test_simclr_trains_a_projection_network_on_view_pairs() -> None:
    torch.manual_seed(0)
    s = _make("simclr")
    net = s.network(build_model("small", 3))
    assert isinstance(net, SimCLRNet)
    views = torch.rand(4, 2, 3, 32, 32)
    terms = LossTerms(net, "multilabel", temperature=0.2)
    expected = NTXentLoss(0.2)(net.train()(views[:, 0]), net(views[:, 1]))
    torch.testing.assert_close(s.loss(terms, {"labeled": (views, {})}), expected)


def test_each_strategy_picks_its_selection_rule() -> None:
    assert _make("supervised").selection("multilabel", 2) == ValidationMetric("map", 2)
    assert _make("finetune").selection("multiclass", 0) == ValidationMetric("f1_macro", 0)
    assert _make("simclr").selection("multilabel", 1) == LowestTrainLoss(1)


def _naive_selection(scores: list[float], patience: int) -> list[tuple[bool, bool]]:
    """The trainer's original bookkeeping: running best, counter of evaluations without one."""
    best, bad, out = -math.inf, 0, []
    for i, score in enumerate(scores):
        improved = score > best or i == 0
        if improved:
            best, bad = score, 0
        else:
            bad += 1
        out.append((improved, patience > 0 and bad >= patience))
    return out


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_default_judge_matches_a_running_best_with_patience(patience: int) -> None:
    rng = random.Random(patience)
    rule = ValidationMetric("map", patience)
    for trial in range(50):
        scores = [rng.choice([0.1, 0.2, 0.3, 0.4, math.nan]) for _ in range(rng.randint(1, 12))]
        if trial % 5 == 0:
            scores[0] = math.nan  # a nan first evaluation still counts as the first best
        history: list[dict[str, Any]] = []
        got = []
        for score in scores:
            verdict = rule.judge(rule.score({"val_map": score}), history)
            history.append({"selection": score, "best": verdict.best})
            got.append((verdict.best, verdict.stop))
        assert got == _naive_selection(scores, patience), scores


def test_rule_scores() -> None:
    assert ValidationMetric("f1_macro").score({"val_f1_macro": 0.5, "val_map": 0.9}) == 0.5
    assert ValidationMetric("map").name == "map"
    assert LowestTrainLoss().score({"train_loss": 0.25}) == -0.25
    assert LowestTrainLoss().score({"train_loss": None}) == -math.inf
    with pytest.raises(NotImplementedError):
        SelectionRule().score({})
