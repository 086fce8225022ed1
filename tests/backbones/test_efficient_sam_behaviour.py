"""EfficientSAM backbone behaviour on a small random model: shapes and dtypes (float32 and bfloat16
autocast), batching, prompt conventions, the PerSAM hooks and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from persam.backbones.efficient_sam import EfficientSamBackbone
from persam.io import InputError
from persam.models.efficient_sam import (
    EfficientSam,
    EfficientSamMaskDecoder,
    EfficientSamTwoWayAttentionBlock,
    EfficientSamTwoWayTransformer,
    efficient_sam_from_config,
)
from persam.models.mask_decoder import MaskDecoder
from persam.models.transformer import TwoWayAttentionBlock, TwoWayTransformer
from persam.registry import tiny_efficient_sam_config

CONFIG = tiny_efficient_sam_config()["config"]
H, W = 300, 450


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_model() -> EfficientSam:
    torch.manual_seed(0)
    m = efficient_sam_from_config(CONFIG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # O(1) activations and mixed-sign logits (the default init is too tame)
        for name, p in m.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if name.endswith("bias"):
                p.copy_(0.1 * z)
            elif p.ndim == 1:  # norm scales
                p.copy_(1 + 0.2 * z)
            elif "embed" in name or "token" in name or p.ndim == 3:  # embeddings, pos_embed
                p.copy_(0.5 * z)
            else:
                p.copy_(z / p[0].numel() ** 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:H, :W])


@pytest.fixture(scope="module")
def model() -> EfficientSam:
    return _random_model()


@pytest.fixture(scope="module")
def backbone(model, image) -> EfficientSamBackbone:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    bb = EfficientSamBackbone(model, name="efficient_sam_random", checkpoint_id="random")
    bb.set_image(image)
    torch.set_num_threads(n)
    return bb


POINTS = torch.tensor(
    [[[200.0, 120.0], [60.0, 250.0]], [[400.0, 30.0], [10.0, 10.0]], [[225.0, 150.0], [-1, -1]]]
)
LABELS = torch.tensor([[1, 0], [1, 1], [1, -1]])
BOXES = torch.tensor([[150.0, 60.0, 300.0, 280.0], [0.0, 0.0, 449.0, 299.0], [20.0, 30.0, 120.0, 90.0]])


def test_shapes_and_dtypes_float32(backbone, image):
    assert backbone.features.shape == (1, 16, 64, 64) and backbone.features.dtype == torch.float32
    assert backbone.original_size == (H, W)
    assert backbone.image_embedding_size == (64, 64) and backbone.embed_dim == 16
    out = backbone.decode(POINTS, LABELS, boxes=BOXES)
    assert out.low_res_logits.shape == (3, 3, 256, 256) and out.iou_predictions.shape == (3, 3)
    assert out.low_res_logits.dtype == torch.float32 and out.iou_predictions.dtype == torch.float32
    single = backbone.decode(POINTS, LABELS, multimask_output=False)
    assert single.low_res_logits.shape == (3, 1, 256, 256) and single.iou_predictions.shape == (3, 1)
    assert backbone.postprocess(out.low_res_logits).shape == (3, 3, H, W)
    masks, scores, low, high = backbone.predict(
        np.array([[200, 120]]), np.array([1]), box=np.array([150, 60, 300, 280])
    )
    assert masks.shape == (3, H, W) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, 256, 256) and high.shape == (3, H, W)
    assert np.array_equal(masks, (high >= 0).numpy())
    assert 0 < masks.mean() < 1  # a random model still gives mixed masks


def test_bfloat16_autocast_encoder(model, image, backbone):
    bb16 = EfficientSamBackbone(
        model, name="efficient_sam_random", checkpoint_id="random", dtype=torch.bfloat16
    )
    bb16.set_image(image)
    feats = bb16.features
    assert feats.dtype == torch.float32 and feats.shape == backbone.features.shape
    # bf16 keeps ~3 significant digits: close to float32, but not identical.
    err = (feats - backbone.features).abs().max().item()
    assert 0 < err < 0.1 * backbone.features.abs().max().item()
    out = bb16.decode(POINTS, LABELS, boxes=BOXES)
    assert out.low_res_logits.dtype == torch.float32 and torch.isfinite(out.low_res_logits).all()
    assert out.low_res_logits.shape == (3, 3, 256, 256)
    with pytest.raises(ValueError, match="dtype"):
        EfficientSamBackbone(model, name="x", checkpoint_id="x", dtype=torch.float64)


def test_batched_decode_equals_separate_decodes(backbone):
    batched = backbone.decode(POINTS, LABELS, boxes=BOXES)
    for i in range(len(POINTS)):
        one = backbone.decode(POINTS[i : i + 1], LABELS[i : i + 1], boxes=BOXES[i : i + 1])
        torch.testing.assert_close(one.low_res_logits[0], batched.low_res_logits[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.iou_predictions[0], batched.iou_predictions[i], atol=1e-5, rtol=1e-5)


def test_hooks_change_outputs_and_default_off_is_plain(backbone, model):
    plain_low, plain_iou = model.predict_masks(backbone.features, POINTS[None], LABELS[None], True, H, W)
    off = backbone.decode(POINTS, LABELS)
    assert torch.equal(off.low_res_logits, plain_low[0]) and torch.equal(off.iou_predictions, plain_iou[0])

    g = torch.Generator().manual_seed(3)
    attn_sim = torch.sigmoid(torch.randn(1, 1, 1, 64 * 64, generator=g) * 3)
    target = torch.randn(1, 1, 16, generator=g)
    with_sim = backbone.decode(POINTS, LABELS, attn_sim=attn_sim)
    with_target = backbone.decode(POINTS, LABELS, target_embedding=target)
    for out in (with_sim, with_target):
        assert (out.low_res_logits - off.low_res_logits).abs().max() > 1e-3
        assert (out.iou_predictions - off.iou_predictions).abs().max() > 1e-4
    # A zero target embedding is a no-op; per-set hooks broadcast like shared ones.
    zero = backbone.decode(POINTS, LABELS, target_embedding=torch.zeros(1, 1, 16))
    assert torch.equal(zero.low_res_logits, off.low_res_logits)
    both = backbone.decode(POINTS, LABELS, attn_sim=attn_sim, target_embedding=target)
    per_set = backbone.decode(
        POINTS, LABELS, attn_sim=attn_sim.expand(3, -1, -1, -1), target_embedding=target.expand(3, -1, -1)
    )
    torch.testing.assert_close(per_set.low_res_logits, both.low_res_logits, atol=1e-6, rtol=0)


def test_hooks_are_inherited_from_sam():
    # The PerSAM semantics (attn_sim re-softmax, aliased target embedding) live in one place.
    assert EfficientSamTwoWayTransformer.forward is TwoWayTransformer.forward
    assert EfficientSamTwoWayAttentionBlock.forward is TwoWayAttentionBlock.forward
    cross = EfficientSamTwoWayAttentionBlock._cross_attention_token_to_image
    assert cross is TwoWayAttentionBlock._cross_attention_token_to_image
    assert EfficientSamMaskDecoder.predict_masks is MaskDecoder.predict_masks


def test_box_is_two_corner_points_before_the_points(backbone):
    pts, lbl = POINTS[:1], LABELS[:1]
    corners = BOXES[:1].reshape(1, 2, 2)
    explicit = backbone.decode(torch.cat([corners, pts], 1), torch.cat([torch.tensor([[2, 3]]), lbl], 1))
    assert torch.equal(backbone.decode(pts, lbl, boxes=BOXES[:1]).low_res_logits, explicit.low_res_logits)
    # With more than 6 prompts the box survives; the last points are dropped.
    many = torch.tensor([[[float(30 * i), float(20 * i)] for i in range(1, 7)]])
    many_lbl = torch.ones(1, 6, dtype=torch.int64)
    kept = backbone.decode(
        torch.cat([corners, many[:, :4]], 1), torch.cat([torch.tensor([[2, 3]]), many_lbl[:, :4]], 1)
    )
    assert torch.equal(backbone.decode(many, many_lbl, boxes=BOXES[:1]).low_res_logits, kept.low_res_logits)


def test_point_conventions(backbone):
    # Any negative coordinate is the padding value -1 on its own axis.
    a = backbone.decode(torch.tensor([[[-3.0, 100.0]]]), torch.tensor([[1]]))
    b = backbone.decode(torch.tensor([[[-400.0, 100.0]]]), torch.tensor([[1]]))
    assert torch.equal(a.low_res_logits, b.low_res_logits)
    # Explicit (-1, -1) / -1 padding is the same as none.
    c = backbone.decode(torch.tensor([[[200.0, 120.0], [-1.0, -1.0]]]), torch.tensor([[1, -1]]))
    d = backbone.decode(torch.tensor([[[200.0, 120.0]]]), torch.tensor([[1]]))
    torch.testing.assert_close(c.low_res_logits, d.low_res_logits, atol=1e-6, rtol=0)
    # mask_input is accepted and ignored; no prompt at all is all padding and still decodes.
    e = backbone.decode(POINTS, LABELS, mask_input=torch.randn(3, 1, 256, 256))
    assert torch.equal(e.low_res_logits, backbone.decode(POINTS, LABELS).low_res_logits)
    assert backbone.decode(None, None).low_res_logits.shape == (1, 3, 256, 256)


def test_mask_to_embedding_grid_geometry(backbone):
    left = torch.zeros(H, W)
    left[:, : W // 2] = 1.0  # x < 225 stretches to x < 512 of the 1024 frame: grid columns 0..31
    grid = backbone.mask_to_embedding_grid(left, pad_value=7.0)
    assert grid.shape == (64, 64) and grid.dtype == torch.float32
    assert torch.all(grid[:, :31] == 1) and torch.all(grid[:, 33:] == 0)
    const = backbone.mask_to_embedding_grid(np.full((H, W), 0.25, dtype=np.float32))
    torch.testing.assert_close(const, torch.full((64, 64), 0.25))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        backbone.mask_to_embedding_grid(torch.zeros(1, H, W))


def test_binarize_is_inclusive_at_zero(backbone):
    logits = torch.tensor([-1e-3, 0.0, 1e-3])
    assert backbone.binarize(logits).tolist() == [False, True, True]
    assert backbone.mask_threshold == 0.0


def test_bad_inputs(model, image, backbone):
    fresh = EfficientSamBackbone(model, name="x", checkpoint_id="x")
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.decode(POINTS, LABELS)
    with pytest.raises(InputError, match="uint8"):
        fresh.set_image(image.astype(np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        fresh.set_image(image[..., 0])
    with pytest.raises(ValueError, match="point_labels"):
        backbone.decode(POINTS, LABELS[:, :1])
    with pytest.raises(ValueError, match="boxes"):
        backbone.decode(POINTS, LABELS, boxes=BOXES[:2])
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        backbone.decode(None, None, boxes=torch.zeros(4))
    with pytest.raises(ValueError, match="1024x1024"):
        model.image_encoder(torch.zeros(1, 3, 512, 512))


def test_config_formats():
    with torch.device("meta"):
        nested = efficient_sam_from_config({"config": CONFIG})
        flat = efficient_sam_from_config(CONFIG)
    assert [(k, v.shape) for k, v in nested.state_dict().items()] == [
        (k, v.shape) for k, v in flat.state_dict().items()
    ]
    with pytest.raises(ValueError, match="unknown setting"):
        efficient_sam_from_config({"encoder_dim": 8})
    with pytest.raises(ValueError, match="activation"):
        efficient_sam_from_config({**CONFIG, "activation": "swish"})
