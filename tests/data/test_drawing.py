"""Drawing helpers of the generated benchmarks: compositing, boxes, IoU."""

from __future__ import annotations

import numpy as np
import pytest

from atcon.data.drawing import INK, box_iou, ink_box, paste


def test_paste_composites_ink_and_returns_its_tight_box() -> None:
    canvas = np.full((6, 8, 3), 100.0, np.float32)
    ink = np.zeros((3, 3), np.float32)
    ink[1, 1:3] = 1.0  # opaque ink in the middle row, right two columns
    colour = np.array([200.0, 0.0, 50.0], np.float32)
    box = paste(canvas, ink, colour, top=2, left=5)
    assert box is not None and box.tolist() == [6.0, 3.0, 8.0, 4.0]
    # Full ink: alpha 1, shade 0.45 + 0.55 = 1 -> the colour itself; elsewhere untouched.
    assert canvas[3, 6].tolist() == colour.tolist() and canvas[3, 7].tolist() == colour.tolist()
    assert canvas[3, 5].tolist() == [100.0] * 3 and canvas[2, 6].tolist() == [100.0] * 3
    # Cut off at the border: the box of what is left; no ink left, or off the canvas -> None.
    cut = paste(canvas, ink, colour, top=2, left=6)
    assert cut is not None and cut.tolist() == [7.0, 3.0, 8.0, 4.0]
    assert paste(canvas, ink, colour, top=2, left=7) is None
    assert paste(canvas, ink, colour, top=10, left=0) is None


def test_faint_ink_is_not_part_of_the_box() -> None:
    ink = np.zeros((4, 5), np.float32)
    ink[0, 0] = (INK - 1) / 255  # below the ink threshold
    ink[2, 1:4] = 0.5
    assert ink_box(ink).tolist() == [1.0, 2.0, 4.0, 3.0]
    assert ink_box(np.zeros((4, 5), np.float32)).tolist() == [0.0, 0.0, 5.0, 4.0]


def test_box_iou() -> None:
    a, b = np.array([0.0, 0.0, 2.0, 2.0]), np.array([1.0, 0.0, 3.0, 2.0])
    assert box_iou(a, b) == pytest.approx(2 / 6)
    assert box_iou(a, np.array([5.0, 5.0, 6.0, 6.0])) == 0.0
    assert box_iou(a, a) == 1.0
