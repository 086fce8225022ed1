"""SAM / MobileSAM modules and SamBackbone on self-made inputs with small random models:
checkpoint key lists, shapes, batching, autocast, geometry helpers, registry."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fixture_dir, gradient_scene

from persam.backbones.sam import SamBackbone
from persam.io import InputError
from persam.models import image_encoder
from persam.models.image_encoder import Attention as EncoderAttention
from persam.models.image_encoder import get_rel_pos
from persam.models.sam import Sam, mobile_sam_vit_t, sam_from_config, sam_vit_b, sam_vit_h, sam_vit_l
from persam.models.transformer import Attention as DecoderAttention
from persam.registry import build_model, build_module, list_models, tiny_mobile_sam_config, tiny_sam_config


def _randomise(model: Sam, seed: int = 0) -> Sam:
    """Non-trivial position tables and norms (their defaults are zeros / ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("pos_embed"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_model() -> Sam:
    torch.manual_seed(0)
    return _randomise(sam_from_config(tiny_sam_config())).eval()


@pytest.fixture(scope="module")
def backbone(small_model) -> SamBackbone:
    bb = SamBackbone(small_model, name="small_sam", checkpoint_id="random")
    torch.set_num_threads(1)
    bb.set_image(gradient_scene(300, 500))
    return bb


# ------------------------------------------------------------------ checkpoint keys
def _key_list(module: torch.nn.Module) -> list[tuple[str, list[int], str, str]]:
    params = {name for name, _ in module.named_parameters()}
    return [
        (k, list(v.shape), str(v.dtype).removeprefix("torch."), "parameter" if k in params else "buffer")
        for k, v in module.state_dict().items()
    ]


def _assert_official_keys(module: torch.nn.Module, model_type: str) -> None:
    ref = json.loads((fixture_dir("sam") / f"keys_vit_{model_type}.json").read_text())
    expected = [(e["key"], e["shape"], e["dtype"], e["kind"]) for e in ref["state_dict"]]
    got = _key_list(module)
    assert len(got) == ref["num_keys"]
    assert got == expected
    assert sum(math.prod(s) for _, s, _, _ in got) == ref["num_elements"]
    state = module.state_dict()
    non_persistent = sorted(n for n, _ in module.named_buffers() if n not in state)
    assert non_persistent == sorted(ref["non_persistent_buffers"])


@pytest.mark.parametrize(("model_type", "builder"), [("b", sam_vit_b), ("l", sam_vit_l), ("h", sam_vit_h)])
def test_sam_state_dict_keys_match_official(model_type, builder):
    with torch.device("meta"):
        module = builder()
    _assert_official_keys(module, model_type)


def test_mobile_sam_state_dict_keys_match_official():
    if importlib.util.find_spec("persam.models.tiny_vit") is None:
        pytest.skip("persam.models.tiny_vit (TinyViT image encoder) is not available")
    try:
        with torch.device("meta"):
            module = mobile_sam_vit_t()
    except (NotImplementedError, RuntimeError):  # an encoder that needs real tensors at build time
        module = mobile_sam_vit_t()
    _assert_official_keys(module, "t")


def test_pixel_statistics_are_constant_buffers(small_model):
    assert "pixel_mean" not in small_model.state_dict()
    torch.testing.assert_close(small_model.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(small_model.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))


# ------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("mask_budget", [None, 100, 300])
def test_encoder_attention_equals_explicit_relative_position_formula(monkeypatch, mask_budget):
    """The fused attention equals softmax(q*s k^T + q.Rh[row] + q.Rw[col]) v written out in full,
    also when the bias is built for a few queries at a time (into one reused buffer; with budget
    300 the last block of queries is shorter than the others)."""
    if mask_budget is not None:
        monkeypatch.setattr(image_encoder, "_MASK_BUDGET", mask_budget)
    torch.manual_seed(0)
    attn = EncoderAttention(16, num_heads=2, use_rel_pos=True, input_size=(5, 7)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)
        attn.rel_pos_w.normal_(0, 0.5)
        x = torch.randn(2, 5, 7, 16)
        got = attn(x)

        b, h, w, c = x.shape
        qkv = attn.qkv(x).reshape(b, h * w, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        rh, rw = get_rel_pos(h, h, attn.rel_pos_h), get_rel_pos(w, w, attn.rel_pos_w)
        qi = torch.arange(h * w)
        bias = torch.einsum("bnqc,qkc->bnqk", q, rh[qi // w][:, qi // w]) + torch.einsum(
            "bnqc,qkc->bnqk", q, rw[qi % w][:, qi % w]
        )
        out = torch.softmax(logits + bias, -1) @ v
        expected = attn.proj(out.permute(0, 2, 1, 3).reshape(b, h, w, c))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_chunked_relative_position_attention_is_the_same_under_autograd(monkeypatch):
    """Under autograd the blocks of queries get fresh masks (no shared buffer): same output, and
    gradients reach the relative-position tables."""
    monkeypatch.setattr(image_encoder, "_MASK_BUDGET", 300)
    torch.manual_seed(0)
    attn = EncoderAttention(16, num_heads=2, use_rel_pos=True, input_size=(5, 7))
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)
        attn.rel_pos_w.normal_(0, 0.5)
    x = torch.randn(2, 5, 7, 16)
    with torch.no_grad():
        expected = attn(x)
    got = attn(x)
    torch.testing.assert_close(got.detach(), expected, atol=1e-6, rtol=0)
    got.square().sum().backward()
    assert attn.rel_pos_h.grad.abs().sum() > 0 and attn.rel_pos_w.grad.abs().sum() > 0


def test_get_rel_pos_offsets():
    table = torch.arange(9, dtype=torch.float32)[:, None]  # offsets -4..4 -> rows 0..8
    r = get_rel_pos(5, 5, table)[..., 0]
    assert r.shape == (5, 5)
    assert torch.equal(r, (torch.arange(5)[:, None] - torch.arange(5)[None, :] + 4).float())


def test_decoder_attention_with_attn_sim_uses_two_softmaxes():
    torch.manual_seed(0)
    attn = DecoderAttention(8, num_heads=2, downsample_rate=2).eval()
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    sim = torch.rand(1, 1, 1, 6)
    with torch.no_grad():
        got = attn(q, kv, kv, attn_sim=sim)
        qh = attn.q_proj(q).reshape(3, 4, 2, 2).transpose(1, 2)
        kh = attn.k_proj(kv).reshape(3, 6, 2, 2).transpose(1, 2)
        vh = attn.v_proj(kv).reshape(3, 6, 2, 2).transpose(1, 2)
        p = torch.softmax(torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(2), -1) + sim, -1)
        expected = attn.out_proj((p @ vh).transpose(1, 2).reshape(3, 4, 4))
        plain = attn(q, kv, kv)
        p0 = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(2), -1)
        expected_plain = attn.out_proj((p0 @ vh).transpose(1, 2).reshape(3, 4, 4))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(plain, expected_plain, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ backbone
def test_set_image_shapes_non_square(backbone):
    assert backbone.original_size == (300, 500)
    assert backbone.input_size == (614, 1024)
    assert backbone.features.shape == (1, 32, 64, 64) and backbone.features.dtype == torch.float32
    assert backbone.image_embedding_size == (64, 64) and backbone.embed_dim == 32


def test_portrait_image_input_size(small_model):
    bb = SamBackbone(small_model, name="small_sam", checkpoint_id="random")
    bb.set_image(gradient_scene(517, 333, seed=1))
    assert bb.input_size == (1024, 660)
    assert torch.isfinite(bb.features).all()


@pytest.mark.parametrize("multimask", [True, False])
def test_decode_and_postprocess_shapes(backbone, multimask):
    pts = torch.tensor([[[300.0, 120.0], [80.0, 250.0]]])
    out = backbone.decode(pts, torch.tensor([[1, 0]]), multimask_output=multimask)
    c = 3 if multimask else 1
    assert out.low_res_logits.shape == (1, c, 256, 256) and out.low_res_logits.dtype == torch.float32
    assert out.iou_predictions.shape == (1, c)
    high = backbone.postprocess(out.low_res_logits)
    assert high.shape == (1, c, 300, 500)


def test_sparse_tokens_follow_the_padding_rule(backbone):
    pts, labels = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]]), torch.tensor([[1, 0]])
    box = torch.tensor([[5.0, 5.0, 200.0, 150.0]])
    assert backbone.encode_prompts(pts, labels)[0].shape == (1, 3, 32)  # + padding point
    assert backbone.encode_prompts(pts, labels, box)[0].shape == (1, 4, 32)  # + 2 corners
    assert backbone.encode_prompts(None, None, box)[0].shape == (1, 2, 32)
    sparse, dense = backbone.encode_prompts(pts, labels)
    torch.testing.assert_close(sparse[0, 2], backbone.model.prompt_encoder.not_a_point_embed.weight[0])
    no_mask = backbone.model.prompt_encoder.no_mask_embed.weight[0]
    assert dense.shape == (1, 32, 64, 64) and torch.equal(dense[0, :, 7, 9], no_mask)


