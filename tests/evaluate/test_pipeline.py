"""The one-pass evaluation: hand-computed values, batching, clips, faithfulness."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from atcon.evaluate import EvalSpec, LocalizationProtocol, batch_gradcams, evaluate_model

nan = math.nan


class KnownCam(nn.Module):
    """``layer`` passes the (single-channel) input through; logits ``w_c * mean(x) + b_c``.

    Grad-CAM of class c at ``layer`` is ``(w_c / HW) * x``: with ``w_c > 0`` the ReLU'd map
    is the input itself, up to scale, so localization values can be computed by hand.
    """

    def __init__(self, weights: list[float], bias: float = 1.0, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.layer = conv(1, 1, 1, bias=False)
        nn.init.ones_(self.layer.weight)
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(1, len(weights))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weights)[:, None])
            self.fc.bias.fill_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.layer(x)), 1))


def image_items() -> list[tuple[Tensor, dict[str, Any]]]:
    """Three 16x16 images (all predicted positive for both classes by ``KnownCam([1, 1])``).

    0: bright square rows/cols 2-5; labels (1, 1); class-0 box on the square, class-1 box away.
    1: all zero (degenerate map); labels (1, 0).
    2: labels (0, 0): no true positive; an ignored entry for class 1.
    """
    x0 = torch.zeros(1, 16, 16)
    x0[:, 2:6, 2:6] = 1.0
    items = [
        (x0, [1.0, 1.0], [False, False], [[2, 2, 6, 6], [8, 8, 16, 16]], [0, 1]),
        (torch.zeros(1, 16, 16), [1.0, 0.0], [False, False], [[0, 0, 4, 4]], [0]),
        (
            torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0)),
            [0.0, 0.0],
            [False, True],
            [],
            [],
        ),
    ]
    return [
        (
            x,
            {
                "labels": torch.tensor(lab),
                "ignore": torch.tensor(ign),
                "boxes": torch.tensor(b, dtype=torch.float).reshape(-1, 4),
                "box_labels": torch.tensor(bl, dtype=torch.long),
            },
        )
        for x, lab, ign, b, bl in items
    ]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_hand_computed_images(batch_size: int) -> None:
    protocol = LocalizationProtocol(pointing_tolerance=0.0)
    spec = EvalSpec(
        "multilabel", classes=("a", "b"), protocol=protocol, n_resamples=50, batch_size=batch_size
    )
    r = evaluate_model(KnownCam([1.0, 1.0]), image_items(), spec, name="known")
    assert r.layer == "layer" and r.n_items == 3 and r.name == "known" and r.classes == ("a", "b")
    assert r.pairs.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert r.n_pairs == 3 and r.n_degenerate == 1 and r.n_unannotated == 0
    loc = r.localization
    assert loc is not None
    torch.testing.assert_close(loc.iou, torch.tensor([1.0, 0.0, nan]), equal_nan=True)
    torch.testing.assert_close(loc.pointing, torch.tensor([1.0, 0.0, nan]), equal_nan=True)
    torch.testing.assert_close(loc.energy, torch.tensor([1.0, 0.0, nan]), equal_nan=True)
    # Per-item tables: the item is the bootstrap unit; item 2 has no pair.
    torch.testing.assert_close(
        r.item_values["iou"], torch.tensor([[1.0, 0.0], [nan, nan], [nan, nan]]), equal_nan=True
    )
    for key in ("iou", "pointing", "energy"):
        assert float(r.metrics[key].estimate) == pytest.approx(0.5)
    # Every item predicted positive for both classes: class a tp=2 fp=1, class b tp=1 fp=1 (item 2's b ignored).
    assert r.metrics["f1_per_class"].estimate.tolist() == pytest.approx([0.8, 2 / 3])
    assert float(r.metrics["f1_micro"].estimate) == pytest.approx(6 / 8)
    assert r.labels[2, 1] == -1


def test_batched_maps_match_per_pair_gradcam(tiny: nn.Module) -> None:
    """Several classes of one image from one forward pass equal one Grad-CAM call per pair."""
    from atcon.attention import gradcam

    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    pairs = torch.tensor([[0, 0], [0, 2], [1, 1], [3, 0], [3, 1], [3, 2]])
    layer = tiny.get_submodule("features.5")
    with torch.no_grad():
        # Maps need gradients through the head only: they come out under no_grad too, and the
        # caller's grad mode (off) is what it was afterwards.
        logits, got_pairs, maps = batch_gradcams(tiny, x, layer, lambda _logits: pairs)
        assert not torch.is_grad_enabled()
    assert torch.equal(got_pairs, pairs) and not logits.requires_grad and not maps.requires_grad
    assert all(p.grad is None for p in tiny.parameters())  # autograd.grad, not backward()
    torch.testing.assert_close(logits, tiny(x))
    for (i, c), m in zip(pairs.tolist(), maps):
        ref = gradcam(tiny, x[i : i + 1], "features.5", targets=c, relu=True)[0]
        torch.testing.assert_close(m, ref, rtol=1e-5, atol=1e-6)


def test_clip_frames_with_per_frame_boxes() -> None:
    """Clips: the clip's class boxes per frame; frames without a box are left out."""
    x = torch.zeros(1, 2, 8, 8)
    x[:, 0, 0:4, 0:4] = 1.0  # object in frame 0 only
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [nan, nan, nan, nan]])
    items = [(x, {"label": torch.tensor(1), "boxes": boxes})]
    r = evaluate_model(KnownCam([-1.0, 1.0], bias=0.0, dims=3), items, EvalSpec("multiclass", n_resamples=20))
    assert r.pairs.tolist() == [[0, 1]]
    assert r.localization is not None and r.localization.annotated_frames.tolist() == [1]
    assert float(r.metrics["iou"].estimate) == pytest.approx(1.0)
    assert float(r.metrics["f1_micro"].estimate) == pytest.approx(1.0)


