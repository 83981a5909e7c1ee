import itertools
import math

import pytest
import torch
from torch import nn

from atcon.evaluate import deletion_insertion, gaussian_blur, make_baseline


class WeightedSum(nn.Module):
    """Two-class logits [sum(w * x), 0]: the softmax probability of class 0 is sigmoid(sum(w * x))."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x):
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _trapezoid(ys):
    k = len(ys) - 1
    return sum((a + b) / 2 for a, b in itertools.pairwise(ys)) / k


def test_hand_computed_curves():
    w = torch.tensor([[4.0, 3.0], [2.0, 1.0]]).view(1, 1, 2, 2)
    model = WeightedSum(w)
    x = torch.ones(1, 1, 2, 2)
    out = deletion_insertion(model, x, w[:, 0], 0, steps=4, insertion_baseline="zero")
    # Pixels go in the order of the map (4, 3, 2, 1): remaining sums 10, 6, 3, 1, 0.
    deletion = [_sigmoid(v) for v in (10, 6, 3, 1, 0)]
    insertion = [_sigmoid(v) for v in (0, 4, 7, 9, 10)]
    assert out["deletion_curve"][0].tolist() == pytest.approx(deletion, abs=1e-6)
    assert out["insertion_curve"][0].tolist() == pytest.approx(insertion, abs=1e-6)
    assert float(out["deletion"][0]) == pytest.approx(_trapezoid(deletion), abs=1e-6)
    assert float(out["insertion"][0]) == pytest.approx(_trapezoid(insertion), abs=1e-6)
    assert out["fractions"].tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])


def test_correct_map_beats_inverted_map():
    h, w = 8, 12
    region = torch.zeros(h, w)
    region[2:5, 3:7] = 1.0
    model = WeightedSum(region.view(1, 1, h, w) * 0.5)
    x = torch.ones(2, 3, h, w)
    good = region.expand(2, h, w) + 0.01 * torch.rand(2, h, w)
    out_good = deletion_insertion(model, x, good, 0, steps=16, insertion_baseline="zero")
    out_bad = deletion_insertion(model, x, 1 - good, 0, steps=16, insertion_baseline="zero")
    assert torch.all(out_good["deletion"] < out_bad["deletion"] - 0.1)
    assert torch.all(out_good["insertion"] > out_bad["insertion"] + 0.1)


def _conv_model(dims=2):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1) if dims == 2 else nn.Conv3d(3, 4, 3, padding=1)
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    norm = nn.BatchNorm2d(4) if dims == 2 else nn.BatchNorm3d(4)
    return nn.Sequential(conv, norm, nn.ReLU(), pool, nn.Flatten(), nn.Linear(4, 5))


@pytest.mark.parametrize("clip", [False, True])
def test_batched_equals_per_sample(clip):
    model = _conv_model(3 if clip else 2)
    g = torch.Generator().manual_seed(1)
    shape = (3, 3, 4, 10, 12) if clip else (3, 3, 10, 12)
    x = torch.randn(shape, generator=g)
    maps = torch.rand((3, 2, 5, 6) if clip else (3, 5, 6), generator=g)  # layer resolution
    targets = torch.tensor([0, 3, 1])
    kw = dict(steps=6, prob="sigmoid", insertion_baseline="blur", blur_sigma=1.0)
    batched = deletion_insertion(model, x, maps, targets, batch_size=5, **kw)
    for i in range(3):
        one = deletion_insertion(
            model, x[i : i + 1], maps[i : i + 1], targets[i : i + 1], batch_size=64, **kw
        )
        for k in ("deletion", "insertion", "deletion_curve", "insertion_curve"):
            torch.testing.assert_close(batched[k][i], one[k][0], atol=1e-5, rtol=1e-5)
    assert batched["deletion_curve"].shape == (3, 7)
    # Unperturbed start of deletion = full insertion = the model's probability on x.
    with torch.no_grad():
        p = model.eval()(x).sigmoid().gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(batched["deletion_curve"][:, 0], p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["insertion_curve"][:, -1], p, atol=1e-5, rtol=1e-5)


def test_model_state_restored_and_default_targets():
    model = _conv_model()
    model.train()
    bn = model[1]
    before = bn.running_mean.clone()
    x = torch.randn(2, 3, 8, 8)
    out = deletion_insertion(model, x, torch.rand(2, 4, 4), steps=4)
    assert model.training and bn.training
    torch.testing.assert_close(bn.running_mean, before)
    with torch.no_grad():
        top = model.eval()(x).argmax(1)
    assert out["targets"].tolist() == top.tolist()


def test_degenerate_maps_give_nan():
    model = _conv_model()
    maps = torch.rand(3, 4, 4)
    maps[1] = 0
    maps[2] = 7.0
    out = deletion_insertion(model, torch.randn(3, 3, 8, 8), maps, 0, steps=4)
    assert out["degenerate"].tolist() == [False, True, True]
    assert not math.isnan(float(out["deletion"][0])) and bool(out["insertion"][1:].isnan().all())


def test_baselines():
    x = torch.randn(2, 3, 4, 9, 11)
    assert torch.equal(make_baseline(x, "zero"), torch.zeros_like(x))
    assert torch.equal(make_baseline(x, 0.25), torch.full_like(x, 0.25))
    mean = make_baseline(x, "mean")
    torch.testing.assert_close(mean[:, :, 0, 0, 0], x.mean((2, 3, 4)))
    blurred = make_baseline(x, "blur", blur_sigma=2.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    # A constant image is unchanged by the blur (weights sum to 1, replicate padding).
    torch.testing.assert_close(
        gaussian_blur(torch.full((1, 1, 5, 7), 2.0), 3.0), torch.full((1, 1, 5, 7), 2.0)
    )
    with pytest.raises(ValueError):
        make_baseline(x, "noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        deletion_insertion(_conv_model(), torch.randn(2, 3, 8, 8), torch.rand(2, 4, 4), prob="relu")  # type: ignore[arg-type]
