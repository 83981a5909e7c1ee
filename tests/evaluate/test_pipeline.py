"""The one-pass evaluation pipeline: hand-computed values, batching, CIs, comparisons and tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from atcon.evaluate import LocalizationProtocol, classification_metrics
from atcon.evaluate.pipeline import (
    EvaluationResult,
    batch_gradcams,
    compare,
    evaluate_model,
    per_class_table,
    results_csv,
    results_table,
    summarize,
)

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
    r = evaluate_model(
        KnownCam([1.0, 1.0]),
        image_items(),
        "multilabel",
        batch_size=batch_size,
        protocol=protocol,
        n_resamples=50,
        classes=["a", "b"],
        name="known",
    )
    assert r.layer == "layer" and r.n_items == 3
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
    logits, got_pairs, maps = batch_gradcams(tiny, x, layer, lambda _logits: pairs)
    assert torch.equal(got_pairs, pairs)
    torch.testing.assert_close(logits, tiny(x))
    for (i, c), m in zip(pairs.tolist(), maps):
        ref = gradcam(tiny, x[i : i + 1], "features.5", targets=c, relu=True)[0]
        torch.testing.assert_close(m, ref, rtol=1e-5, atol=1e-6)
    assert torch.is_grad_enabled()  # grad mode restored


def test_clip_frames_with_per_frame_boxes() -> None:
    """Clips: the clip's class boxes per frame; frames without a box are left out."""
    x = torch.zeros(1, 2, 8, 8)
    x[:, 0, 0:4, 0:4] = 1.0  # object in frame 0 only
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [nan, nan, nan, nan]])
    items = [(x, {"label": torch.tensor(1), "boxes": boxes})]
    r = evaluate_model(KnownCam([-1.0, 1.0], bias=0.0, dims=3), items, "multiclass", n_resamples=20)
    assert r.pairs.tolist() == [[0, 1]]
    assert r.localization is not None and r.localization.annotated_frames.tolist() == [1]
    assert float(r.metrics["iou"].estimate) == pytest.approx(1.0)
    assert float(r.metrics["f1_micro"].estimate) == pytest.approx(1.0)


def test_no_boxes_means_no_localization_and_faithfulness_runs() -> None:
    items = [(x, {k: v for k, v in t.items() if k in ("labels", "ignore")}) for x, t in image_items()]
    r = evaluate_model(
        KnownCam([1.0, 1.0]), items, "multilabel", n_resamples=20, faithfulness=True, faithfulness_steps=4
    )
    assert r.localization is None and "iou" not in r.metrics
    assert r.faithfulness is not None and r.faithfulness["deletion"].shape == (3,)
    assert math.isnan(float(r.faithfulness["deletion"][2]))  # the all-zero image's map is degenerate
    assert set(r.metrics) >= {"deletion", "insertion"}


def synthetic(
    n: int = 200, classes: int = 3, noise: float = 0.0, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, classes, generator=g) < 0.4).float()
    logits = (labels * 2 - 1) * 3 + noise * torch.randn(n, classes, generator=g)
    pairs = ((logits > 0) & (labels == 1)).nonzero()
    return logits, labels, pairs


def result(name: str, noise: float, iou_shift: float = 0.0) -> EvaluationResult:
    from atcon.evaluate import LocalizationResult

    logits, labels, pairs = synthetic(noise=noise, seed=1)
    p = pairs.shape[0]
    iou = (torch.linspace(0.2, 0.6, p) + iou_shift).clamp(0, 1)
    loc = LocalizationResult(
        iou, (iou > 0.4).float(), iou, torch.zeros(p, dtype=torch.bool), torch.ones(p, dtype=torch.long)
    )
    return summarize(
        logits,
        labels,
        pairs,
        loc,
        None,
        task="multilabel",
        classes=["x", "y", "z"],
        name=name,
        n_resamples=300,
    )


def test_summary_estimates_match_metrics_and_intervals_contain_them() -> None:
    r = result("m", noise=4.0)
    ref = classification_metrics(r.logits, r.labels, "multilabel")
    for k in ("f1_macro", "f1_micro", "map"):
        b = r.metrics[k]
        assert float(b.estimate) == pytest.approx(float(ref[k]))
        assert float(b.low) <= float(b.estimate) <= float(b.high)
        assert float(b.high) - float(b.low) > 0
    assert r.metrics["f1_per_class"].estimate.shape == (3,)


def test_compare_stars_only_real_differences(tmp_path: Path) -> None:
    good, bad = result("good", noise=0.5, iou_shift=0.3), result("bad", noise=6.0)
    same = compare(bad, bad)
    assert same.p_value("f1_macro") == 1.0 and same.star("f1_macro") == ""
    comp = compare(good, bad)
    assert comp.p_value("f1_macro") < 0.05 and comp.star("f1_macro") == "*"
    assert comp.star("iou") == "*"
    table = results_table([bad, good], reference="bad", comparisons={"good": comp})
    lines = table.splitlines()
    assert lines[0].startswith("| method | F1 (macro) (%)") and "IoU (%)" in lines[0]
    assert lines[2].startswith("| bad (ref.) |") and "*" not in lines[2]
    assert "*" in lines[3]
    cell = lines[3].split("|")[2].strip()
    v = float(good.metrics["f1_macro"].estimate) * 100
    assert cell.startswith(f"{v:.1f} [") and cell.endswith("]*")
    # Recomputing the tests in the table gives the same stars.
    assert results_table({"bad": bad, "good": good}, reference="bad") == table
    assert "| p |" in comp.to_markdown() and "| * |" in comp.to_markdown()
    assert "x" in per_class_table([bad, good]).splitlines()[2]
    rows = results_csv([bad, good], {"good": comp}).splitlines()
    assert rows[0] == "method,metric,class,value,low,high,p_value"
    assert any(r.startswith("good,f1_macro,,") and not r.endswith("nan") for r in rows)


def test_compare_needs_the_same_items() -> None:
    a = result("a", 1.0)
    logits, labels, pairs = synthetic(n=50)
    b = summarize(
        logits, labels, pairs, None, None, task="multilabel", classes=["x", "y", "z"], n_resamples=10
    )
    with pytest.raises(ValueError, match="same items"):
        compare(a, b)


def test_save_load_round_trip(tmp_path: Path) -> None:
    r = result("m", noise=2.0)
    back = EvaluationResult.load(r.save(tmp_path / "r.pt"))
    assert back.name == "m" and back.classes == r.classes
    for k, v in r.metrics.items():
        torch.testing.assert_close(back.metrics[k].low, v.low, equal_nan=True)
    d = back.to_dict()
    assert d["n_pairs"] == r.n_pairs and d["metrics"]["iou"]["value"] == pytest.approx(
        float(r.metrics["iou"].estimate)
    )
