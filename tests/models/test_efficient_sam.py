"""EfficientSAM conformance: the tiny reference model of ``fixtures/efficientsam`` must reproduce the
official pipeline (preprocessing, encoder, prompt encoder, decoder, post-processing) within the
tolerances stated in that folder's README, both through the model and through the backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fixture_dir, load_fixture

from persam.backbones.efficient_sam import EfficientSamBackbone
from persam.models.efficient_sam import (
    EfficientSam,
    efficient_sam_from_config,
    efficient_sam_vit_s,
    efficient_sam_vit_t,
)

NAME = "efficientsam"
IMAGES = ["dogs_360x640", "synthetic_rgb_333x517", "gray_257x190", "wide_150x1203"]
PROMPTS = [
    "one_pos",
    "pos_neg",
    "neg_only",
    "box",
    "box_pos",
    "six_points",
    "eight_points_truncated",
    "user_pad_label_only",
    "user_pad_neg_coords",
    "multi_query",
    "edge_cases",
    "grid_3x3",
]
# README tolerance table (float32).
TOL_PRE = dict(atol=1e-5, rtol=1e-5)
TOL_PE = dict(atol=2e-5, rtol=1e-5)
TOL_EMB = dict(atol=1e-4, rtol=1e-4)
TOL_IOU = dict(atol=1e-4, rtol=1e-4)
TOL_LOW = dict(atol=2e-4, rtol=1e-4)
TOL_MASK = dict(atol=5e-4, rtol=1e-4)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    cols = rows if cols is None else cols
    return x[..., rows, :][..., cols]


@pytest.fixture(scope="module")
def vectors() -> dict:
    return load_fixture(NAME, "tiny_vectors.pt")


@pytest.fixture(scope="module")
def model() -> EfficientSam:
    cfg = json.loads((fixture_dir(NAME) / "tiny_config.json").read_text())
    m = efficient_sam_from_config(cfg)
    m.load_state_dict(load_fixture(NAME, "tiny_state_dict.pt"), strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def backbones(model: EfficientSam, vectors: dict) -> dict[str, EfficientSamBackbone]:
    """One backbone per image, each bound to its image (one encoder pass per image)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name in IMAGES:
        bb = EfficientSamBackbone(model, name="efficient_sam_tiny", checkpoint_id="tiny")
        bb.set_image(vectors["images"][name]["image_uint8"].numpy())
        out[name] = bb
    torch.set_num_threads(n)
    return out


_RUNS: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def _run(model: EfficientSam, emb: torch.Tensor, pset: dict, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    h, w = hw
    with torch.no_grad():
        pts, lbl = model.decoder_inputs(pset["points"], pset["labels"], h, w)
        sparse = model.prompt_encoder(pts, lbl)
        low, iou = model.predict_masks(emb, pset["points"], pset["labels"], True, h, w)
        single_low, single_iou = model.predict_masks(emb, pset["points"], pset["labels"], False, h, w)
        masks, _ = model.predict_masks(emb, pset["points"], pset["labels"], True, h, w, h, w)
    return dict(
        points=pts,
        labels=lbl,
        sparse=sparse.reshape(pset["sparse_embeddings"].shape),
        low=low,
        iou=iou,
        single_low=single_low,
        single_iou=single_iou,
        masks=masks,
        hw=hw,
    )


@pytest.fixture
def run(model, vectors, backbones):
    def get(image: str, prompt: str) -> tuple[dict, dict]:
        im = vectors["images"][image]
        pset = im["prompts"][prompt]
        if (image, prompt) not in _RUNS:
            _RUNS[image, prompt] = _run(model, backbones[image].features, pset, tuple(im["input_hw"]))
        return _RUNS[image, prompt], pset

    return get


# ------------------------------------------------------------------------- architecture
@pytest.mark.parametrize(
    ("variant", "builder"), [("vitt", efficient_sam_vit_t), ("vits", efficient_sam_vit_s)]
)
def test_official_state_dict_keys(variant, builder):
    ref = json.loads((fixture_dir(NAME) / f"keys_{variant}.json").read_text())
    with torch.device("meta"):
        m = builder()
    sd = m.state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(e["name"], e["shape"]) for e in ref["keys"]]
    assert sum(p.numel() for p in m.parameters()) == ref["num_parameters"]
    buffers = {k for k, _ in m.named_buffers()}
    assert set(ref["non_persistent_buffers_not_in_state_dict"]) <= buffers
    assert not set(ref["non_persistent_buffers_not_in_state_dict"]) & set(sd)


