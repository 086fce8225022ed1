"""SAM 2 modules and Sam2Backbone: official checkpoint key lists of the 8 real configs (built on
``meta``), the tiny fixture model's weights and options, module behaviours and the backbone's
geometry on a small random model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import fixture_dir, gradient_scene, load_fixture

from persam.backbones.sam2 import Sam2Backbone
from persam.models.prompt_encoder import PromptEncoder
from persam.models.sam2 import (
    PositionEmbeddingSine,
    Sam2MaskDecoder,
    Sam2PromptEncoder,
    Sam2TwoWayTransformer,
    official_config,
    sam2_1_hiera_b_plus,
    sam2_1_hiera_l,
    sam2_1_hiera_s,
    sam2_1_hiera_t,
    sam2_from_config,
    sam2_hiera_b_plus,
    sam2_hiera_l,
    sam2_hiera_s,
    sam2_hiera_t,
    tiny_sam2_config,
)
from persam.models.sam2.hiera import window_partition, window_unpartition

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = {
    "sam2.1_hiera_t": sam2_1_hiera_t,
    "sam2.1_hiera_s": sam2_1_hiera_s,
    "sam2.1_hiera_b+": sam2_1_hiera_b_plus,
    "sam2.1_hiera_l": sam2_1_hiera_l,
    "sam2_hiera_t": sam2_hiera_t,
    "sam2_hiera_s": sam2_hiera_s,
    "sam2_hiera_b+": sam2_hiera_b_plus,
    "sam2_hiera_l": sam2_hiera_l,
}


def _key_list(module: torch.nn.Module) -> list[tuple[str, list[int], str, str]]:
    params = {name for name, _ in module.named_parameters()}
    return [
        (k, list(v.shape), str(v.dtype).removeprefix("torch."), "parameter" if k in params else "buffer")
        for k, v in module.state_dict().items()
    ]


# ------------------------------------------------------------------ checkpoint keys
@pytest.mark.parametrize("config", sorted(BUILDERS))
def test_state_dict_keys_and_shapes_equal_the_official_lists(config):
    ref = json.loads((fixture_dir("sam2") / "checkpoint_keys" / f"keys_{config}.json").read_text())
    with torch.device("meta"):
        model = BUILDERS[config]()
    assert all(p.is_meta for p in model.parameters())
    got = _key_list(model)
    expected = [(e["key"], e["shape"], e["dtype"], e["kind"]) for e in ref["state_dict"]]
    assert len(got) == ref["num_keys"]
    assert got == expected
    assert sum(math.prod(s) for _, s, _, _ in got) == ref["num_elements"]
    non_persistent = sorted(n for n, _ in model.named_buffers() if n not in model.state_dict())
    assert non_persistent == sorted(ref["non_persistent_buffers"])


def test_sam2_0_lacks_exactly_the_three_sam2_1_keys():
    with torch.device("meta"):
        keys_20 = set(sam2_hiera_t().state_dict())
        keys_21 = set(sam2_1_hiera_t().state_dict())
    assert keys_20 < keys_21
    assert keys_21 - keys_20 == {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}


def test_official_config_names():
    assert official_config("sam2.1_hiera_b_plus") == official_config("sam2.1_hiera_b+")
    with pytest.raises(ValueError, match="unknown SAM 2 config"):
        official_config("sam2.1_hiera_xl")


def test_builder_postprocessing_and_config_forms():
    cfg = tiny_sam2_config()
    decoder = sam2_from_config(cfg).sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability  # added by the official builders
    assert (decoder.dynamic_multimask_stability_delta, decoder.dynamic_multimask_stability_thresh) == (
        0.05,
        0.98,
    )
    assert not sam2_from_config(
        cfg, apply_postprocessing=False
    ).sam_mask_decoder.dynamic_multimask_via_stability
    node = dict(cfg["model"], _target_="sam2.sam2_video_predictor.SAM2VideoPredictor")
    node["sam_mask_decoder_extra_args"] = {"dynamic_multimask_stability_thresh": 0.5}
    model = sam2_from_config(node)  # the model node itself, as the video builder's target
    assert model.sam_mask_decoder.dynamic_multimask_stability_thresh == 0.5
    assert model.sam_mask_decoder.dynamic_multimask_via_stability


def test_config_errors_are_value_errors():
    cfg = official_config("sam2.1_hiera_t")
    cfg["model"]["image_encoder"]["trunk"]["_target_"] = "somewhere.Swin"
    with pytest.raises(ValueError, match="unsupported _target_"):
        sam2_from_config(cfg)
    cfg = official_config("sam2.1_hiera_t")
    del cfg["model"]["memory_encoder"]
    with pytest.raises(ValueError, match="memory_encoder"):
        sam2_from_config(cfg)
    cfg = official_config("sam2.1_hiera_t")
    cfg["model"]["no_such_option"] = 1
    with pytest.raises(ValueError, match="no_such_option"):
        sam2_from_config(cfg)


# ------------------------------------------------------------------ the tiny fixture model
@pytest.fixture(scope="module")
def fixture_config() -> dict:
    return json.loads((fixture_dir("sam2") / "tiny_config.json").read_text())


def test_tiny_fixture_model_loads_the_official_weights_strictly(fixture_config):
    model = sam2_from_config(fixture_config["config"])
    state = load_fixture("sam2", "tiny_state_dict.pt")
    model.load_state_dict(state, strict=True)
    assert len(state) == fixture_config["weights"]["num_keys"]
    assert sum(v.numel() for v in state.values()) == fixture_config["weights"]["num_elements"]


def test_tiny_fixture_model_options_equal_the_official_builder(fixture_config):
    model = sam2_from_config(fixture_config["config"])
    resolved = fixture_config["image_build"]["resolved_flat"]
    decoder = model.sam_mask_decoder
    for key, value in resolved.items():
        parts = key.split(".")
        if len(parts) == 2 and parts[1] != "_target_":
            attr = getattr(model, parts[1])
            if isinstance(attr, torch.Tensor):  # as officially, the option's parameter replaces the flag
                attr = True
            assert attr == value, key
        elif parts[1] == "sam_mask_decoder_extra_args":
            assert getattr(decoder, parts[2]) == value, key
    assert decoder.use_high_res_features and decoder.pred_obj_scores


def test_tiny_fixture_hiera_blocks_follow_the_readme(fixture_config):
    """Blocks (dim_in -> dim_out, heads, window, q-pool) as listed in the fixture README."""
    trunk = sam2_from_config(fixture_config["config"]).image_encoder.trunk
    table = [
        (16, 16, 1, 8, False),
        (16, 32, 2, 8, True),
        (32, 32, 2, 4, False),
        (32, 64, 4, 4, True),
        (64, 64, 4, 0, False),
        (64, 64, 4, 14, False),
        (64, 64, 4, 0, False),
        (64, 128, 8, 14, True),
    ]
    got = [(b.dim, b.dim_out, b.attn.num_heads, b.window_size, b.pool is not None) for b in trunk.blocks]
    assert got == table
    assert trunk.channel_list == [128, 64, 32, 16]


# ------------------------------------------------------------------ module behaviour
@pytest.mark.parametrize("size", [(14, 14), (13, 9), (70, 64)])
def test_window_partition_round_trip_with_padding(size):
    x = torch.randn(2, *size, 3)
    windows, padded = window_partition(x, 8)
    assert windows.shape[1:] == (8, 8, 3)
    assert padded == (-(-size[0] // 8) * 8, -(-size[1] // 8) * 8)
    assert torch.equal(window_unpartition(windows, 8, padded, size), x)


def test_sine_position_encoding_formula():
    """Positions 1..n over (n + 1e-6) * 2 pi, interleaved sin / cos, [y-part, x-part]."""
    pe = PositionEmbeddingSine(num_pos_feats=8)(torch.zeros(2, 3, 4, 5))
    assert pe.shape == (2, 8, 4, 5)
    y = torch.arange(1, 5, dtype=torch.float64) / (4 + 1e-6) * 2 * math.pi
    x = torch.arange(1, 6, dtype=torch.float64) / (5 + 1e-6) * 2 * math.pi
    torch.testing.assert_close(pe[0, 0, :, 0].double(), torch.sin(y), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[0, 1, :, 0].double(), torch.cos(y), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[0, 2, :, 0].double(), torch.sin(y / 100), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[0, 4, 0, :].double(), torch.sin(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[0, 7, 0, :].double(), torch.cos(x / 100), atol=1e-6, rtol=0)


def test_box_corner_points_embed_like_sam_boxes():
    torch.manual_seed(0)
    kwargs = dict(
        embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    sam2_pe = Sam2PromptEncoder(**kwargs)
    sam_pe = PromptEncoder(**kwargs)
    sam_pe.load_state_dict(sam2_pe.state_dict())
    box = torch.tensor([[100.0, 200.0, 600.25, 900.5]])
    corners = (box.reshape(1, 2, 2), torch.tensor([[2, 3]]))
    sparse2, _ = sam2_pe(points=corners, boxes=None, masks=None)
    sparse1, _ = sam_pe(points=None, boxes=box, masks=None)
    assert sparse2.shape == (1, 3, 32)  # two corners + the padding point
    torch.testing.assert_close(sparse2[:, :2], sparse1)
    torch.testing.assert_close(sparse2[0, 2], sam2_pe.not_a_point_embed.weight[0])


def _decoder(**kwargs) -> Sam2MaskDecoder:
    torch.manual_seed(0)
    transformer = Sam2TwoWayTransformer(depth=1, embedding_dim=32, num_heads=2, mlp_dim=16)
    return Sam2MaskDecoder(transformer_dim=32, transformer=transformer, **kwargs).eval()


def test_stability_score_definition():
    dec = _decoder()
    logits = torch.tensor([[[0.5, 0.01], [-0.01, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    # count(l > 0.05) / count(l > -0.05) = 1 / 3; nothing above -0.05 -> 1.
    torch.testing.assert_close(dec.stability_scores(logits), torch.tensor([1 / 3, 1.0]))


def test_dynamic_fallback_only_for_single_mask_calls_in_eval_mode():
    dec = _decoder(
        dynamic_multimask_via_stability=True, pred_obj_scores=True, iou_prediction_use_sigmoid=True
    )
    emb, pe = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    sparse, dense = torch.randn(2, 2, 32), torch.randn(2, 32, 8, 8)
    dec.dynamic_multimask_stability_thresh = 2.0  # nothing is stable: always the best multimask output
    out = dec(emb, pe, sparse, dense, multimask_output=False)
    best = out.all_iou_predictions[:, 1:].argmax(1)
    assert out.fallback_used.all()
    torch.testing.assert_close(out.iou_predictions[:, 0], out.all_iou_predictions[:, 1:].max(1).values)
    multi = dec(emb, pe, sparse, dense, multimask_output=True)
    torch.testing.assert_close(out.masks[:, 0], multi.masks[torch.arange(2), best])
    assert ((out.iou_predictions > 0) & (out.iou_predictions < 1)).all()  # sigmoid
    assert out.object_score_logits.shape == (2, 1)
    dec.train()
    plain = dec(emb, pe, sparse, dense, multimask_output=False)
    assert plain.fallback_used is None
    torch.testing.assert_close(plain.iou_predictions, plain.all_iou_predictions[:, :1])


# ------------------------------------------------------------------ tiny random model and backbone
@pytest.fixture(scope="module")
def backbone() -> Sam2Backbone:
    torch.manual_seed(0)
    model = sam2_from_config(tiny_sam2_config())
    bb = Sam2Backbone(model, name="tiny_random_sam2", checkpoint_id="random")
    torch.set_num_threads(1)
    bb.set_image(gradient_scene(300, 500))
    return bb


def test_tiny_config_is_a_fresh_copy():
    cfg = tiny_sam2_config()
    cfg["model"]["num_maskmem"] = 0
    assert tiny_sam2_config()["model"]["num_maskmem"] == 7


def test_backbone_features_and_shapes(backbone):
    c = backbone.embed_dim
    assert backbone.features.shape == (1, c, 64, 64)
    assert [tuple(f.shape) for f in backbone.high_res_features] == [
        (1, c // 8, 256, 256),
        (1, c // 4, 128, 128),
    ]
    assert backbone.image_embedding_size == (64, 64)
    assert backbone.original_size == (300, 500)
    pts = torch.tensor([[[100.0, 50.0]], [[400.0, 250.0]]])
    out = backbone.decode(pts, torch.ones(2, 1, dtype=torch.int64), multimask_output=True)
    assert out.low_res_logits.shape == (2, 3, 256, 256)
    assert out.iou_predictions.shape == (2, 3) and out.object_score_logits.shape == (2,)
    assert backbone.postprocess(out.low_res_logits).shape == (2, 3, 300, 500)
    single = backbone.decode(pts, torch.ones(2, 1, dtype=torch.int64), multimask_output=False)
    assert single.low_res_logits.shape == (2, 1, 256, 256) and single.fallback_used.shape == (2,)


def test_prompts_are_scaled_per_axis_with_box_corners_first(backbone):
    coords, labels = backbone.prompt_points(
        torch.tensor([[[250.0, 150.0]]]), torch.tensor([[1]]), torch.tensor([[0.0, 0.0, 500.0, 300.0]])
    )
    torch.testing.assert_close(coords, torch.tensor([[[0.0, 0.0], [1024.0, 1024.0], [512.0, 512.0]]]))
    assert labels.tolist() == [[2, 3, 1]]
    sparse, _ = backbone.encode_prompts(None, None, mask_input=torch.zeros(1, 1, 256, 256))
    assert sparse.shape == (1, 0, backbone.embed_dim)


def test_batched_decode_equals_single_calls(backbone):
    pts = torch.tensor([[[100.0, 50.0], [30.0, 20.0]], [[400.0, 250.0], [10.0, 290.0]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    boxes = torch.tensor([[50.0, 20.0, 200.0, 150.0], [300.0, 100.0, 480.0, 290.0]])
    both = backbone.decode(pts, labels, boxes=boxes, multimask_output=True)
    for i in range(2):
        one = backbone.decode(
            pts[i : i + 1], labels[i : i + 1], boxes=boxes[i : i + 1], multimask_output=True
        )
        torch.testing.assert_close(both.low_res_logits[i : i + 1], one.low_res_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(both.iou_predictions[i : i + 1], one.iou_predictions, atol=1e-5, rtol=0)


def test_mask_to_embedding_grid_stretches_like_the_image(backbone):
    mask = np.zeros((300, 500), np.float32)
    mask[:, :250] = 1.0  # left half of the image -> left half of the grid (no padding)
    grid = backbone.mask_to_embedding_grid(mask)
    assert grid.shape == (64, 64)
    assert torch.allclose(grid[:, :31], torch.ones(64, 31)) and torch.allclose(
        grid[:, 33:], torch.zeros(64, 31)
    )
    torch.testing.assert_close(
        backbone.mask_to_embedding_grid(np.full((300, 500), 0.25)), torch.full((64, 64), 0.25)
    )


def test_invalid_prompts_raise(backbone):
    with pytest.raises(ValueError, match="point_coords"):
        backbone.decode(torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="batch size"):
        backbone.decode(torch.zeros(2, 1, 2), torch.ones(2, 1), boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mask_input"):
        backbone.decode(None, None, mask_input=torch.zeros(1, 1, 64, 64))


def test_decode_needs_an_image():
    bb = Sam2Backbone(sam2_from_config(tiny_sam2_config()), name="tiny_random_sam2", checkpoint_id="random")
    with pytest.raises(RuntimeError, match="no image set"):
        bb.decode(torch.zeros(1, 1, 2), torch.ones(1, 1))


def test_bfloat16_encoder_keeps_float32_features(backbone):
    bb = Sam2Backbone(backbone.model, name="tiny_random_sam2", checkpoint_id="random", dtype=torch.bfloat16)
    bb.set_image(gradient_scene(300, 500))
    assert bb.features.dtype == torch.float32 and all(f.dtype == torch.float32 for f in bb.high_res_features)
    rel = (bb.features - backbone.features).norm() / backbone.features.norm()
    assert rel < 0.1
