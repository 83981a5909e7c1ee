"""Box supervision: the two terms against hand values and naive per-item references, no degenerate
optimum, gradients to the parameters, and the model left as found."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

import atcon
from atcon.guidance import box_attention_loss, box_guided_forward, input_gradient_penalty
from tests.conftest import TinyCNN, randomize_bn


def test_box_attention_loss_by_hand_and_without_a_degenerate_optimum() -> None:
    inside = torch.zeros(1, 2, 2)
    inside[0, 0, 0] = 1.0  # the box covers one of four cells
    avoid = torch.zeros(1, 2, 2)
    avoid[0, 1, 1] = 0.5  # a region covers half of another
    cam = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    e = torch.tensor([math.e, 1.0, 1.0, math.e**2])
    q = e / e.sum()
    want = -math.log(q[0]) - math.log(1 - 0.5 * q[3])
    assert float(box_attention_loss(cam, inside, avoid)[0]) == pytest.approx(want, rel=1e-6)
    # A map of zeros is not a minimum: its in-box mass is the box's share of the image.
    zero = torch.zeros(1, 2, 2, requires_grad=True)
    loss = box_attention_loss(zero, inside, torch.zeros_like(avoid))
    assert float(loss.detach()) == pytest.approx(-math.log(0.25))
    (g,) = torch.autograd.grad(loss, zero)
    assert g[0, 0, 0] < 0 and (g.flatten()[1:] > 0).all()  # descent raises the box's cell
    in_box = torch.tensor([[[5.0, 0.0], [0.0, 0.0]]])
    assert float(box_attention_loss(in_box, inside, torch.zeros_like(avoid))) < float(loss)
    # No box and no region: nothing to pay.
    assert float(box_attention_loss(cam, torch.zeros_like(inside), torch.zeros_like(avoid))[0]) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        box_attention_loss(cam, inside[:, :1], avoid)


def test_input_gradient_penalty_sums_squares_over_irrelevant_pixels() -> None:
    g = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    want = sum(float(g[0, c, 0, 0]) ** 2 for c in range(3))
    assert input_gradient_penalty(g, mask).tolist() == [want, 0.0]


def _model() -> TinyCNN:
    torch.manual_seed(0)
    return randomize_bn(TinyCNN(classes=3)).eval()


def _targets(n: int = 4) -> dict[str, Any]:
    """Per item: a box of class ``i % 3`` (and of class 2 for item 1), a region to avoid on item 2."""

    def bb(rows: list[list[float]]) -> tv_tensors.BoundingBoxes:
        return tv_tensors.BoundingBoxes(
            torch.tensor(rows).reshape(-1, 4), format="XYXY", canvas_size=(12, 12)
        )

    boxes = [bb([[0, 0, 6, 6]]), bb([[6, 6, 12, 12], [0, 6, 5, 12]]), bb([]), bb([[2, 2, 9, 8]])][:n]
    box_labels = [
        torch.tensor([0]),
        torch.tensor([1, 2]),
        torch.zeros(0, dtype=torch.long),
        torch.tensor([0]),
    ][:n]
    avoid = [bb([]), bb([]), bb([[8, 0, 12, 4]]), bb([[0, 9, 3, 12]])][:n]
    return {"boxes": boxes, "box_labels": box_labels, "avoid": avoid, "image_id": [f"i{k}" for k in range(n)]}


def _cell_masks(box: list[float], grid: int = 6, size: int = 12) -> torch.Tensor:
    m = torch.zeros(size, size)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = 1
    return F.adaptive_avg_pool2d(m[None, None], grid)[0, 0]


def test_gradcam_form_equals_a_naive_per_pair_reference_single_and_multi_label() -> None:
    model = _model()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    target = _targets()
    y = torch.tensor([0, 2, 1, 0])
    guided = box_guided_forward(model, x, y, target, "multiclass", "gradcam", target_layer="features")
    # Item 0: box of its class; item 1: class 2's box; item 2: only a region; item 3: box and region.
    assert guided.pairs.tolist() == [[0, 0], [1, 2], [2, 1], [3, 0]]
    total = 0.0
    for (i, c), box, region in zip(
        guided.pairs.tolist(),
        ([0, 0, 6, 6], [0, 6, 5, 12], None, [2, 2, 9, 8]),
        (None, None, [8, 0, 12, 4], [0, 9, 3, 12]),
    ):
        cam = atcon.gradcam(model, x[i : i + 1], "features", c)
        inside = _cell_masks(box)[None] if box else torch.zeros(1, 6, 6)
        avoid = _cell_masks(region)[None] if region else torch.zeros(1, 6, 6)
        total += float(box_attention_loss(cam, inside, avoid)[0])
    assert float(guided.penalty) == pytest.approx(total / 4, rel=1e-5)
    # Multi-label: every positive class with a box of it (or every positive class with a region).
    labels = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.float)
    multi = box_guided_forward(model, x, labels, target, "multilabel", "gradcam", target_layer="features")
    assert multi.pairs.tolist() == [[0, 0], [1, 1], [1, 2], [2, 0], [2, 1]]
    # Only the items in `use` count.
    some = box_guided_forward(
        model,
        x,
        y,
        target,
        "multiclass",
        "gradcam",
        target_layer="features",
        use=torch.tensor([True, False, False, True]),
    )
    assert some.pairs.tolist() == [[0, 0], [3, 0]]


def test_input_gradient_form_equals_a_naive_per_item_reference() -> None:
    model = _model()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    target = _targets()
    guided = box_guided_forward(model, x, torch.tensor([0, 1, 2, 0]), target, "multiclass", "input_gradient")
    total = 0.0
    masks = []
    for i, (boxes, region) in enumerate(
        (
            ([[0, 0, 6, 6]], None),
            ([[6, 6, 12, 12], [0, 6, 5, 12]], None),
            ([], [8, 0, 12, 4]),
            ([[2, 2, 9, 8]], [0, 9, 3, 12]),
        )
    ):
        irrelevant = torch.zeros(12, 12)
        if boxes:
            irrelevant[:] = 1
            for x1, y1, x2, y2 in boxes:
                irrelevant[y1:y2, x1:x2] = 0
        if region:
            x1, y1, x2, y2 = region
            irrelevant[y1:y2, x1:x2] = 1
        masks.append(irrelevant)
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.log_softmax(model(xi), 1).sum(), xi)
        total += float(((irrelevant * g) ** 2).sum())
    assert float(guided.penalty) == pytest.approx(total / 4, rel=1e-5)
    assert guided.pairs[:, 0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("form", ["gradcam", "input_gradient"])
def test_the_penalty_reaches_the_parameters_and_leaves_the_model_as_found(form: str) -> None:
    model = _model().train()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    stats = [b.clone() for b in model.buffers()]
    guided = box_guided_forward(model, x, torch.tensor([0, 1, 2, 0]), _targets(), "multiclass", form)  # type: ignore[arg-type]
    grads = torch.autograd.grad(guided.penalty, [p for p in model.parameters()], allow_unused=True)
    conv = model.features[0].weight
    assert grads[0] is not None and float(grads[0].abs().sum()) > 0 and grads[0].shape == conv.shape
    assert all(p.grad is None for p in model.parameters())  # autograd.grad only
    assert model.training  # train mode kept; BatchNorm statistics move as in a supervised step
    assert any(not torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert not model.features[0]._forward_hooks and not model.features._forward_hooks


def test_batches_without_annotations_add_nothing_and_clips_are_refused() -> None:
    model = _model()
    x = torch.randn(2, 3, 12, 12)
    empty: dict[str, Any] = {"boxes": [torch.zeros(0, 4)] * 2, "box_labels": [torch.zeros(0, dtype=torch.long)] * 2,
                             "avoid": [torch.zeros(0, 4)] * 2, "image_id": ["a", "b"]}  # fmt: skip
    for form in ("gradcam", "input_gradient"):
        guided = box_guided_forward(model, x, torch.tensor([0, 1]), empty, "multiclass", form)  # type: ignore[arg-type]
        assert float(guided.penalty) == 0.0 and guided.pairs.numel() == 0
    with pytest.raises(ValueError, match="box supervision is for images"):
        box_guided_forward(model, torch.randn(1, 3, 2, 8, 8), torch.tensor([0]), empty, "multiclass")
    with pytest.raises(ValueError, match="form must be one of gradcam, input_gradient"):
        box_guided_forward(model, x, torch.tensor([0, 1]), empty, "multiclass", "mass")  # type: ignore[arg-type]
