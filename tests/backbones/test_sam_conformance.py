"""SAM conformance: the tiny random SAM of ``fixtures/sam`` must reproduce the reference predictor
(resize, preprocessing, image encoder, prompt encoder, mask decoder, post-processing) and the
PerSAM decoder hooks of ``fixtures/persam`` within the tolerances stated in their READMEs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import fixture_dir, load_fixture

from persam.backbones.sam import SamBackbone
from persam.models.sam import sam_from_config

EMBED_GRID = list(range(0, 64, 5)) + [63]  # rows/cols of dense_embeddings_grid


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_sam():
    d = fixture_dir("sam")
    torch.set_num_threads(1)
    cfg = json.loads((d / "tiny_config.json").read_text())
    model = sam_from_config(cfg)
    model.load_state_dict(load_fixture("sam", "tiny_state_dict.pt"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def vectors():
    return load_fixture("sam", "tiny_vectors.pt")


@pytest.fixture(scope="module")
def encoded(tiny_sam, vectors):
    """One backbone per fixture image, each with its image encoded once."""
    torch.set_num_threads(1)
    out = {}
    for rec in vectors["images"]:
        bb = SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture")
        bb.set_image(rec["image"].numpy())
        out[rec["name"]] = bb
    return out


def _grid(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return x[..., rows, :][..., cols]


def _stats(x: torch.Tensor) -> torch.Tensor:
    """float64 ``[sum x, sum |x|, sum x^2]`` over the last two dims."""
    x = x.double().flatten(-2)
    return torch.stack([x.sum(-1), x.abs().sum(-1), (x * x).sum(-1)], dim=-1)


def _assert_stats(got: torch.Tensor, expected: torch.Tensor, num_pixels: int) -> None:
    torch.testing.assert_close(got[..., 0], expected[..., 0], atol=1e-5 * num_pixels, rtol=0)
    torch.testing.assert_close(got[..., 1:], expected[..., 1:], rtol=1e-5, atol=0)


def _prompts(call: dict, image_rec: dict) -> tuple:
    def batch(t):
        return None if t is None else t[None]

    mask_input = image_rec["mask_input"][None] if call["uses_mask_input"] else None
    return batch(call["point_coords"]), batch(call["point_labels"]), batch(call["box"]), mask_input


def _calls(vectors):
    return [(i, j) for i, rec in enumerate(vectors["images"]) for j in range(len(rec["calls"]))]


# ------------------------------------------------------------------ geometry
def test_resized_image_is_bit_exact(tiny_sam, vectors):
    bb = SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture")
    for rec in vectors["images"]:
        resized = bb.transform.apply_image(rec["image"].numpy())
        assert resized.shape == tuple(rec["resized_shape"].tolist()), rec["name"]
        assert hashlib.sha256(np.ascontiguousarray(resized).tobytes()).hexdigest() == rec["resized_sha256"]
        if rec["resized"] is not None:
            np.testing.assert_array_equal(resized, rec["resized"].numpy())


def test_preprocessed_input(tiny_sam, vectors):
    bb = SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture")
    for rec in vectors["images"]:
        x = bb.preprocess_image(rec["image"].numpy())[0]
        assert x.shape == (3, 1024, 1024) and x.dtype == torch.float32
        grid = _grid(x, rec["preprocessed_rows"], rec["preprocessed_cols"])
        torch.testing.assert_close(grid, rec["preprocessed_grid"], atol=1e-6, rtol=0)
        _assert_stats(_stats(x), rec["preprocessed_stats"], 1024 * 1024)


def test_image_pe(tiny_sam, vectors):
    pe = tiny_sam.prompt_encoder.get_dense_pe()[0]
    grid = _grid(pe, vectors["image_pe_rows"], vectors["image_pe_cols"])
    torch.testing.assert_close(grid, vectors["image_pe_grid"], atol=1e-5, rtol=0)
    _assert_stats(_stats(pe).sum(0), vectors["image_pe_stats"], pe.numel())


def test_image_embeddings_and_sizes(encoded, vectors):
    for rec in vectors["images"]:
        bb = encoded[rec["name"]]
        assert bb.original_size == tuple(rec["original_size"].tolist())
        assert bb.input_size == tuple(rec["input_size"].tolist())
        assert bb.features.dtype == torch.float32
        torch.testing.assert_close(bb.features, rec["image_embeddings"], atol=1e-4, rtol=0)


# ------------------------------------------------------------------ prompts
def test_prompt_embeddings(encoded, vectors):
    for i, j in _calls(vectors):
        rec = vectors["images"][i]
        call = rec["calls"][j]
        bb = encoded[rec["name"]]
        pc, pl, box, mask_input = _prompts(call, rec)
        if pc is not None:
            torch.testing.assert_close(
                bb.transform_coords(pc)[0], call["point_coords_transformed"], atol=1e-5, rtol=0
            )
        if box is not None:
            torch.testing.assert_close(
                bb.transform_boxes(box), call["box_transformed"].reshape(1, 4), atol=1e-5, rtol=0
            )
        sparse, dense = bb.encode_prompts(pc, pl, box, mask_input)
        torch.testing.assert_close(sparse, call["sparse_embeddings"], atol=1e-5, rtol=0)
        if mask_input is not None:
            grid = _grid(dense[0], torch.tensor(EMBED_GRID), torch.tensor(EMBED_GRID))
            torch.testing.assert_close(grid, rec["dense_embeddings_grid"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ predictions
def test_decoder_and_postprocess(encoded, vectors):
    checked_full_low = checked_full_high = 0
    for i, j in _calls(vectors):
        rec = vectors["images"][i]
        call = rec["calls"][j]
        bb = encoded[rec["name"]]
        pc, pl, box, mask_input = _prompts(call, rec)
        out = bb.decode(pc, pl, boxes=box, mask_input=mask_input, multimask_output=call["multimask_output"])
        c = 3 if call["multimask_output"] else 1
        assert out.low_res_logits.shape == (1, c, 256, 256) and out.iou_predictions.shape == (1, c)
        what = f"{rec['name']} {call['prompt_set']} multimask={call['multimask_output']}"

        torch.testing.assert_close(
            out.iou_predictions[0], call["iou_predictions"], atol=1e-5, rtol=0, msg=what
        )
        low = out.low_res_logits[0]
        grid = _grid(low, vectors["lr_rows"], vectors["lr_cols"])
        torch.testing.assert_close(grid, call["low_res_logits_grid"], atol=1e-5, rtol=0, msg=what)
        _assert_stats(_stats(low), call["low_res_logits_stats"], 256 * 256)
        if call["low_res_logits"] is not None:
            torch.testing.assert_close(low, call["low_res_logits"], atol=1e-5, rtol=0, msg=what)
            checked_full_low += 1

        high = bb.postprocess(out.low_res_logits)[0]
        assert high.shape == (c, *bb.original_size)
        grid = _grid(high, rec["hr_rows"], rec["hr_cols"])
        torch.testing.assert_close(grid, call["masks_logits_grid"], atol=2e-5, rtol=0, msg=what)
        _assert_stats(_stats(high), call["masks_logits_stats"], high[0].numel())
        if call["masks_logits"] is not None:
            torch.testing.assert_close(high, call["masks_logits"], atol=2e-5, rtol=0, msg=what)
            checked_full_high += 1

        # Only pixels whose logit is within the tolerance of 0 may legitimately flip.
        area = (high > 0).flatten(1).sum(1)
        near_zero = (high.abs() < 1e-5).flatten(1).sum(1)
        assert torch.all((area - call["mask_area"]).abs() <= near_zero + 2), what
    assert checked_full_low == len(vectors["images"]) and checked_full_high == 1


def test_predict_matches_decode(encoded, vectors):
    rec = vectors["images"][0]
    call = next(c for c in rec["calls"] if c["prompt_set"] == "box_points" and c["multimask_output"])
    bb = encoded[rec["name"]]
    masks, scores, low, high = bb.predict(
        call["point_coords"].numpy(), call["point_labels"].numpy(), call["box"].numpy()
    )
    assert masks.dtype == bool and masks.shape == (3, *bb.original_size)
    np.testing.assert_allclose(scores, call["iou_predictions"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(masks, high.numpy() > 0)
    np.testing.assert_allclose(
        low[:, vectors["lr_rows"]][:, :, vectors["lr_cols"]], call["low_res_logits_grid"], atol=1e-5
    )


def test_batched_decode_of_fixture_prompts(encoded, vectors):
    """Several prompt sets in one decoder call share the image embedding and each gives its own
    reference output."""
    rec = vectors["images"][1]
    bb = encoded[rec["name"]]
    call = next(c for c in rec["calls"] if c["prompt_set"] == "points_pos_neg" and c["multimask_output"])
    pc = call["point_coords"][None].repeat(3, 1, 1)
    pc[1, 1] = torch.tensor([5.0, 7.0])  # a different negative point in the middle set
    pl = call["point_labels"][None].repeat(3, 1)
    out = bb.decode(pc, pl, multimask_output=True)
    for b in (0, 2):
        torch.testing.assert_close(out.iou_predictions[b], call["iou_predictions"], atol=1e-5, rtol=0)
        grid = _grid(out.low_res_logits[b], vectors["lr_rows"], vectors["lr_cols"])
        torch.testing.assert_close(grid, call["low_res_logits_grid"], atol=1e-5, rtol=0)
    assert not torch.allclose(out.low_res_logits[1], out.low_res_logits[0])


# ------------------------------------------------------------------ PerSAM hooks
def test_hooks_off_is_plain_sam(encoded, vectors):
    rec = vectors["images"][0]
    bb = encoded[rec["name"]]
    call = rec["calls"][2]
    pc, pl, box, mask_input = _prompts(call, rec)
    sparse, dense = bb.encode_prompts(pc, pl, box, mask_input)
    dec = bb.model.mask_decoder
    pe = bb.model.prompt_encoder.get_dense_pe()
    plain = dec(bb.features, pe, sparse, dense, True)
    hooked = dec(bb.features, pe, sparse, dense, True, attn_sim=None, target_embedding=None)
    for a, b in zip(plain, hooked, strict=True):
        assert torch.equal(a, b)
    # A zero attn_sim still changes the maths (a second softmax), so it must not equal plain SAM.
    zero_sim = dec(bb.features, pe, sparse, dense, True, attn_sim=torch.zeros(1, 1, 1, 64 * 64))
    assert not torch.allclose(zero_sim[0], plain[0], atol=1e-7)


@pytest.fixture(scope="module")
def persam_records():
    return load_fixture("persam", "persam.pt"), load_fixture("persam", "inputs.pt")


def test_persam_step1_hooks(tiny_sam, persam_records):
    """PerSAM's first-step call (attn_sim + target_embedding, single mask) on cat/01."""
    rec, inputs = persam_records
    test = rec["concepts"]["cat"]["tests"]["01"]
    bb = SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture")
    bb.set_image(inputs["concepts"]["cat"]["images"]["01"].numpy())
    out = bb.decode(
        test["topk_xy"][None].float(),
        test["topk_label"][None],
        multimask_output=False,
        attn_sim=test["attn_sim"],
        target_embedding=rec["concepts"]["cat"]["target_embedding"],
    )
    step1 = test["step1"]
    torch.testing.assert_close(out.iou_predictions[0], step1["scores"], atol=1e-5, rtol=0)
    low = out.low_res_logits[0]
    torch.testing.assert_close(
        _grid(low, rec["lr_rows"], rec["lr_cols"]), step1["low_res_logits_grid"], atol=1e-5, rtol=0
    )
    _assert_stats(_stats(low), step1["low_res_logits_stats"], 256 * 256)
    high = bb.postprocess(out.low_res_logits)[0]
    torch.testing.assert_close(
        _grid(high[0], test["hr_rows"], test["hr_cols"]),
        step1["best_high_res_logits_grid"],
        atol=2e-5,
        rtol=0,
    )
    _assert_stats(_stats(high), step1["high_res_logits_stats"], high[0].numel())
    assert abs(int((high > 0).sum()) - int(step1["mask_area"][0])) <= step1["best_mask_near_threshold_pixels"]


def test_reference_mask_grid(tiny_sam, persam_records):
    """The reference-mask path: PIL resize of the uint8 mask, normalisation, zero padding and
    64x64 down-sampling equals grid((mask - mean_R) / std_R) with the padding at mean_R."""
    rec, inputs = persam_records
    bb = SamBackbone(tiny_sam, name="tiny", checkpoint_id="fixture")
    mean_r, std_r = float(tiny_sam.pixel_mean[0]), float(tiny_sam.pixel_std[0])
    for name, concept in rec["concepts"].items():
        ref_mask = inputs["concepts"][name]["ref_mask"].numpy()
        grid = (bb.mask_to_embedding_grid(ref_mask, pad_value=mean_r) - mean_r) / std_r
        torch.testing.assert_close(grid, concept["ref_mask_64"], atol=1e-5, rtol=0)
        assert int((grid > 0).sum()) == concept["num_target_locations"]