def test_tiny_state_dict_round_trip(model):
    sd = load_fixture(NAME, "tiny_state_dict.pt")
    assert list(model.state_dict()) == list(sd)
    assert sum(v.numel() for v in sd.values()) == 156524


def test_encoder_abs_pos_and_dense_pe(model, vectors):
    ml = vectors["model_level"]
    idx = ml["grid_idx"]
    with torch.no_grad():
        pos = model.image_encoder.abs_pos((64, 64))
        pe = model.prompt_encoder.get_dense_pe()
    assert pos.shape == (1, 64, 64, 48)
    torch.testing.assert_close(pos[:, idx][:, :, idx], ml["encoder_abs_pos_sampled"], **TOL_PE)
    torch.testing.assert_close(_sample(pe, idx), ml["dense_pe_sampled"], **TOL_PE)


# ------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("image", IMAGES)
def test_preprocessing(model, vectors, image):
    im = vectors["images"][image]
    bb = EfficientSamBackbone(model, name="t", checkpoint_id="t")
    pre = bb.preprocess_image(im["image_uint8"].numpy())
    assert pre.shape == (1, 3, 1024, 1024) and pre.dtype == torch.float32
    for key, (r, c) in im["preprocessed_window_origins_rc"].items():
        torch.testing.assert_close(
            pre[:, :, r : r + 32, c : c + 32], im["preprocessed_windows"][key], **TOL_PRE
        )
    torch.testing.assert_close(_sample(pre, im["preprocessed_idx"]), im["preprocessed_sampled"], **TOL_PRE)
    torch.testing.assert_close(
        pre.double().sum((0, 2, 3)), im["preprocessed_channel_sum_f64"], atol=0.05, rtol=1e-6
    )


def test_preprocessing_full(model):
    full = load_fixture(NAME, "tiny_preprocessed_full.pt")
    pre = EfficientSamBackbone(model, name="t", checkpoint_id="t").preprocess_image(
        full["image_uint8"].numpy()
    )
    torch.testing.assert_close(pre, full["preprocessed"], **TOL_PRE)


def test_mask_to_embedding_grid_follows_the_image_geometry(model):
    # A map taken from the image itself must land where the image's pixels land on the grid.
    full = load_fixture(NAME, "tiny_preprocessed_full.pt")
    img = full["image_uint8"].numpy()
    bb = EfficientSamBackbone(model, name="t", checkpoint_id="t")
    grid = bb.mask_to_embedding_grid(torch.from_numpy(img[..., 0]).float() / 255, pad_value=123.0)
    red = full["preprocessed"][:, :1] * 0.229 + 0.485  # undo the normalisation of channel 0
    expected = F.interpolate(red, (64, 64), mode="bilinear", align_corners=False)[0, 0]
    assert grid.shape == (64, 64)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("image", IMAGES)
def test_image_embeddings(backbones, vectors, image):
    feats = backbones[image].features
    assert feats.dtype == torch.float32 and feats.shape == (1, 32, 64, 64)
    assert backbones[image].original_size == tuple(vectors["images"][image]["input_hw"])
    torch.testing.assert_close(feats, vectors["images"][image]["image_embeddings"], **TOL_EMB)


