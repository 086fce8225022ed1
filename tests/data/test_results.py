"""The shared result type :class:`persam.results.Masks` and its views of image and frame results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from persam.errors import InputError
from persam.personalize import SegmentationResult
from persam.results import Masks, Prompts
from persam.tracking import FrameResult

H, W = 30, 40


def _label_map() -> np.ndarray:
    lm = np.zeros((H, W), np.uint8)
    lm[2:10, 3:12] = 4
    lm[15:25, 20:35] = 9
    lm[0, 39] = 1
    return lm


def test_label_map_round_trip_and_boxes():
    lm = _label_map()
    masks = Masks.from_label_map(lm)
    assert len(masks) == 3 and masks.object_ids.tolist() == [1, 4, 9]
    assert masks.masks.dtype == bool and masks.masks.shape == (3, H, W)
    assert masks.boxes.tolist() == [[39, 0, 39, 0], [3, 2, 11, 9], [20, 15, 34, 24]]
    assert masks.areas.tolist() == [1, 72, 150] and masks.found.all()
    assert np.isnan(masks.scores).all()
    assert np.array_equal(masks.label_map(), lm)
    assert np.array_equal(masks.union(), lm > 0)
    # Asked-for ids absent from the map give empty, not-found masks.
    some = Masks.from_label_map(lm, [9, 5], scores=[0.5, None])
    assert some.found.tolist() == [True, False] and some.boxes[1].tolist() == [-1, -1, -1, -1]
    assert some.scores[0] == 0.5 and np.isnan(some.scores[1])
    assert np.array_equal(some.label_map(), np.where(lm == 9, 9, 0))


def test_label_map_overlaps_go_to_the_earlier_mask():
    a = np.zeros((H, W), bool)
    a[:10] = True
    b = np.zeros((H, W), bool)
    b[5:15] = True
    lm = Masks(masks=np.stack([a, b]), object_ids=[3, 7]).label_map()
    assert (lm[:10] == 3).all() and (lm[10:15] == 7).all() and (lm[15:] == 0).all()
    with pytest.raises(InputError, match="1..255"):
        Masks(masks=np.stack([a]), object_ids=[300]).label_map()


def test_coco_rle_round_trip_is_identical():
    rng = np.random.default_rng(0)
    raw = rng.random((4, H, W)) > 0.6
    masks = Masks(masks=raw, scores=[0.9, 0.1, 0.5, 0.7])
    rles = masks.to_coco_rle()
    json.dumps(rles)  # JSON-ready
    for rle, m in zip(rles, raw, strict=True):
        official = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(official.astype(bool), m)
    back = Masks.from_coco_rle(rles, scores=masks.scores)
    assert np.array_equal(back.masks, raw) and np.array_equal(back.scores, masks.scores)
    assert np.array_equal(back.boxes, masks.boxes)
    assert len(Masks.from_coco_rle([], size=(H, W))) == 0
    with pytest.raises(InputError, match="size"):
        Masks.from_coco_rle([])


def test_indexing_and_validation():
    masks = Masks.from_label_map(_label_map(), scores=[0.1, 0.2, 0.3])
    one = masks[1]
    assert len(one) == 1 and one.object_ids.tolist() == [4] and one.scores.tolist() == [0.2]
    assert masks[1:].object_ids.tolist() == [4, 9]
    assert masks[np.array([True, False, True])].object_ids.tolist() == [1, 9]
    assert masks[[2, 0]].object_ids.tolist() == [9, 1]
    empty = Masks.empty((H, W))
    assert len(empty) == 0 and empty.image_size == (H, W) and not empty.union().any()
    assert empty.label_map().shape == (H, W) and empty.boxes.shape == (0, 4)
    with pytest.raises(InputError, match=r"\[N, H, W\]"):
        Masks(masks=np.zeros((H, W), bool))
    with pytest.raises(InputError, match="scores: expected 3"):
        Masks(masks=np.zeros((3, H, W), bool), scores=[1.0])


def test_segmentation_result_masks():
    m1 = np.zeros((H, W), bool)
    m1[:5, :5] = True
    m2 = np.zeros((H, W), bool)
    m2[20:, 20:] = True
    pts, labels = np.array([[2, 2]]), np.array([1])
    first = SegmentationResult(m1, 0.9, True, pts, labels, np.array([0, 0, 4, 4]), "refine2")
    single = first.masks
    assert len(single) == 1 and single.found.tolist() == [True] and single.scores.tolist() == [0.9]
    assert isinstance(single.prompts[0], Prompts) and single.prompts[0].box.tolist() == [0, 0, 4, 4]
    second = SegmentationResult(m2, 0.7, True, np.array([[25, 25]]), labels, None, "refine2")
    multi = SegmentationResult(m1 | m2, 0.9, True, pts, labels, None, "refine2", instances=[first, second])
    assert len(multi.masks) == 2 and np.array_equal(multi.masks.union(), multi.mask)
    assert np.array_equal(multi.label_map(), m1 * 1 + m2 * 2)
    missed = SegmentationResult(m1, 0.2, False, pts, labels, None, "refine2")
    assert missed.masks.found.tolist() == [False] and not missed.label_map().any()


def test_frame_result_masks():
    lm = _label_map()
    r = FrameResult.from_label_map(5, lm, [1, 4, 9, 12], {1: 0.5, 4: 0.25, 9: None, 12: None})
    assert r.present == {1: True, 4: True, 9: True, 12: False}
    assert r.boxes[4] == (3, 2, 11, 9) and r.boxes[12] is None
    masks = r.masks
    assert masks.object_ids.tolist() == [1, 4, 9, 12] and masks.found.tolist() == [True, True, True, False]
    assert np.array_equal(masks.label_map(), lm)