def test_prompts_are_scaled_to_the_resized_frame(backbone):
    coords = backbone.transform_coords(torch.tensor([[[500.0, 300.0]]]))
    torch.testing.assert_close(coords, torch.tensor([[[1024.0, 614.0]]]))
    boxes = backbone.transform_boxes(torch.tensor([[0.0, 0.0, 250.0, 150.0]]))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 512.0, 307.0]]))


def _separate_vs_batched(bb: SamBackbone, **batched) -> None:
    out = bb.decode(**batched, multimask_output=True)
    n = next(v.shape[0] for v in batched.values() if v is not None)
    for i in range(n):
        single = {k: None if v is None else v[i : i + 1] for k, v in batched.items()}
        one = bb.decode(**single, multimask_output=True)
        torch.testing.assert_close(out.low_res_logits[i : i + 1], one.low_res_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.iou_predictions[i : i + 1], one.iou_predictions, atol=1e-5, rtol=0)


def test_batched_points_equal_separate_calls(backbone):
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(4, 3, 2, generator=g) * torch.tensor([500.0, 300.0])
    labels = torch.randint(0, 2, (4, 3), generator=g)
    _separate_vs_batched(backbone, point_coords=pts, point_labels=labels, boxes=None, mask_input=None)


def test_batched_boxes_and_points_equal_separate_calls(backbone):
    boxes = torch.tensor([[10.0, 20.0, 200.0, 250.0], [150.0, 30.0, 480.0, 290.0], [0.0, 0.0, 499.0, 299.0]])
    pts = torch.tensor([[[100.0, 100.0]], [[300.0, 120.0]], [[250.5, 150.5]]])
    _separate_vs_batched(
        backbone, point_coords=pts, point_labels=torch.ones(3, 1, dtype=torch.int64), boxes=boxes
    )
    _separate_vs_batched(backbone, point_coords=None, point_labels=None, boxes=boxes)