# ----------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("image", IMAGES)
def test_prompt_encoding(run, image, prompt):
    out, ref = run(image, prompt)
    torch.testing.assert_close(out["points"], ref["decoder_points"], atol=1e-4, rtol=0)
    assert torch.equal(out["labels"], ref["decoder_labels"])
    torch.testing.assert_close(out["sparse"], ref["sparse_embeddings"], **TOL_PE)


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("image", IMAGES)
def test_decoder_outputs(run, image, prompt):
    out, ref = run(image, prompt)
    idx = ref["low_res_idx"]
    torch.testing.assert_close(out["iou"], ref["iou_predictions"], **TOL_IOU)
    assert torch.equal(torch.argsort(out["iou"], dim=-1, descending=True), ref["sorted_ids"])
    assert out["low"].shape[-2:] == (256, 256)
    torch.testing.assert_close(_sample(out["low"], idx), ref["low_res_logits_sampled"], **TOL_LOW)
    torch.testing.assert_close(out["single_iou"], ref["single_iou_predictions"], **TOL_IOU)
    torch.testing.assert_close(
        _sample(out["single_low"], idx), ref["single_low_res_logits_sampled"], **TOL_LOW
    )
    if "low_res_logits" in ref:
        torch.testing.assert_close(out["low"], ref["low_res_logits"], **TOL_LOW)


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("image", IMAGES)
def test_full_resolution_masks(run, image, prompt):
    out, ref = run(image, prompt)
    masks = out["masks"]
    assert masks.shape == (*ref["iou_predictions"].shape, *out["hw"])
    sampled = _sample(masks, ref["mask_rows"], ref["mask_cols"])
    torch.testing.assert_close(sampled, ref["masks_sampled"], **TOL_MASK)
    pairs = [(sampled, ref["masks_sampled"])]
    if "masks" in ref:
        torch.testing.assert_close(masks, ref["masks"], **TOL_MASK)
        pairs.append((masks, ref["masks"]))
    for ours, theirs in pairs:  # binary masks (logits >= 0) agree wherever the reference is clear
        clear = theirs.abs() > 1e-3
        assert torch.equal((ours >= 0)[clear], (theirs >= 0)[clear])


@pytest.mark.parametrize("image", IMAGES)
def test_equivalent_prompt_sets(run, vectors, image):
    for prompt, pset in vectors["images"][image]["prompts"].items():
        if "equivalent_to" in pset:
            a, _ = run(image, prompt)
            b, _ = run(image, pset["equivalent_to"])
            for key in ("sparse", "iou", "low", "single_low"):
                torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    # Queries batched with padding reproduce the single-query sets.
    multi, _ = run(image, "multi_query")
    for q, prompt in enumerate(["one_pos", "pos_neg", "box"]):
        single, _ = run(image, prompt)
        torch.testing.assert_close(multi["low"][:, q], single["low"][:, 0], atol=2e-5, rtol=0)
        torch.testing.assert_close(multi["iou"][:, q], single["iou"][:, 0], atol=2e-5, rtol=0)


def test_image_batch(model, vectors, backbones):
    ref = vectors["image_batch"]
    img0 = vectors["images"]["dogs_360x640"]["image_uint8"]
    images = torch.stack([img0, img0.flip(1)]).permute(0, 3, 1, 2).float() / 255
    h, w = images.shape[-2:]
    with torch.no_grad():
        emb = model.get_image_embeddings(images)
        low, iou = model.predict_masks(emb, ref["points"], ref["labels"], True, h, w)
        single_low, single_iou = model.predict_masks(emb, ref["points"], ref["labels"], False, h, w)
        masks, _ = model(images, ref["points"], ref["labels"])
        pts, lbl = model.decoder_inputs(ref["points"], ref["labels"], h, w)
        sparse = model.prompt_encoder(pts, lbl)
    torch.testing.assert_close(emb[:1], backbones["dogs_360x640"].features, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        emb[1:, :, ::4, ::4], ref["image_embeddings_image1_sampled_strided4"], **TOL_EMB
    )
    torch.testing.assert_close(pts, ref["decoder_points"], atol=1e-4, rtol=0)
    assert torch.equal(lbl, ref["decoder_labels"])
    torch.testing.assert_close(sparse.reshape(2, 2, 6, -1), ref["sparse_embeddings"], **TOL_PE)
    torch.testing.assert_close(iou, ref["iou_predictions"], **TOL_IOU)
    assert torch.equal(torch.argsort(iou, dim=-1, descending=True), ref["sorted_ids"])
    idx = ref["low_res_idx"]
    torch.testing.assert_close(_sample(low, idx), ref["low_res_logits_sampled"], **TOL_LOW)
    torch.testing.assert_close(single_iou, ref["single_iou_predictions"], **TOL_IOU)
    torch.testing.assert_close(_sample(single_low, idx), ref["single_low_res_logits_sampled"], **TOL_LOW)
    assert masks.shape == (2, 2, 3, h, w)
    torch.testing.assert_close(
        _sample(masks, ref["mask_rows"], ref["mask_cols"]), ref["masks_sampled"], **TOL_MASK
    )


