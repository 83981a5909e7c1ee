"""The parts of a run's loss built by build_loss_terms; the trained-network interface; the
checkpoint payload's keys (a file format)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from atcon.consistency import ConsistencyConfig
from atcon.models import build_model
from atcon.train.data import TaskData
from atcon.train.loss_setup import BoxSettings, GuardSettings, LossSetup, build_loss_terms
from atcon.train.network import PlainClassifier, trained_network
from atcon.train.simclr import SimCLRNet
from atcon.train.snapshot import Optimization, RunState, best_payload, last_payload, restore
from atcon.train.streams import LoaderSettings


class _Items(torch.utils.data.Dataset[Any]):
    """Random images with multi-label targets; reading a label fails (the Fisher reads none)."""

    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.x[i], {"image_id": str(i)}


def _data(holdout: bool = False) -> TaskData:
    items = _Items(4)
    return TaskData(
        task="multilabel",
        classes=("a", "b", "c", "d"),
        video=False,
        split=None,  # type: ignore[arg-type]
        train=items,
        val=items,
        test=items,
        unlabeled=None,
        image_size=32,
        holdout=_Items(3) if holdout else None,
    )


def _build(classifier: nn.Module, **kw: Any) -> tuple[LossSetup, list[str]]:
    logged: list[str] = []
    settings: dict[str, Any] = {
        "consistency": ConsistencyConfig(),
        "target_layer": None,
        "temperature": 0.5,
        "uses_consistency": True,
        "label_free": False,
        "guard": GuardSettings(),
        "boxes": BoxSettings(),
        "loaders": LoaderSettings(batch_size=2, eval_batch_size=2, workers=0),
        "seed": 0,
        "device": torch.device("cpu"),
        "resume": False,
        "log": logged.append,
    }
    settings.update(kw)
    data = settings.pop("data", _data())
    return build_loss_terms(classifier, data, **settings), logged


def test_labels_selection_without_a_guard_builds_no_reference() -> None:
    setup, logged = _build(build_model("small", 4))
    assert setup.reference is None and setup.guard is None and setup.param_anchor is None
    assert setup.mask_model is None and setup.boxes is None and setup.holdout_loader is None
    assert logged == []
    terms = setup.bind(nn.Identity())
    assert isinstance(terms.model, nn.Identity) and terms.guard is None and terms.task == "multilabel"


def test_a_guard_or_label_free_selection_gets_a_frozen_copy_of_the_start() -> None:
    classifier = build_model("small", 4)
    setup, logged = _build(classifier, guard=GuardSettings(anchor_weight=1.0))
    assert setup.reference is not None and setup.reference is not classifier
    assert all(not p.requires_grad for p in setup.reference.parameters()) and not setup.reference.training
    assert all(
        torch.equal(a, b)
        for a, b in zip(setup.reference.state_dict().values(), classifier.state_dict().values())
    )
    assert setup.guard is not None and setup.guard.anchor_weight == 1.0 and setup.param_anchor is None
    assert logged == ["collapse guard: prediction anchor lambda=1"]
    # Label-free selection: the reference and the hold-out loader, no guard.
    setup, logged = _build(classifier, label_free=True, data=_data(holdout=True))
    assert setup.reference is not None and setup.guard is None and setup.holdout_loader is not None
    assert logged == []
    # A strategy without the consistency term needs neither.
    setup, _ = _build(classifier, uses_consistency=False, guard=GuardSettings(anchor_weight=1.0))
    assert setup.reference is None and setup.guard is None


def test_fisher_weights_are_placeholders_on_resume_and_leave_the_global_generator_alone() -> None:
    classifier = build_model("small", 4)
    guard = GuardSettings(param_anchor_weight=0.1, param_anchor_fisher=True)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    setup, logged = _build(classifier, guard=guard)
    assert torch.equal(torch.get_rng_state(), before)
    assert setup.param_anchor is not None and setup.param_anchor.weights is not None
    assert logged == ["collapse guard: Fisher-weighted parameter anchor mu=0.1"]
    assert setup.reference is not None
    again = setup.fisher.weights(setup.reference, list(setup.param_anchor.weights))
    assert all(torch.equal(again[k], v) for k, v in setup.param_anchor.weights.items())
    resumed, _ = _build(classifier, guard=guard, resume=True)
    assert resumed.param_anchor is not None and resumed.param_anchor.weights is not None
    assert all(float(v) == 1.0 for v in resumed.param_anchor.weights.values())


def test_the_random_network_mask_model_is_seeded() -> None:
    classifier = build_model("small", 4)
    consistency = ConsistencyConfig(resolution="gb_mask", mask_source="random_network")
    a, _ = _build(classifier, consistency=consistency, seed=5)
    b, _ = _build(classifier, consistency=consistency, seed=5)
    c, _ = _build(classifier, consistency=consistency, seed=6)
    assert a.mask_model is not None and b.mask_model is not None and c.mask_model is not None
    sa, sb, sc = (m.state_dict() for m in (a.mask_model, b.mask_model, c.mask_model))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_boxes_need_annotated_images() -> None:
    with pytest.raises(ValueError, match="box_weight needs boxes"):
        _build(build_model("small", 4), boxes=BoxSettings(weight=1.0))


def test_plain_classifiers_and_simclr_answer_the_same_interface() -> None:
    model = build_model("small", 4)
    plain = trained_network(model)
    assert isinstance(plain, PlainClassifier) and plain.has_validation_metrics
    assert plain.extra_state() is None and plain.classifier_state().keys() == model.state_dict().keys()
    net = SimCLRNet(build_model("small", 4), hidden=8, out_features=4)
    assert trained_network(net) is net


def test_checkpoint_payload_keys_are_the_file_format() -> None:
    model = build_model("small", 4)
    setup, _ = _build(model)
    network = trained_network(model)
    opt = torch.optim.Adam(model.parameters())
    optimization = Optimization(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), None)
    meta = {"config": {}, "classes": ["a"]}
    state = RunState(epoch=2, best_metric=0.5)
    last = last_payload(
        network.classifier_state(), meta, state, network=network, optimization=optimization, loss=setup
    )
    assert list(last) == [
        "model", "kind", "config", "classes", "optimizer", "scheduler", "scaler", "state", "rng",
        "projection", "reference", "fisher", "mask_model",
    ]  # fmt: skip
    assert last["kind"] == "last" and last["projection"] is None and last["reference"] is None
    best = best_payload(network.classifier_state(), meta, state)
    assert list(best) == ["model", "kind", "config", "classes", "epoch", "metric"]
    assert (best["epoch"], best["metric"]) == (2, 0.5)
    assert restore(last, network=network, optimization=optimization, loss=setup) == state
