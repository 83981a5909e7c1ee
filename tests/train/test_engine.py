"""Training glue: the optimizer step (AMP scale, unscale, clip, step), losses, autocast, prediction."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcon.consistency import ConsistencyConfig, attention_consistency
from atcon.evaluate import IGNORE
from atcon.train.engine import (
    autocast,
    classification_loss,
    consistency_loss,
    optimizer_step,
    predict,
    supervised_loss,
    touch_parameters,
)
from tests.conftest import TinyCNN, randomize_bn


def _problem() -> tuple[nn.Linear, Tensor, Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(4, 1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    return layer, x, y


def _loss(layer: nn.Linear, x: Tensor, y: Tensor) -> Tensor:
    return ((layer(x) - y) ** 2).mean()


def _grads(layer: nn.Linear, x: Tensor, y: Tensor) -> list[Tensor]:
    """The unscaled gradient of the loss, computed on a copy of the parameters."""
    w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    return list(torch.autograd.grad(((x @ w.T + b - y) ** 2).mean(), (w, b)))


def _norm(grads: list[Tensor]) -> float:
    return float(torch.sqrt(sum(g.square().sum() for g in grads)))


def _expected_sgd_step(layer: nn.Linear, x: Tensor, y: Tensor, clip: float, lr: float) -> list[Tensor]:
    """Parameters after one SGD step on the unscaled gradient clipped to norm ``clip`` (by hand)."""
    grads = _grads(layer, x, y)
    factor = min(1.0, clip / (_norm(grads) + 1e-6)) if clip > 0 else 1.0
    return [p.detach() - lr * factor * g for p, g in zip((layer.weight, layer.bias), grads)]


class RecordingScaler:
    """Stands in for GradScaler: scales by 1024, records every call. Like GradScaler, ``step``
    unscales the gradients first unless ``unscale_`` already did."""

    def __init__(self, events: list[str]) -> None:
        self.events, self.factor, self.unscaled = events, 1024.0, False

    def scale(self, loss: Tensor) -> Tensor:
        self.events.append("scale")
        return loss * self.factor

    def _unscale(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad.div_(self.factor)
        self.unscaled = True

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.events.append("unscale")
        self._unscale(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.events.append("scaler.step")
        if not self.unscaled:
            self._unscale(optimizer)
        optimizer.step()

    def update(self) -> None:
        self.events.append("update")
        self.unscaled = False


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_amp_step_unscales_before_clipping_and_steps_once(
    clip: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, x, y = _problem()
    expected = _expected_sgd_step(layer, x, y, clip, lr=0.1)
    true_norm = _norm(_grads(layer, x, y))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    events: list[str] = []
    real_step, real_clip = opt.step, torch.nn.utils.clip_grad_norm_
    seen_norms: list[float] = []

    def counting_step(*args: Any, **kw: Any) -> Any:
        events.append("optimizer.step")
        return real_step(*args, **kw)

    def recording_clip(params: Any, max_norm: float, *args: Any, **kw: Any) -> Tensor:
        params = list(params)
        seen_norms.append(_norm([p.grad for p in params]))
        events.append("clip")
        return real_clip(params, max_norm, *args, **kw)

    monkeypatch.setattr(opt, "step", counting_step)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    for p in layer.parameters():  # stale gradients must not leak into the step
        p.grad = torch.full_like(p, 100.0)
    optimizer_step(
        _loss(layer, x, y),
        opt,
        scaler=RecordingScaler(events),  # type: ignore[arg-type]
        clip_grad=clip,
        parameters=list(layer.parameters()),
    )
    if clip:
        assert events == ["scale", "unscale", "clip", "scaler.step", "optimizer.step", "update"]
        # Clipping saw the unscaled gradient: its norm, not 1024 times it.
        assert seen_norms == [pytest.approx(true_norm, rel=1e-5)]
    else:
        assert events == ["scale", "scaler.step", "optimizer.step", "update"]
    for got, want in zip(layer.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)


def test_a_real_cpu_grad_scaler_gives_the_unscaled_update() -> None:
    layer, x, y = _problem()
    plain = nn.Linear(4, 1)
    plain.load_state_dict(layer.state_dict())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    steps = 0
    real_step = opt.step

    def counting_step(*args: Any, **kw: Any) -> Any:
        nonlocal steps
        steps += 1
        return real_step(*args, **kw)

    opt.step = counting_step  # type: ignore[method-assign]
    optimizer_step(
        _loss(layer, x, y), opt, scaler=scaler, clip_grad=0.05, parameters=list(layer.parameters())
    )
    plain_opt = torch.optim.Adam(plain.parameters(), lr=0.01)
    optimizer_step(_loss(plain, x, y), plain_opt, clip_grad=0.05, parameters=list(plain.parameters()))
    assert steps == 1
    for a, b in zip(layer.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)  # a power-of-two scale is exact


def test_plain_step_clips_then_steps() -> None:
    layer, x, y = _problem()
    expected = _expected_sgd_step(layer, x, y, 0.05, lr=0.1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    optimizer_step(_loss(layer, x, y), opt, clip_grad=0.05, parameters=list(layer.parameters()))
    for got, want in zip(layer.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)


def test_classification_loss_leaves_ignored_entries_out() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    labels = (torch.rand(5, 4, generator=g) > 0.5).float()
    labels[0, 1] = labels[3, 2] = IGNORE
    total, count = 0.0, 0
    for i in range(5):
        for c in range(4):
            if labels[i, c] == IGNORE:
                continue
            p = torch.sigmoid(logits[i, c])
            y = labels[i, c]
            total += float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
            count += 1
    assert float(classification_loss(logits, labels, "multilabel")) == pytest.approx(total / count, rel=1e-5)
    classes = torch.tensor([0, 3, 1, 1, 2])
    naive = -sum(float(torch.log_softmax(logits[i], 0)[classes[i]]) for i in range(5)) / 5
    assert float(classification_loss(logits, classes, "multiclass")) == pytest.approx(naive, rel=1e-5)


def test_supervised_loss_adds_weighted_auxiliary_logits() -> None:
    Output = namedtuple("Output", ["logits", "aux_logits"])
    main, aux = torch.randn(3, 2), torch.randn(3, 2)

    class Inceptionish(nn.Module):
        def forward(self, x: Tensor) -> Any:
            return Output(main, aux)

    labels = torch.tensor([0, 1, 1])
    got = supervised_loss(Inceptionish(), torch.zeros(3), labels, "multiclass", aux_weight=0.4)
    assert float(got) == pytest.approx(
        float(F.cross_entropy(main, labels) + 0.4 * F.cross_entropy(aux, labels))
    )


def test_consistency_loss_runs_in_eval_mode_and_leaves_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 8, 8)
    got = consistency_loss(model, x, ConsistencyConfig(), "features")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    expected = attention_consistency(
        model.eval(), x, ConsistencyConfig(), target_layer="features"
    ).loss.mean()
    torch.testing.assert_close(got, expected)


def test_touch_parameters_is_the_identity_in_one_process() -> None:
    loss = torch.tensor(1.5)
    assert touch_parameters(loss, nn.Linear(2, 2)) is loss


def test_autocast_modes() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), "none"):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        autocast(torch.device("cpu"), "fp16")


def test_predict_returns_eval_mode_logits_and_labels_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN()).train()
    xs = torch.randn(5, 3, 8, 8)
    labels = (torch.rand(5, 3) > 0.5).long()
    ignore = torch.zeros(5, 3, dtype=torch.bool)
    ignore[2, 0] = True
    loader = [
        (xs[:3], {"labels": labels[:3], "ignore": ignore[:3]}),
        (xs[3:], {"labels": labels[3:], "ignore": ignore[3:]}),
    ]
    scores, got_labels = predict(model, loader, torch.device("cpu"), "multilabel")
    assert model.training
    with torch.no_grad():
        expected = model.eval()(xs)
    torch.testing.assert_close(scores, expected)
    want = labels.float()
    want[2, 0] = IGNORE
    assert torch.equal(got_labels, want)
