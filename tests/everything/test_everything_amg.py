"""Automatic mask generation: the building blocks on hand-made inputs, and the generator on the
scripted disc model of ``disk_sam`` (whose masks are known discs) and on every tiny random backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from disk_sam import RADII, TEXTURE, disk_backbone
from pycocotools import mask as mask_utils

import persam
from persam.errors import InputError
from persam.everything import MaskGenerator, generate_masks
from persam.everything.grid import crop_boxes, uniform_grid
from persam.everything.postprocess import (
    coco_rle,
    greedy_nms,
    mask_boxes_xyxy,
    near_crop_edge,
    remove_small_regions,
    stability_scores,
    uncompressed_rle,
)
from persam.everything.records import decode_segmentation


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def test_uniform_grid_puts_points_at_cell_centres():
    np.testing.assert_allclose(uniform_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    np.testing.assert_allclose(uniform_grid(1), [[0.5, 0.5]])


def test_crop_boxes_tile_the_image_with_overlap():
    # 100x200, one layer, overlap 0.5 of the short side: 50 px; crops 125x75, column-major.
    boxes, layers = crop_boxes((100, 200), crop_n_layers=1, overlap_ratio=0.5)
    assert boxes == [
        [0, 0, 200, 100],
        [0, 0, 125, 75],
        [0, 25, 125, 100],
        [75, 0, 200, 75],
        [75, 25, 200, 100],
    ]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = crop_boxes((64, 64), crop_n_layers=2, overlap_ratio=0.0)
    assert layers == [0] + [1] * 4 + [2] * 16
    assert [0, 0, 16, 16] in boxes and [48, 48, 64, 64] in boxes


def test_stability_score_is_the_area_ratio_of_the_two_cuts():
    logits = torch.full((1, 4, 5), -5.0)
    logits[0, :2, :] = 2.0  # 10 pixels above +1
    logits[0, 2, :] = 0.5  # 5 more above -1
    assert stability_scores(logits, threshold=0.0, offset=1.0).tolist() == pytest.approx([10 / 15], abs=1e-7)
    assert math.isnan(stability_scores(torch.full((1, 2, 2), -3.0), threshold=0.0, offset=1.0)[0])


def test_mask_boxes_are_inclusive_and_empty_masks_get_zeros():
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:4, 2:7] = True
    assert mask_boxes_xyxy(masks).tolist() == [[2, 1, 6, 3], [0, 0, 0, 0]]


def test_crop_edge_filter_spares_image_borders():
    crop, size = [0, 0, 100, 80], (80, 200)  # the crop's left / top / bottom are image borders
    boxes = torch.tensor([[0, 0, 50, 79], [10, 10, 90, 40], [10, 10, 50, 40]])
    assert near_crop_edge(boxes, crop, size).tolist() == [False, True, False]


def test_greedy_nms_keeps_best_first_and_breaks_ties_by_index():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32
    )
    scores = torch.tensor([0.5, 0.5, 0.9, 0.1])
    # Box 2 (IoU 0.9 with 0 and 1) wins; an IoU of exactly the threshold does not suppress.
    assert greedy_nms(boxes, scores, iou_threshold=0.5).tolist() == [2, 3]
    assert greedy_nms(boxes, scores, iou_threshold=1.0).tolist() == [2, 0, 1, 3]
    assert greedy_nms(boxes[:2], scores[:2], iou_threshold=0.9).tolist() == [0]


def test_small_holes_are_filled_and_small_islands_dropped():
    m = np.zeros((40, 40), bool)
    m[5:30, 5:30] = True
    m[10:12, 10:12] = False  # hole of 4 pixels
    m[35:37, 35:37] = True  # island of 4 pixels
    out, changed = remove_small_regions(m, 10)
    expected = np.zeros_like(m)
    expected[5:30, 5:30] = True
    assert changed
    np.testing.assert_array_equal(out, expected)
    # Every island small: the largest one stays.
    tiny = np.zeros((20, 20), bool)
    tiny[1:3, 1:3] = True
    tiny[10:13, 10:13] = True
    out, changed = remove_small_regions(tiny, 100)
    assert changed and out.sum() == 9 and out[11, 11]
    unchanged, changed = remove_small_regions(expected, 10)
    assert not changed and unchanged is expected


def test_run_length_encodings():
    m = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 1 1 1 0
    assert uncompressed_rle(m) == {"size": [2, 3], "counts": [2, 3, 1]}
    assert uncompressed_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    rle = coco_rle(m)
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode({"size": [2, 3], "counts": rle["counts"].encode()}), m)
    np.testing.assert_array_equal(decode_segmentation(uncompressed_rle(m)), m)


def centre_image(h: int = 256, w: int = 256) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)  # flat: the discs are exact circles


def test_one_point_gives_the_three_discs_of_the_model():
    image = centre_image()
    records = generate_masks(
        disk_backbone(),
        image,
        points_per_side=None,
        point_grids=[np.array([[0.5, 0.5]])],
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    )
    assert len(records) == 3
    scale = 256 / 1024  # discs are defined on the 1024 frame
    # The model widens its discs by TEXTURE x the normalised brightness, uniform here.
    brightness = np.mean((128 - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375]))
    areas = sorted(r.area for r in records)
    for area, radius in zip(areas, sorted(RADII[1:]), strict=True):
        expected = math.pi * ((radius + TEXTURE * brightness) * scale) ** 2
        assert area == pytest.approx(expected, rel=0.05)
    for r in records:
        assert r.point_coords == [[128.0, 128.0]]
        assert r.crop_box == [0, 0, 256, 256]
        x, y, w, h = r.bbox
        assert abs((x + w / 2) - 128) <= 1.5 and abs((y + h / 2) - 128) <= 1.5
        assert r.area == int(r.mask.sum())
    ious = [r.predicted_iou for r in records]
    assert ious == sorted(ious, reverse=True)


def test_thresholds_filter_masks():
    image = centre_image()
    common = dict(points_per_side=None, point_grids=[np.array([[0.5, 0.5]])], box_nms_thresh=1.0)
    everything = generate_masks(
        disk_backbone(), image, pred_iou_thresh=0.0, stability_score_thresh=0.0, **common
    )
    best = max(r.predicted_iou for r in everything)
    assert (
        generate_masks(disk_backbone(), image, pred_iou_thresh=best, stability_score_thresh=0.0, **common)
        == []
    )
    # Stability with offset 0.1 (5 px of the 1024 frame): the 40 px disc is the least stable.
    stable = generate_masks(
        disk_backbone(),
        image,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.7,
        stability_score_offset=0.1,
        **common,
    )
    assert len(stable) == 2 and all(r.stability_score >= 0.7 for r in stable)


def test_output_modes_encode_the_same_masks():
    image = centre_image(200, 300)
    options = dict(
        points_per_side=3, pred_iou_thresh=0.5, stability_score_thresh=0.5, stability_score_offset=0.1
    )
    binary = generate_masks(disk_backbone(), image, output_mode="binary_mask", **options)
    for mode in ("coco_rle", "uncompressed_rle"):
        other = generate_masks(disk_backbone(), image, output_mode=mode, **options)
        assert len(other) == len(binary) > 0
        for a, b in zip(binary, other, strict=True):
            np.testing.assert_array_equal(a.segmentation, b.mask)
            assert {k: v for k, v in a.as_dict().items() if k != "segmentation"} == {
                k: v for k, v in b.as_dict().items() if k != "segmentation"
            }


def test_crops_report_their_box_and_never_cut_masks():
    image = centre_image(300, 400)
    records = generate_masks(
        disk_backbone(),
        image,
        points_per_side=4,
        crop_n_layers=1,
        pred_iou_thresh=0.3,
        stability_score_thresh=0.5,
        stability_score_offset=0.1,
    )
    boxes, _ = crop_boxes((300, 400), crop_n_layers=1, overlap_ratio=512 / 1500)
    xywh = {(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in boxes}
    assert {tuple(r.crop_box) for r in records} <= xywh
    assert any(r.crop_box != [0, 0, 400, 300] for r in records)
    for r in records:
        cx, cy, cw, ch = r.crop_box
        x, y, w, h = r.bbox
        assert cx <= x and cy <= y and x + w < cx + cw and y + h < cy + ch  # inside its crop


def test_a_custom_prompt_source_is_used():
    calls = []

    def source(crop: np.ndarray, layer: int) -> np.ndarray:
        calls.append((crop.shape, layer))
        return np.array([[10.0, 20.0]])

    records = generate_masks(
        disk_backbone(), centre_image(), source=source, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    assert calls == [((256, 256, 3), 0)]
    assert records and all(r.point_coords == [[10.0, 20.0]] for r in records)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(points_per_side=None), "exactly one"),
        (dict(point_grids=[np.zeros((2, 2))]), "exactly one"),
        (dict(output_mode="png"), "output_mode"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(crop_n_layers=1, points_per_side=None, point_grids=[np.zeros((1, 2))]), "point_grids"),
        (dict(points_per_side=None, point_grids=[np.full((1, 2), 2.0)]), r"\[0, 1\]"),
        (dict(colour="red"), "unknown"),
    ],
)
def test_bad_options_are_one_line_input_errors(options, message):
    with pytest.raises(InputError, match=message) as e:
        MaskGenerator(disk_backbone(), **options)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["tiny_random_sam", "tiny_random_mobile_sam", "tiny_random_efficient_sam"])
def test_every_backbone_generates_consistent_records(name):
    model = persam.build_model(name, checkpoint=None)
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    records = generate_masks(
        model, image, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    assert len(records) > 0
    for r in records:
        m = r.mask
        assert m.shape == (90, 120) and r.area == int(m.sum())
        if r.area:
            ys, xs = np.nonzero(m)
            assert r.bbox == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_overlay_paints_every_mask_in_its_own_colour():
    from persam.everything.overlay import mask_colours, render_masks

    image = np.zeros((40, 60, 3), np.uint8)
    big = np.zeros((40, 60), bool)
    big[5:35, 5:55] = True
    small = np.zeros_like(big)
    small[15:25, 20:30] = True  # inside the big one: painted after it, so still visible
    out = render_masks(image, [small, big], alpha=1.0)
    colours = mask_colours(2)
    assert len({tuple(c) for c in colours}) == 2
    np.testing.assert_array_equal(out[20, 25], colours[0])
    np.testing.assert_array_equal(out[10, 45], colours[1])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
