"""Output writers: mask PNGs, PerSeg format, overlays, COCO RLE JSON (persam.outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import fixture_dir
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from persam import drawing, outputs
from persam.io import InputError, load_mask
from persam.results import Masks, decode_rle, encode_rle, mask_bbox_xywh


def _blob(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    m = (yy - 20) ** 2 / 150 + (xx - 30) ** 2 / 300 < 1
    m[40:44, 5:9] = True  # a second component
    return m


def test_save_mask_is_lossless_8bit_0_255(tmp_path: Path) -> None:
    m = _blob()
    outputs.save_mask(tmp_path / "m.png", m)
    im = Image.open(tmp_path / "m.png")
    assert im.format == "PNG" and im.mode == "L" and im.size == (64, 48)
    a = np.asarray(im)
    assert set(np.unique(a).tolist()) == {0, 255}
    np.testing.assert_array_equal(a == 255, m)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), m)


def test_perseg_mask_matches_reference_writer_format(tmp_path: Path) -> None:
    m = _blob()
    outputs.save_perseg_mask(tmp_path / "p.png", m)
    bgr = cv2.imread(str(tmp_path / "p.png"))  # what the PerSeg evaluator reads
    assert bgr.shape == (48, 64, 3)
    np.testing.assert_array_equal(bgr[m], np.broadcast_to([0, 0, 128], (int(m.sum()), 3)))
    assert not bgr[~m].any()
    np.testing.assert_array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) > 0, m)


def test_perseg_mask_equals_golden_prediction_files(tmp_path: Path) -> None:
    root = fixture_dir("perseg")
    gt = root / "data" / "Annotations" / "cat" / "01.png"
    outputs.save_perseg_mask(tmp_path / "01.png", load_mask(gt))
    golden = cv2.imread(str(root / "outputs" / "perfect" / "cat" / "01.png"), cv2.IMREAD_UNCHANGED)
    ours = cv2.imread(str(tmp_path / "01.png"), cv2.IMREAD_UNCHANGED)
    assert ours.shape == golden.shape and ours.dtype == golden.dtype
    np.testing.assert_array_equal(ours, golden)


def test_rle_roundtrip_and_bbox() -> None:
    m = _blob()
    rle = encode_rle(m)
    json.dumps(rle)  # JSON-ready
    assert rle["size"] == [48, 64]
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), m)
    np.testing.assert_array_equal(decode_rle(rle), m)
    expected = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))).tolist()
    assert mask_bbox_xywh(m) == pytest.approx(expected)
    assert mask_bbox_xywh(np.zeros((4, 4), bool)) == [0, 0, 0, 0]


def test_coco_results_load_with_pycocotools(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    m1, m2 = _blob(), np.zeros((48, 64), bool)
    m2[3:9, 10:30] = True
    res = outputs.CocoResults(path)
    res.add("a.jpg", Masks(masks=np.stack([m1]), scores=[0.9]), "dog")
    res.add("b.jpg", Masks(masks=np.stack([m2, m1]), scores=[0.5, 0.25]), "dog")
    res.add("c.jpg", Masks.empty((48, 64)), "dog")  # nothing found: image listed, no annotation
    res.save()
    coco = COCO(str(path))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["a.jpg", "b.jpg", "c.jpg"]
    ids = {im["file_name"]: im["id"] for im in coco.dataset["images"]}
    anns_b = coco.loadAnns(coco.getAnnIds(imgIds=[ids["b.jpg"]]))
    assert [a["score"] for a in anns_b] == [0.5, 0.25]
    np.testing.assert_array_equal(coco.annToMask(anns_b[0]).astype(bool), m2)
    assert anns_b[0]["bbox"] == [10, 3, 20, 6] and anns_b[0]["area"] == 120
    assert coco.getAnnIds(imgIds=[ids["c.jpg"]]) == []
    assert coco.dataset["categories"] == [{"id": 1, "name": "dog"}]
    # Results format: pycocotools can also load the annotations list as detections.
    dets = coco.loadRes(coco.dataset["annotations"])
    np.testing.assert_array_equal(dets.annToMask(dets.loadAnns(1)[0]).astype(bool), m1)


def test_coco_results_are_extended_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    res = outputs.CocoResults(path)
    res.add("a.jpg", Masks(masks=np.stack([_blob()]), scores=[0.9]), "dog")
    res.add("b.jpg", Masks(masks=np.stack([_blob()]), scores=[0.8]), "dog")
    res.save()
    again = outputs.CocoResults(path)
    assert "a.jpg" in again and "b.jpg" in again and "z.jpg" not in again
    again.add("b.jpg", Masks.empty((48, 64)), "dog")
    again.add("c.jpg", Masks(masks=np.stack([_blob()]), scores=[0.7]), "dog")
    again.save()
    data = json.loads(path.read_text())
    ids = {im["file_name"]: im["id"] for im in data["images"]}
    assert ids == {"a.jpg": 1, "b.jpg": 2, "c.jpg": 3}
    assert [a["file_name"] for a in data["annotations"]] == ["a.jpg", "c.jpg"]
    assert len({a["id"] for a in data["annotations"]}) == 2


def test_coco_results_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "coco.json").write_text("{not json")
    with pytest.raises(InputError, match="coco.json"):
        outputs.CocoResults(tmp_path / "coco.json")


def test_render_overlay_tints_mask_and_draws_prompts() -> None:
    img = np.full((100, 120, 3), 100, np.uint8)
    m = np.zeros((100, 120), bool)
    m[20:60, 30:90] = True
    ov = drawing.render_overlay(
        img, m, points=[[60, 40], [10, 90]], point_labels=[1, 0], box=[30, 20, 89, 59]
    )
    assert ov.shape == img.shape and ov.dtype == np.uint8
    # Far from mask, points and box: untouched.
    np.testing.assert_array_equal(ov[90, 110], [100, 100, 100])
    # Inside the mask, away from outline and points: blended towards the tint.
    tint = np.asarray(drawing.OVERLAY_TINT)
    np.testing.assert_allclose(ov[30, 45], (100 + tint) / 2, atol=1)
    np.testing.assert_array_equal(ov[40, 60], drawing.FOREGROUND_POINT)
    np.testing.assert_array_equal(ov[90, 10], drawing.BACKGROUND_POINT)
    with pytest.raises(ValueError):
        drawing.render_overlay(img, m[:50])


def test_save_overlay_formats(tmp_path: Path) -> None:
    img = np.full((30, 40, 3), 50, np.uint8)
    ov = drawing.render_overlay(img, np.ones((30, 40), bool))
    outputs.save_overlay(tmp_path / "o.jpg", ov)
    outputs.save_overlay(tmp_path / "o.png", ov)
    assert Image.open(tmp_path / "o.jpg").format == "JPEG"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), ov)
