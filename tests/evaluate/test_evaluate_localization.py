import math

import pytest
import torch
import torch.nn.functional as F

from atcon.evaluate import (
    LocalizationProtocol,
    LocalizationResult,
    box_coverage,
    boxes_for_pairs,
    localization_metrics,
    minmax_rescale,
    true_positive_pairs,
    upsample_maps,
    values_by_item,
)

NAN = math.nan
H, W = 6, 10  # rectangular on purpose
# Box A covers columns 1-4, rows 1-3 (12 px); box B columns 3-7, rows 2-4 (15 px); overlap 4 px.
BOX_A = [1.0, 1.0, 5.0, 4.0]
BOX_B = [3.0, 2.0, 8.0, 5.0]


def _block_map(rows, cols, value=1.0):
    m = torch.zeros(H, W)
    m[rows[0] : rows[1], cols[0] : cols[1]] = value
    return m


def test_box_coverage_pixel_centres():
    cov = box_coverage(torch.tensor([[BOX_A, BOX_B]]), (H, W))[0]
    assert cov.shape == (H, W)
    assert int(cov.sum()) == 12 + 15 - 4
    assert (
        cov[1, 1]
        and cov[3, 4]
        and not cov[0, 1]
        and not cov[1, 0]
        and not cov[4, 2]
        and cov[4, 7]
        and not cov[5, 7]
    )
    # Non-integer edges: a pixel counts when its centre is inside.
    cov = box_coverage(torch.tensor([[[0.4, 0.0, 1.6, 1.0], [NAN] * 4]]), (H, W))[0]
    assert cov[0].tolist() == [True, True] + [False] * 8 and int(cov.sum()) == 2
    cov = box_coverage(torch.tensor([[[0.6, 0.0, 1.4, 1.0]]]), (H, W))[0]
    assert int(cov.sum()) == 0
    full = box_coverage(torch.tensor([[[0.0, 0.0, float(W), float(H)]]]), (H, W))
    assert bool(full.all())


def test_iou_with_union_of_two_overlapping_boxes():
    # Map: rows 0-2, columns 0-4 (15 px). It meets A in rows 1-2 x cols 1-4 (8 px) and B in row 2 x
    # cols 3-4 (2 px, inside A too): intersection 8, union 15 + 23 - 8 = 30.
    maps = _block_map((0, 3), (0, 5))[None]
    boxes = torch.tensor([[BOX_A, BOX_B, [NAN] * 4]])
    r = localization_metrics(maps, boxes, (H, W))
    assert float(r.iou[0]) == pytest.approx(8 / 30)
    assert not bool(r.degenerate[0]) and int(r.annotated_frames[0]) == 1
    # Only the union counts, not each box separately.
    single = localization_metrics(maps, boxes[:, :1], (H, W))
    assert float(single.iou[0]) == pytest.approx(8 / (15 + 12 - 8))


def test_threshold_behaviour():
    m = torch.zeros(H, W)
    m[1:4, 1:5] = 1.0  # exactly box A
    m[0, :] = 0.5
    boxes = torch.tensor([[BOX_A]])
    # >= 0.5 keeps row 0 (10 px): IoU 12 / 22; a higher threshold drops it: IoU 1.
    assert float(localization_metrics(m[None], boxes, (H, W)).iou[0]) == pytest.approx(12 / 22)
    r = localization_metrics(m[None], boxes, (H, W), LocalizationProtocol(threshold=0.6))
    assert float(r.iou[0]) == pytest.approx(1.0)
    # Min-max rescaling makes the threshold relative to each map's range: a shift and scale
    # of the map change nothing.
    shifted = localization_metrics(3 * m[None] + 2, boxes, (H, W))
    assert float(shifted.iou[0]) == pytest.approx(12 / 22)


def test_degenerate_maps_are_counted_not_scored():
    maps = torch.stack([_block_map((0, 3), (0, 5)), torch.zeros(H, W), torch.full((H, W), 3.0)])
    partial = _block_map((0, 3), (0, 5))
    partial[5, 9] = NAN
    maps = torch.cat([maps, torch.full((1, H, W), NAN), partial[None]])
    boxes = torch.tensor([[BOX_A, BOX_B]]).expand(5, 2, 4)
    r = localization_metrics(maps, boxes, (H, W))
    assert r.degenerate.tolist() == [False, True, True, True, True]
    for v in (r.iou, r.pointing, r.energy):
        assert not math.isnan(float(v[0])) and bool(v[1:].isnan().all())
    s = r.summary()
    assert s["n_pairs"] == 5 and s["n_degenerate"] == 4
    assert s["iou"] == pytest.approx(8 / 30)


def test_minmax_rescale_eps():
    maps = torch.stack([torch.tensor([0.0, 1e-9]), torch.tensor([5.0, 5.0 + 1e-9]), torch.zeros(2)])
    out, deg = minmax_rescale(maps)
    assert deg.tolist() == [False, True, True]  # tiny maps are fine, a tiny range on a big offset is not
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0]))
    assert bool(out[1:].isnan().all())