# ---------------------------------------------------------------------------- backbone
def _query(pset: dict, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pset["points"][0, q], pset["labels"][0, q]


@pytest.mark.parametrize("image", IMAGES)
def test_backbone_points_boxes_and_postprocess(backbones, vectors, image):
    bb = backbones[image]
    prompts = vectors["images"][image]["prompts"]

    def check(out, pset, multimask=True):
        idx = pset["low_res_idx"]
        key = "" if multimask else "single_"
        assert out.low_res_logits.dtype == torch.float32
        torch.testing.assert_close(out.iou_predictions, pset[key + "iou_predictions"][0], **TOL_IOU)
        torch.testing.assert_close(
            _sample(out.low_res_logits, idx), pset[key + "low_res_logits_sampled"][0], **TOL_LOW
        )

    # Points (several prompt sets batched in one call).
    ps = prompts["pos_neg"]
    out = bb.decode(ps["points"][0], ps["labels"][0])
    check(out, ps)
    high = bb.postprocess(out.low_res_logits)
    assert high.shape == (1, 3, *bb.original_size)
    torch.testing.assert_close(
        _sample(high, ps["mask_rows"], ps["mask_cols"]), ps["masks_sampled"][0], **TOL_MASK
    )
    check(bb.decode(ps["points"][0], ps["labels"][0], multimask_output=False), ps, multimask=False)
    grid = prompts["grid_3x3"]
    check(bb.decode(grid["points"][0], grid["labels"][0]), grid)
    # A box is its two corners (labels 2, 3), placed before the points.
    box = prompts["box"]
    xyxy = box["points"][0, 0].reshape(1, 4)
    check(bb.decode(None, None, boxes=xyxy), box)
    box_pos = prompts["box_pos"]
    point, label = box_pos["points"][0, :, 2:], box_pos["labels"][0, :, 2:]
    check(bb.decode(point, label, boxes=box_pos["points"][0, 0, :2].reshape(1, 4)), box_pos)
    # mask_input is accepted and ignored (no dense prompt in EfficientSAM).
    with_mask = bb.decode(point, label, boxes=xyxy, mask_input=torch.full((1, 1, 256, 256), 5.0))
    without = bb.decode(point, label, boxes=xyxy)
    assert torch.equal(with_mask.low_res_logits, without.low_res_logits)


def test_backbone_predict_thresholds_at_zero_inclusive(backbones, vectors):
    bb = backbones["synthetic_rgb_333x517"]
    pset = vectors["images"]["synthetic_rgb_333x517"]["prompts"]["one_pos"]
    masks, scores, low, high = bb.predict(pset["points"][0, 0].numpy(), pset["labels"][0, 0].numpy())
    ref = pset["masks"][0, 0]
    assert masks.shape == tuple(ref.shape) and masks.dtype == bool
    torch.testing.assert_close(high, ref, **TOL_MASK)
    clear = (ref.abs() > 1e-3).numpy()
    np.testing.assert_array_equal(masks[clear], (ref >= 0).numpy()[clear])
    np.testing.assert_allclose(scores, pset["iou_predictions"][0, 0].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(low, pset["low_res_logits"][0, 0].numpy(), atol=2e-4, rtol=1e-4)