def test_batched_mask_input_equals_separate_calls_and_changes_output(backbone):
    pts = torch.tensor([[[300.0, 120.0]], [[100.0, 220.0]]])
    labels = torch.ones(2, 1, dtype=torch.int64)
    first = backbone.decode(pts, labels, multimask_output=False)
    masks = first.low_res_logits * 20.0
    _separate_vs_batched(backbone, point_coords=pts, point_labels=labels, mask_input=masks)
    second = backbone.decode(pts, labels, mask_input=masks, multimask_output=False)
    assert not torch.allclose(second.low_res_logits, first.low_res_logits, atol=1e-4)


def test_hooks_broadcast_over_prompt_sets(backbone):
    pts = torch.tensor([[[300.0, 120.0], [50.0, 280.0]]]).repeat(2, 1, 1)
    labels = torch.tensor([[1, 0]]).repeat(2, 1)
    sim = torch.rand(1, 1, 1, 64 * 64, generator=torch.Generator().manual_seed(0))
    emb = 0.5 * torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(1))
    out = backbone.decode(pts, labels, multimask_output=False, attn_sim=sim, target_embedding=emb)
    torch.testing.assert_close(out.low_res_logits[0], out.low_res_logits[1], atol=1e-6, rtol=0)
    plain = backbone.decode(pts[:1], labels[:1], multimask_output=False)
    assert not torch.allclose(out.low_res_logits[:1], plain.low_res_logits, atol=1e-5)