def test_pointing_game_tolerance():
    h, w = 40, 60
    boxes = torch.tensor([[[10.0, 10.0, 20.0, 20.0]]]).expand(4, 1, 4)
    maps = torch.zeros(4, h, w)
    maps[0, 15, 12] = 1  # inside
    maps[1, 15, 30] = 1  # centre (30.5, 15.5): 10.5 px right of the box
    maps[2, 30, 30] = 1  # 10.5 px right and below: 14.85 px
    maps[3, 31, 31] = 1  # 16.26 px (within 15 px on each axis, not in Euclidean distance)
    hits = localization_metrics(maps, boxes, (h, w)).pointing
    assert hits.tolist() == [1.0, 1.0, 1.0, 0.0]
    hits = localization_metrics(maps, boxes, (h, w), LocalizationProtocol(pointing_tolerance=0)).pointing
    assert hits.tolist() == [1.0, 0.0, 0.0, 0.0]
    hits = localization_metrics(maps, boxes, (h, w), LocalizationProtocol(pointing_tolerance=10)).pointing
    assert hits.tolist() == [1.0, 0.0, 0.0, 0.0]
    hits = localization_metrics(maps, boxes, (h, w), LocalizationProtocol(pointing_tolerance=11)).pointing
    assert hits.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_energy_share():
    m = torch.zeros(H, W)
    m[1:3, 1:3] = 1.0  # 4 px inside box A
    m[4:6, 8:10] = 0.5  # 4 px outside both boxes
    r = localization_metrics(m[None], torch.tensor([[BOX_A, BOX_B]]), (H, W))
    assert float(r.energy[0]) == pytest.approx(4 / 6)
    assert float(r.pointing[0]) == 1.0


def test_upsampling_from_layer_resolution():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(3, 1, 3, 5, generator=g)  # (P, 1, h, w) is accepted too
    boxes = torch.tensor([[BOX_A, BOX_B]]).expand(3, 2, 4)
    r = localization_metrics(small, boxes, (H, W), LocalizationProtocol(chunk_size=2))
    big = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    ref = localization_metrics(big, boxes, (H, W))
    torch.testing.assert_close(r.iou, ref.iou)
    torch.testing.assert_close(r.energy, ref.energy)
    assert upsample_maps(small, (H, W)).shape == (3, H, W)
    with pytest.raises(ValueError):
        upsample_maps(small, (2, 3, H, W))  # type: ignore[arg-type]


def test_clip_frames_averaged_over_annotated_frames():
    t = 3
    maps = torch.zeros(1, t, H, W)
    maps[0, 0] = _block_map((0, 3), (0, 5))
    maps[0, 1] = _block_map((0, 3), (0, 5))  # frame without box: ignored
    boxes = torch.full((1, t, 2, 4), NAN)
    boxes[0, 0] = torch.tensor([BOX_A, BOX_B])
    boxes[0, 2, 0] = torch.tensor(BOX_B)  # frame 2: box, but no map mass there
    r = localization_metrics(maps, boxes, (t, H, W))
    # Frame 0: IoU 8/30; frame 2: empty mask, IoU 0. Pointing/energy undefined on frame 2.
    assert float(r.iou[0]) == pytest.approx((8 / 30 + 0) / 2)
    assert float(r.pointing[0]) == 1.0
    image = localization_metrics(maps[:, 0], boxes[:, 0], (H, W))
    assert float(r.energy[0]) == pytest.approx(float(image.energy[0]))
    assert int(r.annotated_frames[0]) == 2 and not bool(r.degenerate[0])


def test_clip_trilinear_upsampling_includes_time():
    g = torch.Generator().manual_seed(1)
    small = torch.rand(2, 2, 3, 5, generator=g)
    boxes = torch.tensor(BOX_B).expand(2, 4, 1, 4).clone()
    r = localization_metrics(small, boxes, (4, H, W))
    big = F.interpolate(small[:, None], size=(4, H, W), mode="trilinear", align_corners=False)[:, 0]
    ref = localization_metrics(big, boxes, (4, H, W))
    torch.testing.assert_close(r.iou, ref.iou)
    assert int(r.annotated_frames[0]) == 4
    with pytest.raises(ValueError):
        localization_metrics(small, boxes[:, :3], (4, H, W))


def test_true_positive_pairs():
    logits = torch.tensor([[2.0, -1.0, 3.0], [0.5, 1.0, -2.0]])
    labels = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert true_positive_pairs(logits, labels).tolist() == [[0, 0], [1, 0], [1, 1]]
    probs = torch.tensor([[0.6, 0.5], [0.2, 0.9]])
    assert true_positive_pairs(probs, torch.ones(2, 2), from_logits=False).tolist() == [[0, 0], [1, 1]]
    mc = true_positive_pairs(logits, torch.tensor([2, 0]), "multiclass")
    assert mc.tolist() == [[0, 2]]


