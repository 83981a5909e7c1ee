from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision import tv_tensors

from atcon.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomCropFraction,
    clip_eval_transform,
    clip_simclr_transform,
    clip_train_transform,
    denormalize,
    image_eval_transform,
    image_train_transform,
)


def target_for(boxes: list[list[float]], canvas: tuple[int, int]) -> dict[str, object]:
    n = len(boxes)
    return {
        "labels": torch.tensor([1.0, 0.0]),
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes), format="XYXY", canvas_size=canvas),
        "box_labels": torch.zeros(n, dtype=torch.int64),
        "difficult": torch.zeros(n, dtype=torch.bool),
        "image_id": "x",
    }


def test_eval_transform_box_alignment_on_rectangular_image() -> None:
    image = tv_tensors.Image(torch.zeros(3, 100, 200, dtype=torch.uint8))
    out, target = image_eval_transform(256)(image, target_for([[20.0, 10.0, 120.0, 60.0]], (100, 200)))
    assert out.shape == (3, 256, 256)
    # x scales by 256/200 = 1.28, y by 256/100 = 2.56.
    expected = torch.tensor([[25.6, 25.6, 153.6, 153.6]])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), expected)
    assert target["boxes"].canvas_size == (256, 256)
    assert torch.equal(target["labels"], torch.tensor([1.0, 0.0]))


def test_eval_transform_normalises_with_imagenet_statistics() -> None:
    image = tv_tensors.Image(torch.full((3, 10, 20), 51, dtype=torch.uint8))
    out = image_eval_transform(299)(image)
    assert out.shape == (3, 299, 299) and out.dtype == torch.float32
    for c in range(3):
        expected = (51 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[c], torch.full((299, 299), expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(denormalize(out), torch.full((3, 299, 299), 51 / 255), atol=1e-5, rtol=0)


def test_train_transform_boxes_follow_the_object() -> None:
    # A bright rectangle on black: after rotation, flip and resize, the transformed box must enclose the
    # bright pixels tightly.
    torch.manual_seed(0)
    image = torch.zeros(3, 60, 90, dtype=torch.uint8)
    image[:, 10:30, 50:80] = 255
    for _ in range(10):
        out, target = image_train_transform(64)(
            tv_tensors.Image(image), target_for([[50.0, 10, 80, 30]], (60, 90))
        )
        assert out.shape == (3, 64, 64)
        bright = denormalize(out).mean(0) > 0.5
        ys, xs = torch.nonzero(bright, as_tuple=True)
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        (box,) = target["boxes"].as_subclass(torch.Tensor)
        assert torch.allclose(found, box, atol=2.5), (found, box)


def test_train_flip_is_horizontal_or_vertical_half_of_the_time() -> None:
    torch.manual_seed(1)
    image = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4).expand(3, 4, 4).contiguous() * 10
    seen: Counter[str] = Counter()
    for _ in range(400):
        out = image_train_transform(4, rotation=0)(tv_tensors.Image(image))
        restored = (denormalize(out) * 255).round().to(torch.uint8)
        if torch.equal(restored, image):
            seen["none"] += 1
        elif torch.equal(restored, image.flip(-1)):
            seen["horizontal"] += 1
        elif torch.equal(restored, image.flip(-2)):
            seen["vertical"] += 1
    assert sum(seen.values()) == 400
    assert 160 <= seen["none"] <= 240
    assert 70 <= seen["horizontal"] <= 130 and 70 <= seen["vertical"] <= 130


def test_clip_train_transform_same_parameters_for_every_frame() -> None:
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    video = tv_tensors.Video(frame.expand(8, 3, 20, 20).contiguous())
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[2.0, 3.0, 12.0, 15.0]]).expand(8, 4), format="XYXY", canvas_size=(20, 20)
    )
    plain = clip_eval_transform()(video)
    changed = 0
    for _ in range(5):
        out, out_boxes = clip_train_transform()(video, boxes)
        assert out.shape == (8, 3, 20, 20) and out.dtype == torch.float32
        # Identical frames in, identical frames out: jitter, crop and flip were drawn once per clip.
        assert torch.equal(out, out[:1].expand_as(out))
        assert torch.equal(out_boxes, out_boxes[:1].expand_as(out_boxes))
        changed += not torch.allclose(out, plain)
    assert changed == 5


def test_clip_simclr_views_are_consistent_across_frames_and_milder_than_the_supervised_jitter() -> None:
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    video = tv_tensors.Video(frame.expand(4, 3, 24, 24).contiguous())
    views = [clip_simclr_transform(16)(video) for _ in range(20)]
    assert all(v.shape == (4, 3, 16, 16) and torch.equal(v, v[:1].expand_as(v)) for v in views)
    assert not torch.equal(views[0], views[1])
    # Hue moves at most 0.05 of the colour circle: the mean colour of a view stays near the clip's.
    plain = clip_eval_transform()(video).mean((0, 2, 3))
    shift = torch.stack([(v.mean((0, 2, 3)) - plain).abs().max() for v in views]).mean()
    strong = torch.stack(
        [(clip_train_transform()(video).mean((0, 2, 3)) - plain).abs().max() for _ in range(20)]
    )
    assert shift < strong.mean()


def test_random_crop_fraction_one_window_for_all_frames() -> None:
    torch.manual_seed(3)
    video = tv_tensors.Video(torch.randint(0, 256, (4, 3, 30, 40), dtype=torch.uint8))
    out = RandomCropFraction(0.9, resize_back=False)(video)
    assert out.shape == (4, 3, 27, 36)
    matches = [
        (top, left)
        for top in range(4)
        for left in range(5)
        if torch.equal(out, video[..., top : top + 27, left : left + 36])
    ]
    assert len(matches) == 1
    assert RandomCropFraction(0.9)(video).shape == (4, 3, 30, 40)
    with pytest.raises(ValueError, match="fraction"):
        RandomCropFraction(1.5)