def test_no_boxes_means_no_localization_and_faithfulness_runs() -> None:
    items = [(x, {k: v for k, v in t.items() if k in ("labels", "ignore")}) for x, t in image_items()]
    spec = EvalSpec("multilabel", n_resamples=20, faithfulness=True, faithfulness_steps=4)
    r = evaluate_model(KnownCam([1.0, 1.0]), items, spec)
    assert r.localization is None and "iou" not in r.metrics
    assert r.faithfulness is not None and r.faithfulness["deletion"].shape == (3,)
    assert math.isnan(float(r.faithfulness["deletion"][2]))  # the all-zero image's map is degenerate
    assert set(r.metrics) >= {"deletion", "insertion"}


def test_spec_from_task_name_and_dataset_classes() -> None:
    class Named(list):  # type: ignore[type-arg]
        classes = ("p", "q")

    items = Named(image_items())
    r = evaluate_model(KnownCam([1.0, 1.0]), items, "multilabel")
    assert r.classes == ("p", "q") and r.n_resamples == 1000 and r.task == "multilabel"
    with pytest.raises(ValueError, match="task must be"):
        evaluate_model(KnownCam([1.0, 1.0]), items, "binary")  # type: ignore[arg-type]


def _naive_localization(x: Tensor, box: list[float], size: tuple[int, int]) -> tuple[float, float]:
    """IoU and energy of ``KnownCam``'s map (the input itself) at ``size`` against one box, by hand."""
    import torch.nn.functional as F

    m = x[0].double()
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    r = (m - m.min()) / (m.max() - m.min())
    ys = torch.arange(size[0], dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(size[1], dtype=torch.float64)[None, :] + 0.5
    x1, y1, x2, y2 = box
    gt = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    pred = r >= 0.5
    iou = float((pred & gt).sum() / (pred | gt).sum())
    return iou, float(r[gt].sum() / r.sum())


@pytest.mark.parametrize("batch_size", [1, 3])
def test_localization_at_the_original_image_size(batch_size: int) -> None:
    g = torch.Generator().manual_seed(3)
    xa = torch.zeros(1, 16, 16)
    xa[:, 3:9, 2:11] = 1.0
    xa += 0.3 * torch.rand(1, 16, 16, generator=g)
    xb, xc = torch.rand(1, 16, 16, generator=g) ** 3, torch.rand(1, 16, 16, generator=g) ** 3
    # (x, labels, boxes in input pixels, box classes, original (H, W)); items 0 and 2 share a size.
    spec_items = [
        (xa, [1.0, 0.0], [[2.0, 4.0, 9.0, 10.0]], [0], (24, 40)),
        (xb, [1.0, 1.0], [[0.0, 0.0, 8.0, 8.0], [4.0, 6.0, 16.0, 12.0]], [0, 1], (40, 24)),
        (xc, [0.0, 1.0], [[3.0, 3.0, 12.0, 7.0]], [1], (24, 40)),
    ]
    items = [
        (x, {"labels": torch.tensor(lab), "boxes": torch.tensor(b).reshape(-1, 4),
             "box_labels": torch.tensor(bl), "orig_size": torch.tensor(size)})
        for x, lab, b, bl, size in spec_items
    ]  # fmt: skip
    results = {}
    for at in ("input", "original"):
        protocol = LocalizationProtocol(measure_at=at)
        spec = EvalSpec("multilabel", protocol=protocol, n_resamples=20, batch_size=batch_size)
        results[at] = evaluate_model(KnownCam([1.0, 1.0]), items, spec)
    pairs = [[0, 0], [1, 0], [1, 1], [2, 1]]
    expected: dict[str, list[tuple[float, float]]] = {"input": [], "original": []}
    for item, cls in pairs:
        x, _, boxes, box_classes, (h, w) = spec_items[item]
        box = boxes[box_classes.index(cls)]
        expected["input"].append(_naive_localization(x, box, (16, 16)))
        scaled = [box[0] * w / 16, box[1] * h / 16, box[2] * w / 16, box[3] * h / 16]
        expected["original"].append(_naive_localization(x, scaled, (h, w)))
    for at, r in results.items():
        assert r.pairs.tolist() == pairs
        loc = r.localization
        assert loc is not None and loc.degenerate.tolist() == [False] * 4
        torch.testing.assert_close(
            loc.iou.double(), torch.tensor([e[0] for e in expected[at]], dtype=torch.float64)
        )
        torch.testing.assert_close(
            loc.energy.double(), torch.tensor([e[1] for e in expected[at]], dtype=torch.float64)
        )
    # The choice matters, and every table says which one was made.
    assert not torch.allclose(results["input"].localization.iou, results["original"].localization.iou)  # type: ignore[union-attr]
    assert "original size" in str(results["original"].protocol)
    assert "input size" in str(results["input"].protocol)
    assert results["original"].to_dict()["protocol"]["measure_at"] == "original"
    # Items without their original size cannot be measured at it.
    bare = [(x, {k: v for k, v in t.items() if k != "orig_size"}) for x, t in items]
    spec = EvalSpec("multilabel", protocol=LocalizationProtocol(measure_at="original"), n_resamples=20)
    with pytest.raises(ValueError, match="original size"):
        evaluate_model(KnownCam([1.0, 1.0]), bare, spec)


def test_non_finite_logits_are_refused() -> None:
    """A NaN pixel (or an overflow) gives NaN logits: no F1 or mAP is computed from them."""
    items = [(x, {k: v for k, v in t.items() if k in ("labels", "ignore")}) for x, t in image_items()]
    x1 = items[1][0].clone()
    x1[0, 3, 3] = math.nan
    items[1] = (x1, items[1][1])
    spec = EvalSpec("multilabel", n_resamples=20)
    with pytest.raises(ValueError, match=r"1 of 3 items have non-finite logits \(first: item 1\)"):
        evaluate_model(KnownCam([1.0, 1.0]), items, spec)
