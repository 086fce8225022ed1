"""Properties of the evaluation measures on small random masks (hypothesis)."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.morphology import disk

from persam.evaluation.boundary import boundary_iou, boundary_iou_stats, mask_to_boundary
from persam.evaluation.metrics import (
    boundary_f,
    boundary_map,
    boundary_tolerance,
    disk_kernel,
    jaccard,
    sequence_statistics,
)

SETTINGS = settings(max_examples=60, deadline=None, database=None)


@st.composite
def mask_pairs(draw, max_side: int = 14):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    a = draw(arrays(np.bool_, (h, w)))
    b = draw(arrays(np.bool_, (h, w)))
    return a, b


masks = mask_pairs().map(lambda p: p[0])


def _f_full_frame(gt: np.ndarray, pred: np.ndarray, bound_th: float) -> float:
    """F on the whole frame with skimage's disk, without the cropping shortcut (slow path)."""
    r = boundary_tolerance(*gt.shape, bound_th)
    gb, pb = boundary_map(gt), boundary_map(pred)
    se = disk(r).astype(np.uint8)
    gd = cv2.dilate(gb.astype(np.uint8), se)
    pd = cv2.dilate(pb.astype(np.uint8), se)
    n_g, n_p = int(gb.sum()), int(pb.sum())
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    precision = float((pb * gd).sum()) / n_p
    recall = float((gb * pd).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@SETTINGS
@given(mask_pairs())
def test_jaccard_bounded_and_symmetric(pair) -> None:
    a, b = pair
    j = jaccard(a, b)
    assert 0.0 <= j <= 1.0
    assert j == jaccard(b, a)


@SETTINGS
@given(masks)
def test_jaccard_identity_and_empty(m) -> None:
    assert jaccard(m, m) == 1.0
    empty = np.zeros_like(m)
    assert jaccard(empty, empty) == 1.0  # both empty: the benchmark scores a perfect 1
    if m.any():
        assert jaccard(m, empty) == 0.0


@SETTINGS
@given(mask_pairs(), st.sampled_from([0.008, 0.1, 2.0]))
def test_boundary_f_bounded_symmetric_and_exact_on_crop(pair, bound_th) -> None:
    a, b = pair
    f = boundary_f(a, b, bound_th)
    assert 0.0 <= f <= 1.0
    assert f == boundary_f(b, a, bound_th)
    assert f == _f_full_frame(a, b, bound_th)


@SETTINGS
@given(masks)
def test_boundary_f_identity_and_empty(m) -> None:
    assert boundary_f(m, m) == 1.0
    empty = np.zeros_like(m)
    assert boundary_f(empty, empty) == 1.0
    if boundary_map(m).any():
        assert boundary_f(m, empty) == 0.0


@settings(max_examples=20, deadline=None, database=None)
@given(st.integers(0, 30))
def test_disk_kernel_equals_skimage_disk(r) -> None:
    assert np.array_equal(disk_kernel(float(r)), disk(float(r)).astype(np.uint8))


@SETTINGS
@given(mask_pairs(max_side=24))
def test_boundary_iou_bounded_and_symmetric(pair) -> None:
    a, b = pair
    v = boundary_iou(a, b)
    assert 0.0 <= v <= 1.0
    assert v == boundary_iou(b, a)
    s = boundary_iou_stats(a, b)
    assert s.boundary_intersection <= min(s.gt_boundary_area, s.pred_boundary_area)
    assert s.boundary_union == s.gt_boundary_area + s.pred_boundary_area - s.boundary_intersection


@SETTINGS
@given(masks)
def test_boundary_region_inside_mask_and_identity(m) -> None:
    b = mask_to_boundary(m)
    assert not (b.astype(bool) & ~m).any()
    # Every mask is its own perfect match, except that an empty boundary scores 0 (pycocotools).
    assert boundary_iou(m, m) == (1.0 if b.any() else 0.0)
    if m.any():
        assert b.any()  # erosion by at least one pixel with a background frame never keeps everything


@SETTINGS
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1)))
def test_statistics_ranges(values) -> None:
    mean, recall, decay = sequence_statistics(values)
    assert mean == np.mean(values) or abs(mean - np.mean(values)) < 1e-12
    assert recall == np.mean(values > 0.5)
    assert -1.0 <= decay <= 1.0
    if np.all(values == values[0]):
        assert abs(decay) < 1e-12  # equal bin means, up to summation rounding
