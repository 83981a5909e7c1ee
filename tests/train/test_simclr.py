"""NT-Xent against a naive implementation; SimCLRNet wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atcon.models import build_model
from atcon.train.simclr import NTXentLoss, SimCLRNet


def naive_ntxent(z0: torch.Tensor, z1: torch.Tensor, tau: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / sum(sims))
    return torch.tensor(total / (2 * n))


def test_matches_naive() -> None:
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for tau in (0.1, 0.5, 1.0):
        assert NTXentLoss(tau)(z0, z1).item() == pytest.approx(naive_ntxent(z0, z1, tau).item(), rel=1e-5)


def test_aligned_views_give_lower_loss() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 16, generator=g)
    assert NTXentLoss()(z, z + 0.01 * torch.randn(8, 16, generator=g)) < NTXentLoss()(
        z, torch.randn(8, 16, generator=g)
    )


def test_validation() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="both be"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(2, 4))


def test_simclr_net_restores_classifier() -> None:
    model = build_model("small", 4)
    fc = model.fc
    net = SimCLRNet(model, hidden=32, out_features=8)
    assert all(p is not fc.weight for p in net.parameters())  # the head is set aside
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 8)
    assert net.classifier().fc is fc
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_simclr_net_classifier_state_round_trips_as_the_plain_classifier() -> None:
    torch.manual_seed(0)
    model = build_model("small", 4)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    net = SimCLRNet(model, hidden=32, out_features=8)
    assert not net.has_validation_metrics
    state = net.classifier_state()
    assert state.keys() == expected.keys()  # the encoder's keys plus the set-aside head's fc.*
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert net.extra_state().keys() == net.projection.state_dict().keys()
    # Into a second network: the same classifier and projection weights.
    torch.manual_seed(1)
    other = SimCLRNet(build_model("small", 4), hidden=32, out_features=8)
    other.load_classifier_state(state)
    other.load_extra_state(net.extra_state())
    assert all(torch.equal(v, expected[k]) for k, v in other.classifier_state().items())
    assert all(torch.equal(v, net.projection.state_dict()[k]) for k, v in other.extra_state().items())
    plain = build_model("small", 4)
    plain.load_state_dict(state)  # a SimCLR checkpoint's "model" loads as the classifier
    with pytest.raises(ValueError, match="projection"):
        other.load_extra_state(None)
