"""The loss's forward and backward read no tensor value back to the host (no device sync on GPU)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from atcon.consistency import RESOLUTIONS, SIMILARITIES, ConsistencyConfig, attention_consistency
from tests.conftest import TinyCNN, randomize_bn

# The ops behind .item(), int(t), float(t), bool(t) and `if t:`.
_READBACK = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}


class _Readbacks(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += func in _READBACK
        return func(*args, **(kwargs or {}))


def test_the_spy_sees_a_readback() -> None:
    with _Readbacks() as spy:
        int(torch.ones(3).sum())
    assert spy.count == 1


VARIANTS = [(r, s, False) for r, s in itertools.product(RESOLUTIONS, SIMILARITIES)]
VARIANTS += [("gb_mask", "pearson", True), ("gradcam_mask", "pearson", True)]


@pytest.mark.parametrize(("resolution", "similarity", "lean_conv_grad"), VARIANTS)
def test_no_readback_in_a_training_step(resolution: str, similarity: str, lean_conv_grad: bool) -> None:
    torch.manual_seed(0)
    model = randomize_bn(TinyCNN(width=3)).eval()
    x = torch.randn(2, 3, 12, 12)
    config = ConsistencyConfig(resolution=resolution, similarity=similarity, lean_conv_grad=lean_conv_grad)  # type: ignore[arg-type]
    attention_consistency(model, x, config)  # first call: BatchNorm pairs and target layer found
    with _Readbacks() as spy:
        attention_consistency(model, x, config).loss.mean().backward()
    assert spy.count == 0