def test_boxes_for_pairs_and_values_by_item():
    boxes = [torch.tensor([BOX_A, BOX_B, [0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]])]
    labels = [torch.tensor([4, 4, 1]), torch.tensor([1])]
    pairs = torch.tensor([[0, 4], [0, 1], [1, 1]])
    b = boxes_for_pairs(boxes, labels, pairs)
    assert b.shape == (3, 3, 4)
    assert b[0, :2].tolist() == [BOX_A, BOX_B] and bool(b[0, 2].isnan().all())
    assert b[1, 2].tolist() == [0.0, 0.0, 2.0, 2.0] and bool(b[1, :2].isnan().all())
    assert b[2, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    # Clip items: per-frame boxes (M_i, T, 4) become (P, T, K, 4).
    clip_boxes = [torch.rand(1, 5, 4), torch.rand(2, 5, 4)]
    cb = boxes_for_pairs(clip_boxes, [torch.tensor([0]), torch.tensor([0, 2])], torch.tensor([[1, 2]]))
    assert cb.shape == (1, 5, 2, 4)
    torch.testing.assert_close(cb[0, :, 1], clip_boxes[1][1])
    table = values_by_item(torch.tensor([0.1, 0.2, 0.3]), pairs[:, 0], n_items=3)
    assert table.shape == (3, 2)
    torch.testing.assert_close(table, torch.tensor([[0.1, 0.2], [0.3, NAN], [NAN, NAN]]), equal_nan=True)


def test_a_batch_without_any_box_gives_unannotated_pairs():
    # Class folders: every item has zero boxes; each pair gets one nan row and no localization value.
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    labels = [torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)]
    pairs = torch.tensor([[0, 2], [1, 0]])
    b = boxes_for_pairs(empty, labels, pairs)
    assert b.shape == (2, 1, 4) and bool(b.isnan().all())
    r = localization_metrics(torch.rand(2, 4, 4), b, (8, 8))
    assert r.annotated_frames.tolist() == [0, 0] and bool(r.iou.isnan().all())


def test_protocol_prints_itself_and_validates():
    p = LocalizationProtocol(threshold=0.4, pointing_tolerance=10)
    text = str(p)
    assert "0.4" in text and "10 px" in text and "union" in text
    assert p.as_dict()["threshold"] == 0.4
    with pytest.raises(ValueError):
        LocalizationProtocol(threshold=1.5)
    with pytest.raises(ValueError):
        LocalizationProtocol(pointing_tolerance=-1)


def test_result_cat_and_empty():
    maps = torch.stack([_block_map((0, 3), (0, 5))] * 2)
    boxes = torch.tensor([[BOX_A]]).expand(2, 1, 4)
    r = localization_metrics(maps, boxes, (H, W))
    both = LocalizationResult.cat([r, r])
    assert both.n_pairs == 4 and both.iou.shape == (4,)
    empty = localization_metrics(torch.zeros(0, 3, 5), torch.zeros(0, 1, 4), (H, W))
    assert empty.n_pairs == 0 and math.isnan(empty.summary()["iou"])


def test_energy_in_avoid_regions_on_the_pairs_where_energy_is_defined():
    # Map mass: 4 px of 1.0 in the cue region, 12 px of 0.5 elsewhere; rescaled, the cue's pixels
    # are 1 and the others 0.5, so 4 / (4 + 6) of the mass lies in the region.
    m = torch.zeros(H, W)
    m[0:2, 0:2] = 1.0
    m[3:6, 6:10] = 0.5
    maps = torch.stack([m, m, torch.zeros(H, W), m])
    boxes = torch.tensor([[BOX_B], [BOX_B], [BOX_B], [[NAN] * 4]])
    avoid = torch.tensor(
        [[[0.0, 0.0, 2.0, 2.0], [NAN] * 4], [[NAN] * 4, [NAN] * 4], [[0.0, 0.0, 2.0, 2.0], [NAN] * 4],
         [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]]]
    )  # fmt: skip
    r = localization_metrics(maps, boxes, (H, W), avoid=avoid)
    assert float(r.energy_avoid[0]) == pytest.approx(0.4)
    # No region, a degenerate map, an unannotated pair (energy undefined): no value.
    assert r.energy_avoid[1:].isnan().all()
    # Overlapping regions count each pixel once; other chunk sizes give the same values.
    two = localization_metrics(
        maps[:1].repeat(3, 1, 1), boxes[:1].repeat(3, 1, 1), (H, W), avoid=avoid[[0, 3, 0]]
    )
    assert two.energy_avoid.tolist() == pytest.approx([0.4, 0.4, 0.4])
    chunked = localization_metrics(maps, boxes, (H, W), LocalizationProtocol(chunk_size=1), avoid=avoid)
    assert torch.equal(chunked.energy_avoid.isnan(), r.energy_avoid.isnan())
    # Without regions the field is all nan, and bad shapes are refused.
    assert localization_metrics(maps, boxes, (H, W)).energy_avoid.isnan().all()
    with pytest.raises(ValueError, match=r"avoid must be \(P, M, 4\)"):
        localization_metrics(maps, boxes, (H, W), avoid=avoid[:2])
