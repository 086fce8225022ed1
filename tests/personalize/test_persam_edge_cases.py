"""Edge cases of the PerSAM building blocks: ties, boxes, reference-mask geometry, degenerate maps,
the PerSAM-F loss and engines, empty-stage fallbacks and the multi-instance search (with a
scripted decoder whose masks are known)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import astronaut_scene, coffee_image, fast_sam_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from persam.backbones.base import Backbone, DecoderOutput
from persam.personalize import MaskTooSmallError, finetune, learn, segment_concepts
from persam.personalize.boxes import mask_box, mask_boxes
from persam.personalize.cascade import cascaded_refinement
from persam.personalize.prior import location_prior, similarity_map, target_guided_attention
from persam.personalize.reference import reference_coverage_grid, reference_grid_mask, target_embedding
from persam.registry import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_model(fast_sam_config(), checkpoint="none")


@pytest.fixture(scope="module")
def image():
    return astronaut_scene()[0]  # 128 x 128


@pytest.fixture(scope="module")
def ref_mask():
    return astronaut_scene()[1]


# ---------------------------------------------------------------------------- location prior
def test_location_prior_xy_convention():
    sim = torch.zeros(3, 5)
    sim[2, 4] = 1.0
    sim[1, 0] = -1.0
    points, labels = location_prior(sim)
    assert points.tolist() == [[4, 2], [0, 1]] and labels.tolist() == [1, 0]
    assert points.dtype == np.int64 and labels.dtype == np.int64


def test_location_prior_ties_take_the_lowest_index():
    sim = torch.zeros(4, 6)
    points, _ = location_prior(sim)
    assert points.tolist() == [[0, 0], [0, 0]]
    sim[3, 1] = sim[1, 4] = sim[2, 2] = 5.0
    sim[3, 5] = sim[0, 3] = -5.0
    points, labels = location_prior(sim, topk=3)
    # Positives in decreasing similarity, ties in row-major order; one negative appended.
    assert points.tolist() == [[4, 1], [2, 2], [1, 3], [3, 0]]
    assert labels.tolist() == [1, 1, 1, 0]
    points, labels = location_prior(sim, topk=2, negative=False)
    assert points.tolist() == [[4, 1], [2, 2]] and labels.tolist() == [1, 1]


def test_location_prior_rejects_batches():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        location_prior(torch.zeros(2, 3, 4))


# ------------------------------------------------------------------------------------- boxes
@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_mask_box_matches_nonzero(mask):
    box = mask_box(mask)
    boxes, nonempty = mask_boxes(torch.from_numpy(mask)[None])
    if not mask.any():
        assert box is None and not bool(nonempty[0]) and boxes[0].tolist() == [-1, -1, -1, -1]
        return
    y, x = np.nonzero(mask)
    want = [x.min(), y.min(), x.max(), y.max()]
    assert box.tolist() == want and box.dtype == np.int64
    assert boxes[0].tolist() == want and bool(nonempty[0])


def test_mask_box_single_pixel_is_inclusive():
    m = np.zeros((5, 7), bool)
    m[3, 6] = True
    assert mask_box(m).tolist() == [6, 3, 6, 3]
    assert mask_box(torch.from_numpy(m)).tolist() == [6, 3, 6, 3]


# ------------------------------------------------------------------------ reference geometry
def test_reference_grid_mask_cell_geometry(model):
    # A 1024x1024 image is not resized: cell (i, j) samples pixels 16i+7 / 16i+8 (rows and cols).
    m = np.zeros((1024, 1024), bool)
    m[16 * 10 : 16 * 11, 16 * 20 : 16 * 21] = True  # exactly cell (10, 20)
    grid = reference_grid_mask(model, m)
    assert grid.shape == (64, 64) and grid.dtype == torch.bool
    assert torch.nonzero(grid).tolist() == [[10, 20]]
    half = np.zeros((1024, 1024), bool)
    half[16 * 10 + 8 : 16 * 11 + 8, 16 * 20 : 16 * 21] = True  # half of cells (10, 20) and (11, 20)
    with pytest.raises(MaskTooSmallError, match="reference mask too small"):
        reference_grid_mask(model, half)
    loose = reference_grid_mask(model, half, coverage_threshold=0.4)
    assert torch.nonzero(loose).tolist() == [[10, 20], [11, 20]]
    cov = reference_coverage_grid(model, half)
    assert cov[10, 20].item() == pytest.approx(0.5) and cov[11, 20].item() == pytest.approx(0.5)


def test_reference_grid_mask_never_selects_padding(model):
    # A 512 x 1024 image fills rows 0..511 of the padded frame; the rest is padding.
    full = np.ones((512, 1024), bool)
    grid = reference_grid_mask(model, full)
    assert grid[:32].all() and not grid[32:].any()
    # Even with the threshold at 0 the padding is never selected.
    assert not reference_grid_mask(model, full, coverage_threshold=0.0)[32:].any()


def test_reference_grid_mask_ignores_mask_encoding(model):
    rng = np.random.default_rng(0)
    m = rng.random((200, 300)) < 0.7
    a = reference_grid_mask(model, m)
    b = reference_grid_mask(model, m.astype(np.uint8))
    c = reference_grid_mask(model, m.astype(np.uint8) * 255)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_reference_grid_mask_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="mask_value"):
        reference_grid_mask(model, np.ones((8, 8), bool), mask_value=0)


# ------------------------------------------------------------------------ target embedding
def test_target_embedding_reductions():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 4, 3, 3, generator=g)
    grid = torch.zeros(2, 3, 3, dtype=torch.bool)
    grid[0, 0, 1] = grid[0, 2, 2] = grid[1, 1, 0] = True
    cells = np.stack([feats[0, :, 0, 1].numpy(), feats[0, :, 2, 2].numpy(), feats[1, :, 1, 0].numpy()])
    feat, emb = target_embedding(feats, grid)
    mean = cells.mean(0)
    np.testing.assert_allclose(emb.reshape(-1).numpy(), mean, atol=1e-6)
    np.testing.assert_allclose(feat.reshape(-1).numpy(), mean / np.linalg.norm(mean), atol=1e-6)
    assert feat.shape == (1, 4) and emb.shape == (1, 1, 4)
    feat2, emb2 = target_embedding(feats, grid, reduce="mean_max")
    mm = cells.max(0) / 2 + mean / 2
    np.testing.assert_allclose(feat2.reshape(-1).numpy(), mm / np.linalg.norm(mm), atol=1e-6)
    assert torch.equal(emb2, emb)  # the target embedding stays the raw mean
    # Lists of per-reference tensors are pooled the same way.
    feat3, _ = target_embedding([feats[:1], feats[1:]], [grid[0], grid[1]])
    assert torch.equal(feat3, feat)


def test_target_embedding_errors():
    feats = torch.zeros(1, 4, 3, 3)
    with pytest.raises(MaskTooSmallError):
        target_embedding(feats, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="disagree"):
        target_embedding(feats, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduce"):
        target_embedding(feats, torch.ones(3, 3, dtype=torch.bool), reduce="median")


# ------------------------------------------------------------------------- attention / sim
def test_target_guided_attention_shapes_and_constant_map():
    sim = torch.linspace(-1, 1, 50 * 70).reshape(50, 70)
    attn = target_guided_attention(sim)
    assert attn.shape == (1, 1, 1, 4096)
    assert (attn > 0).all() and (attn < 1).all()
    stacked = target_guided_attention(torch.stack([sim, -sim]))
    assert stacked.shape == (2, 1, 1, 4096)
    assert torch.equal(stacked[:1], attn)
    flat = target_guided_attention(torch.full((30, 40), 0.3))
    assert torch.equal(flat, torch.full((1, 1, 1, 4096), 0.5))


def test_target_guided_attention_single_pixel_map_is_uniform_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no std() degrees-of-freedom warning
        one = target_guided_attention(torch.full((1, 1), 0.7))
        stacked = target_guided_attention(torch.tensor([[[0.7]], [[-0.2]]]))
    assert torch.equal(one, torch.full((1, 1, 1, 4096), 0.5))
    assert torch.equal(stacked, torch.full((2, 1, 1, 4096), 0.5))


def test_aligned_attention_for_non_square_images(model):
    img = coffee_image()  # 100 x 150: fills 683 of 1024 rows
    model.set_image(img)
    feat = torch.nn.functional.normalize(model.features[0, :, 10, 10], dim=0)[None]
    grid, sim = similarity_map(model, feat)
    assert grid.shape == (1, 1, 64, 64) and sim.shape == img.shape[:2]
    # Cosine similarity of the chosen cell with itself is 1 and it is the grid maximum.
    assert grid[0, 0, 10, 10].item() == pytest.approx(1.0, abs=1e-5)
    straight = target_guided_attention(sim).reshape(64, 64)
    aligned = target_guided_attention(sim, backbone=model).reshape(64, 64)
    std = (sim - sim.mean()) / torch.std(sim)
    floor = torch.sigmoid(std.min())
    # Cells over the padding (rows >= 43) get the bias of the least similar pixel ...
    assert torch.allclose(aligned[43:], floor.expand(21, 64))
    # ... while the straight resize stretches the image over the whole grid.
    assert not torch.allclose(straight[43:], floor.expand(21, 64))


# ---------------------------------------------------------------------------- PerSAM-F loss
def test_loss_values_at_zero_logits():
    t = torch.zeros(1, 10)
    t[0, :4] = 1
    z = torch.zeros(1, 10)
    # sigmoid(0) = 1/2: dice = 1 - (2*2 + 1) / (5 + 4 + 1); focal = alpha_t * log 2 / 4.
    assert finetune.dice_loss(z, t).item() == pytest.approx(1 - 5 / 10)
    focal = (4 * 0.25 + 6 * 0.75) * np.log(2) / 4 / 10
    assert finetune.sigmoid_focal_loss(z, t).item() == pytest.approx(focal, rel=1e-6)


@pytest.mark.parametrize("scale", [0.3, 8.0, 60.0])
def test_closed_form_loss_matches_autograd(scale):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, 50, generator=g) * scale
    target = torch.rand(40, 50, generator=g) < 0.3
    weights = torch.tensor([0.2, 0.5, 0.3])
    closed = finetune._ClosedFormLoss(logits, target)
    dice, focal, grad = closed(weights)
    w = weights.clone().double().requires_grad_(True)
    z = (logits.double().reshape(3, -1) * w[:, None]).sum(0)[None]
    tt = target.double().reshape(1, -1)
    d = finetune.dice_loss(z, tt)
    f = finetune.sigmoid_focal_loss(z, tt)
    (d + f).backward()
    assert np.isfinite([dice, focal]).all() and torch.isfinite(grad).all()
    assert dice == pytest.approx(d.item(), abs=1e-6)
    assert focal == pytest.approx(f.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(grad.double(), w.grad, rtol=1e-4, atol=1e-7)


def test_fit_engines_agree():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 30, 40, generator=g)
    target = torch.rand(30, 40, generator=g) < 0.4
    fast = finetune.fit_mask_weights([logits], [target], steps=200)
    auto = finetune.fit_mask_weights([logits], [target], steps=200, engine="autograd")
    naive = finetune.fit_mask_weights(lambda: logits.clone(), [target], steps=200, engine="naive")
    assert torch.equal(auto.weights, naive.weights)
    assert np.array_equal(auto.loss_total, naive.loss_total)
    assert torch.allclose(fast.weights, auto.weights, atol=1e-6)
    np.testing.assert_allclose(fast.loss_total, auto.loss_total, atol=1e-6)
    assert fast.weights_history[0].tolist() == pytest.approx([1 / 3] * 3)
    assert fast.weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert fast.lr_history[0] == 1e-3 and fast.lr_history[-1] < 1e-6
    assert fast.loss_total[-1] < fast.loss_total[0]


def test_fit_argument_errors():
    logits, target = torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="engine"):
        finetune.fit_mask_weights([logits], [target], engine="magic")
    with pytest.raises(ValueError, match="steps"):
        finetune.fit_mask_weights([logits], [target], steps=0)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        finetune.fit_mask_weights([torch.zeros(3, 5, 4)], [target])
    with pytest.raises(ValueError, match="callable"):
        finetune.fit_mask_weights([logits], [target], engine="naive")
    with pytest.raises(ValueError, match="precomputed"):
        finetune.fit_mask_weights(lambda: logits, [target])


# --------------------------------------------------------------------------- batched cascade
def test_batched_cascade_equals_single(model, image):
    model.set_image(image)
    pts = torch.tensor([[[30, 40], [120, 5]], [[90, 100], [0, 0]]])
    labels = torch.tensor([[1, 0], [1, 0]])
    attn = torch.rand(2, 1, 1, 4096, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(1))
    both = cascaded_refinement(model, pts, labels, attn, emb)
    for b in range(2):
        one = cascaded_refinement(model, pts[b : b + 1], labels[b : b + 1], attn[b : b + 1], emb[b : b + 1])
        for s_both, s_one in zip(both.stages, one.stages, strict=True):
            assert torch.allclose(s_both.scores[b], s_one.scores[0], atol=1e-5)
            assert torch.allclose(s_both.low_res_logits[b], s_one.low_res_logits[0], atol=1e-5)
            assert int(s_both.best_idx[b]) == int(s_one.best_idx[0])
        assert int((both.masks[b] != one.masks[0]).sum()) <= 5


# ----------------------------------------------------------------------- scripted decoder
class ScriptedBackbone(Backbone):
    """Real features and geometry of ``inner``; the decoder draws a disk of ``radius`` pixels
    around the first positive point (or ``center``), with scores ``score + (0, .01, -.01)``, and
    all-negative logits at the call indices in ``empty_calls`` (for the prompt sets ``items``)."""

    def __init__(self, inner, radius=15.0, score=0.5, empty_calls=(), items=None, center=None):
        self.inner, self.radius, self.score = inner, radius, score
        self.empty_calls, self.items, self.center = set(empty_calls), items, center
        self.name, self.model, self.checkpoint_id = inner.name, inner.model, inner.checkpoint_id
        self.calls: list[int] = []

    def set_image(self, image):
        self.calls.clear()
        self.inner.set_image(image)

    @property
    def features(self):
        return self.inner.features

    @property
    def original_size(self):
        return self.inner.original_size

    def postprocess(self, low_res):
        return self.inner.postprocess(low_res)

    def mask_to_embedding_grid(self, mask, pad_value=0.0):
        return self.inner.mask_to_embedding_grid(mask, pad_value)

    def decode(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True, **hooks):
        call = len(self.calls)
        b = point_coords.shape[0]
        self.calls.append(b)
        (h, w), (hi, wi) = self.inner.original_size, self.inner.input_size
        centres = (torch.arange(256, dtype=torch.float32) * 4 + 2.0) * (w / wi)  # original pixels
        rows = (torch.arange(256, dtype=torch.float32) * 4 + 2.0) * (h / hi)
        low = []
        for i in range(b):
            if self.center is not None:
                cx, cy = self.center
            else:
                pos = point_coords[i][point_labels[i] == 1][0].float()
                cx, cy = float(pos[0]), float(pos[1])
            d = ((centres[None, :] - cx) ** 2 + (rows[:, None] - cy) ** 2).sqrt()
            logit = (self.radius - d) / self.radius
            if call in self.empty_calls and (self.items is None or i in self.items):
                logit = torch.full_like(logit, -1.0)
            low.append(logit)
        c = 3 if multimask_output else 1
        low_t = torch.stack(low)[:, None].expand(b, c, 256, 256).contiguous()
        iou = (self.score + torch.tensor([0.0, 0.01, -0.01])[:c]).expand(b, c).contiguous()
        return DecoderOutput(low_t, iou)


@pytest.fixture(scope="module")
def learned(model, image, ref_mask):
    return {
        "persam": learn(model, image, ref_mask),
        "persam_f": learn(model, image, ref_mask, method="persam_f", steps=30),
    }


def _run(model, image, concept, **kw):
    scripted = ScriptedBackbone(model, **kw)
    res = concept.bind(scripted).segment(image, return_stages=True)
    return res, scripted.calls


def test_full_cascade_with_scripted_decoder(model, image, learned):
    res, calls = _run(model, image, learned["persam"])
    assert calls == [1, 1, 1] and res.final_stage == "refine2" and res.found
    x, y = res.points[0]
    yy, xx = np.nonzero(res.mask)
    assert res.mask[y, x] and np.hypot(xx - x, yy - y).max() <= 16
    assert res.score == pytest.approx(0.51)  # best of the three scores


def test_empty_refinement1_keeps_step1(model, image, learned):
    res, calls = _run(model, image, learned["persam"], empty_calls={1})
    assert calls == [1, 1]  # refinement 2 needs a box, so it is skipped
    assert res.final_stage == "step1" and res.found and res.box is None
    assert np.array_equal(res.mask, res.stages[0].mask) and res.mask.any()
    assert res.score == pytest.approx(0.5)


def test_empty_refinement2_keeps_refinement1(model, image, learned):
    res, calls = _run(model, image, learned["persam"], empty_calls={2})
    assert calls == [1, 1, 1]
    assert res.final_stage == "refine1" and res.found and res.box is None
    assert np.array_equal(res.mask, res.stages[1].mask)


def test_all_stages_empty_is_not_found(model, image, learned):
    res, calls = _run(model, image, learned["persam"], empty_calls={0, 1, 2})
    assert calls == [1, 1]
    assert not res.found and not res.mask.any()
    assert res.final_stage == "refine1" and res.score == pytest.approx(0.51)


def test_persam_f_empty_blend_is_not_found(model, image, learned):
    res, calls = _run(model, image, learned["persam_f"], empty_calls={0})
    assert calls == [1]
    assert not res.found and res.final_stage == "weighted" and not res.mask.any()


def test_persam_f_empty_refinement2_keeps_refinement1(model, image, learned):
    res, calls = _run(model, image, learned["persam_f"], empty_calls={2})
    assert calls == [1, 1, 1] and res.final_stage == "refine1" and res.found
    # Refinement 1 was prompted with the box of the blended mask.
    assert res.box.tolist() == mask_box(res.stages[0].mask).tolist()


def test_fallback_is_per_prompt_set(model, image, learned):
    scripted = ScriptedBackbone(model, empty_calls={1}, items={1})
    a = learned["persam"].bind(scripted)
    results = segment_concepts(scripted, image, [a, a])
    assert scripted.calls == [2, 2, 1]  # refinement 2 runs for the first prompt set only
    assert [r.final_stage for r in results] == ["refine2", "step1"]
    assert all(r.found for r in results)


# ------------------------------------------------------------------------- multi-instance
def test_instances_are_searched_outside_earlier_ones(model, image, learned):
    scripted = ScriptedBackbone(model, radius=12.0)
    res = learned["persam"].bind(scripted).segment(image, max_instances=4, return_similarity=True)
    assert 2 <= len(res.instances) <= 4
    sim = res.similarity.copy()
    union = np.zeros_like(res.mask)
    for inst in res.instances:
        x, y = inst.points[0]
        assert sim[y, x] == sim.max() and not union[y, x]
        union |= inst.mask
        sim[inst.mask] = res.similarity.min()
    assert np.array_equal(res.mask, union)


def test_duplicate_instance_ends_the_search(model, image, learned):
    scripted = ScriptedBackbone(model, center=(64.0, 64.0), radius=20.0)
    res = learned["persam"].bind(scripted).segment(image, max_instances=3)
    assert len(res.instances) == 1 and scripted.calls == [1, 1, 1, 1, 1, 1]


def test_fully_suppressed_map_ends_the_search(model, image, learned):
    scripted = ScriptedBackbone(model, radius=500.0)  # the first instance covers the image
    res = learned["persam"].bind(scripted).segment(image, max_instances=3)
    assert len(res.instances) == 1 and res.mask.all()
    assert scripted.calls == [1, 1, 1]


def test_instance_below_threshold_ends_the_search(model, image, learned):
    scripted = ScriptedBackbone(model, radius=12.0, score=0.3)
    res = learned["persam"].bind(scripted).segment(image, max_instances=3, score_threshold=0.305)
    assert (
        res.found and len(res.instances) >= 2 and all(i.score == pytest.approx(0.31) for i in res.instances)
    )
    res = learned["persam"].bind(scripted).segment(image, max_instances=3, score_threshold=0.4)
    assert not res.found and res.instances == [] and res.mask.any()
    with pytest.raises(ValueError, match="max_instances"):
        learned["persam"].bind(scripted).segment(image, max_instances=0)