def test_predict_returns_numpy_and_consistent_masks(backbone):
    masks, scores, low, high = backbone.predict(
        np.array([[300, 120]]), np.array([1]), box=np.array([200, 50, 420, 220])
    )
    assert masks.shape == (3, 300, 500) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, 256, 256)
    np.testing.assert_array_equal(masks, high.numpy() > 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_autocast_encoder_close_to_float32(small_model, dtype):
    image = gradient_scene(240, 320, seed=3)
    ref = SamBackbone(small_model, name="small_sam", checkpoint_id="random")
    ref.set_image(image)
    low = SamBackbone(small_model, name="small_sam", checkpoint_id="random", dtype=dtype)
    low.set_image(image)
    assert low.features.dtype == torch.float32 and torch.isfinite(low.features).all()
    cos = F.cosine_similarity(low.features.flatten(), ref.features.flatten(), dim=0)
    assert cos > 0.99
    out = low.decode(torch.tensor([[[100.0, 100.0]]]), torch.tensor([[1]]))
    assert out.low_res_logits.dtype == torch.float32 and torch.isfinite(out.low_res_logits).all()


# ------------------------------------------------------------------ geometry helpers
def test_mask_to_embedding_grid_geometry(backbone):
    ones = torch.ones(300, 500)
    grid = backbone.mask_to_embedding_grid(ones, pad_value=0.0)
    assert grid.shape == (64, 64) and grid.dtype == torch.float32
    # The resized image covers rows 0..613 of the 1024 frame: grid rows 0..37 are inside it.
    assert torch.allclose(grid[:38], torch.ones(38, 64))
    assert torch.equal(grid[39:], torch.zeros(25, 64))
    const = backbone.mask_to_embedding_grid(torch.full((300, 500), 3.0), pad_value=3.0)
    torch.testing.assert_close(const, torch.full((64, 64), 3.0))


def test_mask_to_embedding_grid_uint8_and_float_paths_agree(backbone):
    mask = np.zeros((300, 500), np.uint8)
    mask[60:200, 100:350] = 255
    from_uint8 = backbone.mask_to_embedding_grid(mask)
    from_float = backbone.mask_to_embedding_grid(torch.from_numpy(mask.astype(np.float32)))
    torch.testing.assert_close(from_uint8, from_float, atol=1.0, rtol=0)


def test_resize_uint8_matches_image_resize(backbone):
    image = gradient_scene(300, 500, seed=4)
    resized_image = backbone.transform.apply_image(image)
    np.testing.assert_array_equal(backbone.resize_uint8(image[..., 0]), resized_image[..., 0])
    assert backbone.resize_uint8(image).shape == (614, 1024, 3)


def test_postprocess_of_constant_map_is_constant(backbone):
    high = backbone.postprocess(torch.full((2, 1, 256, 256), 0.25))
    assert high.shape == (2, 1, 300, 500)
    torch.testing.assert_close(high, torch.full_like(high, 0.25))


# ------------------------------------------------------------------ errors
def test_errors_are_clear(small_model, backbone):
    fresh = SamBackbone(small_model, name="small_sam", checkpoint_id="random")
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.decode(torch.zeros(1, 1, 2), torch.ones(1, 1))
    with pytest.raises(InputError, match="uint8"):
        fresh.set_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        fresh.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="batch size"):
        backbone.decode(torch.zeros(2, 1, 2), torch.ones(2, 1), boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="point_labels"):
        backbone.decode(torch.zeros(1, 2, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match="mask_input"):
        backbone.decode(torch.zeros(1, 1, 2), torch.ones(1, 1), mask_input=torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="dtype"):
        SamBackbone(small_model, name="small_sam", checkpoint_id="random", dtype=torch.float64)


# ------------------------------------------------------------------ registry
def test_list_models():
    names = list_models()
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam_vit_t", "efficient_sam_vit_t"):
        assert name in names


def test_build_model_from_config_dict_and_file(tmp_path):
    torch.manual_seed(0)
    bb = build_model(tiny_sam_config(), checkpoint="none", dtype="bfloat16")
    assert (
        isinstance(bb, SamBackbone)
        and bb.name == "tiny_random_sam"
        and bb.checkpoint_id == "random:tiny_random_sam:0"
    )
    assert bb.dtype == torch.bfloat16 and not any(p.requires_grad for p in bb.model.parameters())
    # Random weights are reproducible for a seed, differ between seeds, and say which they are.
    again = build_model(tiny_sam_config(), checkpoint="none")
    other = build_model(tiny_sam_config(), checkpoint="none", seed=1)
    for k, v in bb.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k
    assert other.checkpoint_id == "random:tiny_random_sam:1"
    key = "mask_decoder.iou_token.weight"
    assert not torch.equal(other.model.state_dict()[key], bb.model.state_dict()[key])

    cfg = {k: v for k, v in tiny_sam_config().items() if k != "name"}
    path = tmp_path / "my_model.json"
    path.write_text(json.dumps(cfg))
    module = build_module(path)
    assert isinstance(module, Sam)
    assert build_model(str(path)).name == "my_model"


def test_build_model_loads_a_checkpoint(tmp_path):
    pytest.importorskip("persam.weights")
    torch.manual_seed(1)
    source = sam_from_config(tiny_sam_config())
    ckpt = tmp_path / "small.pth"
    torch.save(source.state_dict(), ckpt)
    bb = build_model(tiny_sam_config(), checkpoint=ckpt)
    assert bb.checkpoint_id == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    for k, v in source.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v), k


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        build_module("sam_vit_q")
    with pytest.raises(ValueError, match="not found"):
        build_module(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_module(bad)
    with pytest.raises(ValueError, match="unrecognised model config"):
        build_module({"foo": 1})
    with pytest.raises(ValueError, match="dtype"):
        build_model(tiny_sam_config(), dtype="int4")
    cfg = tiny_sam_config()
    cfg["image_encoder"]["class"] = "ResNet"
    with pytest.raises(ValueError, match="image_encoder class"):
        build_module(cfg)


def test_build_efficient_sam_config_dispatch():
    pytest.importorskip("persam.models.efficient_sam")
    pytest.importorskip("persam.backbones.efficient_sam")
    cfg = json.loads((fixture_dir("efficientsam") / "tiny_config.json").read_text())
    bb = build_model(cfg)
    assert type(bb).__name__ == "EfficientSamBackbone"


def test_tiny_vit_config_builds_a_mobile_sam():
    if importlib.util.find_spec("persam.models.tiny_vit") is None:
        pytest.skip("persam.models.tiny_vit (TinyViT image encoder) is not available")
    bb = build_model(tiny_mobile_sam_config(), checkpoint="none")
    bb.set_image(gradient_scene(64, 96))
    assert bb.features.shape == (1, 256, 64, 64)
    out = bb.decode(torch.tensor([[[40.0, 30.0]]]), torch.tensor([[1]]))
    assert out.low_res_logits.shape == (1, 3, 256, 256) and torch.isfinite(out.low_res_logits).all()
