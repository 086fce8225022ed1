"""Side by side with the official ``SamAutomaticMaskGenerator`` (pip ``segment-anything``; skipped
when it is not installed): the same records, in the same order, with the same scores, boxes, points
and RLE.

The official package needs torchvision, which cannot always be installed beside torch: the test
puts a minimal stand-in into ``sys.modules`` (``official_amg.install_torchvision_stand_in``: a
plain greedy ``batched_nms`` with a stable score sort, ``box_area``, and PIL's bilinear resize).

Two models run inside both generators:

* the scripted disc model of ``disk_sam`` (masks are discs around the prompt point, so crops, box
  NMS, crop-edge filtering and small-region removal all have real work to do), and
* the tiny random SAM of the golden fixtures. With the same modules placed inside the official
  ``Sam`` the model outputs are identical and the records must be too; with the official modules
  throughout, the decoders differ in the last float bits (~4e-7), so masks may differ by a few
  pixels whose logits are that close to zero.
"""

from __future__ import annotations

import importlib
import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch
from disk_sam import disk_backbone, disk_modules
from helpers import fixture_dir, load_fixture
from official_amg import install_torchvision_stand_in, official_sam

from persam.backbones.sam import SamBackbone
from persam.everything import generate_masks
from persam.everything.records import decode_segmentation
from persam.models.sam import sam_from_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("segment_anything") is None, reason="segment-anything is not installed"
)

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    torch.set_num_threads(1)


@pytest.fixture
def official(monkeypatch):
    install_torchvision_stand_in(monkeypatch)
    return importlib.import_module("segment_anything")


def scene() -> np.ndarray:
    """Shapes of several sizes on a gradient, with a sprinkle of small bright dots."""
    h, w = 300, 420
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 90)], -1).astype(np.uint8)
    cv2.circle(img, (100, 90), 55, (240, 30, 30), -1)
    cv2.rectangle(img, (230, 40), (380, 140), (20, 220, 60), -1)
    cv2.circle(img, (300, 230), 50, (30, 40, 230), -1)
    cv2.rectangle(img, (30, 190), (170, 280), (250, 240, 40), -1)
    rng = np.random.default_rng(3)
    for x, y in zip(rng.integers(0, w, 40), rng.integers(0, h, 40), strict=True):
        cv2.circle(img, (int(x), int(y)), 2, (255, 255, 255), -1)
    return img


def official_records(official, modules, image: np.ndarray, **options) -> list[dict]:
    sam = official.modeling.Sam(*modules, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD).eval()
    return official.SamAutomaticMaskGenerator(sam, **options).generate(image)


def as_mask(segmentation) -> np.ndarray:
    return segmentation if isinstance(segmentation, np.ndarray) else decode_segmentation(segmentation)


def assert_same_records(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert sorted(a) == sorted(b), i
        for key in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            assert a[key] == b[key], (i, key, a[key], b[key])
        if isinstance(b["segmentation"], np.ndarray):
            assert a["segmentation"].dtype == b["segmentation"].dtype
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"], i


DISK_OPTIONS = dict(pred_iou_thresh=0.5, stability_score_thresh=0.7, stability_score_offset=0.1)


@pytest.mark.parametrize(
    "options",
    [
        dict(points_per_side=8, output_mode="coco_rle"),
        dict(points_per_side=6, points_per_batch=7, box_nms_thresh=0.5, output_mode="uncompressed_rle"),
        dict(points_per_side=6, crop_n_layers=1, output_mode="coco_rle"),
        dict(
            points_per_side=6,
            crop_n_layers=2,
            crop_n_points_downscale_factor=2,
            crop_overlap_ratio=0.2,
            min_mask_region_area=400,
            output_mode="binary_mask",
        ),
        dict(
            points_per_side=None,
            point_grids=[np.random.default_rng(0).random((30, 2))],
            min_mask_region_area=2000,
        ),
    ],
    ids=["grid", "batches-nms", "crops", "crop-layers-regions", "point-grids-regions"],
)
def test_disc_model_matches_official(official, options):
    image = scene()
    theirs = official_records(official, disk_modules(), image, **DISK_OPTIONS, **options)
    ours = [r.as_dict() for r in generate_masks(disk_backbone(), image, **DISK_OPTIONS, **options)]
    assert len(theirs) >= 5  # the settings leave real work to compare
    if options.get("crop_n_layers"):
        assert len({tuple(r["crop_box"]) for r in theirs}) > 1
    assert_same_records(ours, theirs)


@pytest.fixture(scope="module")
def tiny_sam():
    d = fixture_dir("sam")
    cfg = json.loads((d / "tiny_config.json").read_text())
    model = sam_from_config(cfg)
    model.load_state_dict(load_fixture("sam", "tiny_state_dict.pt"), strict=True)
    return model.eval()


# Random weights: low predicted IoUs (about -0.1..0.1) and logits (|x| < 0.35), and every mask spans
# the whole image, so thresholds are lowered and NMS relaxed to keep many records.
TINY_OPTIONS = dict(
    points_per_side=5,
    pred_iou_thresh=0.05,
    stability_score_thresh=0.4,
    stability_score_offset=0.01,
    box_nms_thresh=1.0,
    crop_nms_thresh=1.0,
)


def test_tiny_sam_with_shared_modules_matches_official(official, tiny_sam):
    image = load_fixture("sam", "tiny_vectors.pt")["images"][3]["image"].numpy()
    options = dict(TINY_OPTIONS, min_mask_region_area=50, output_mode="coco_rle")
    modules = (tiny_sam.image_encoder, tiny_sam.prompt_encoder, tiny_sam.mask_decoder)
    theirs = official_records(official, modules, image, **options)
    ours = [
        r.as_dict()
        for r in generate_masks(SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture"), image, **options)
    ]
    assert len(theirs) >= 5
    assert_same_records(ours, theirs)


def test_tiny_sam_matches_fully_official_model(official, tiny_sam):
    image = load_fixture("sam", "tiny_vectors.pt")["images"][3]["image"].numpy()
    ref = official_sam(
        official.modeling, dim=64, depth=4, heads=4, mlp_ratio=4, global_attn=[1, 3], mask_in_chans=16,
        decoder_mlp_dim=128, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD,
    )  # fmt: skip
    ref.load_state_dict(tiny_sam.state_dict(), strict=True)
    theirs = official.SamAutomaticMaskGenerator(ref.eval(), **TINY_OPTIONS).generate(image)
    ours = [
        r.as_dict()
        for r in generate_masks(
            SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture"), image, **TINY_OPTIONS
        )
    ]
    assert len(theirs) >= 5 and len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["point_coords"] == b["point_coords"] and a["crop_box"] == b["crop_box"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-5
        assert abs(a["stability_score"] - b["stability_score"]) < 1e-3
        assert abs(a["area"] - b["area"]) <= 20
        assert np.count_nonzero(as_mask(a["segmentation"]) ^ as_mask(b["segmentation"])) <= 20
