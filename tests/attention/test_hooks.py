"""Calls leave the model exactly as they found it, also when they raise."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch import nn

import atcon
from tests.conftest import TinyCNN, randomize_bn


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in model.modules()
        ),
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "inplace": [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
    }


def assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    for key in ("modes", "requires_grad", "hooks", "modules", "inplace"):
        assert before[key] == after[key], key
    for a, b in zip(before["grads"], after["grads"]):  # type: ignore[call-overload]
        assert (a is None and b is None) or torch.equal(a, b)
    for k, v in before["state"].items():  # type: ignore[attr-defined]
        assert torch.equal(v, after["state"][k]), k  # type: ignore[index]


CALLS = {
    "gradcam": lambda m, x: atcon.gradcam(m, x, create_graph=True),
    "guided_backprop": lambda m, x: atcon.guided_backprop(m, x),
    "loss": lambda m, x: atcon.AttentionConsistencyLoss(m)(x),
    "loss_gradcam_mask": lambda m, x: atcon.AttentionConsistencyLoss(m, resolution="gradcam_mask")(x),
}


@pytest.mark.filterwarnings("ignore:.*BatchNorm.*:UserWarning")
@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("call", list(CALLS))
def test_model_left_untouched(call: str, train_mode: bool) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN())
    model.train(train_mode)
    model.features[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    model.head[1].weight.grad = torch.ones_like(model.head[1].weight)  # an existing .grad is kept
    before = snapshot(model)
    CALLS[call](model, torch.randn(2, 3, 8, 8))
    assert_same(before, snapshot(model))


def test_restored_when_the_call_raises() -> None:
    class Flaky(TinyCNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.features.eval()  # a side effect before failing
            self.head[1].weight.requires_grad_(False)
            raise RuntimeError("boom")

    model = Flaky().train()
    before = snapshot(model)
    for call in CALLS.values():
        with pytest.raises(RuntimeError, match="boom"):
            call(model, torch.randn(2, 3, 8, 8))
        assert_same(before, snapshot(model))
    # An error raised by atcon itself after the forward pass (target out of range).
    tiny = TinyCNN().eval()
    before = snapshot(tiny)
    with pytest.raises(ValueError, match="out of range"):
        atcon.gradcam(tiny, torch.randn(2, 3, 8, 8), targets=9)
    assert_same(before, snapshot(tiny))


def _tensor_count() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated torch aliases warns
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_memory_flat_over_repeated_calls(tiny: TinyCNN) -> None:
    x = torch.randn(2, 3, 8, 8)
    loss_fn = atcon.AttentionConsistencyLoss(tiny)
    for _ in range(3):  # warm caches (layer discovery)
        atcon.gradcam(tiny, x)
        loss_fn(x).backward()
    tiny.zero_grad(set_to_none=True)
    start = _tensor_count()
    for _ in range(100):
        atcon.gradcam(tiny, x)
        atcon.guided_backprop(tiny, x)
        loss_fn(x).backward()
    tiny.zero_grad(set_to_none=True)
    assert _tensor_count() <= start
    assert snapshot(tiny)["hooks"] == 0
