"""The public PerSAM API (learn / Concept / segment / segment_concepts / mask_from_prompts / save and
load) on self-made data with a small random SAM."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from helpers import astronaut_scene, coffee_image, fast_sam_config
from PIL import Image

import persam
from persam.io import InputError
from persam.methods import normalize_method
from persam.personalize import (
    Concept,
    ConceptMismatchError,
    MaskTooSmallError,
    SegmentationResult,
    learn,
    mask_from_prompts,
    segment_concepts,
)
from persam.registry import build_model

STEPS = 60  # PerSAM-F steps in these tests (the algorithm is the same for any count)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_model(fast_sam_config(), checkpoint="none")


@pytest.fixture(scope="module")
def other_model():
    return build_model(fast_sam_config(), checkpoint="none", seed=1)


@pytest.fixture(scope="module")
def scene():
    """The astronaut (128x128) with a rectangular reference region, and the coffee cup image
    (non-square, 100x150) as a second test image."""
    return (*astronaut_scene(), coffee_image())


@pytest.fixture(scope="module")
def concepts(model, scene):
    img, mask, _ = scene
    return {
        "persam": learn(model, img, mask, name="astronaut"),
        "persam_f": learn(model, img, mask, method="persam_f", steps=STEPS, name="astronaut_f"),
    }


# ------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_learn_and_segment(model, scene, concepts, method):
    img, _, other = scene
    concept = concepts[method]
    assert concept.method == method
    assert concept.target_feat.shape == (1, 32)
    assert torch.allclose(concept.target_feat.norm(), torch.tensor(1.0))
    assert concept.target_embedding.shape == (1, 1, 32)
    assert (concept.mask_weights is None) == (method == "persam")
    assert concept.backbone_name == model.name and concept.checkpoint_id == model.checkpoint_id
    for image in (img, other):
        res = concept.segment(image)
        assert isinstance(res, SegmentationResult)
        assert res.mask.dtype == bool and res.mask.shape == image.shape[:2]
        assert res.found == bool(res.mask.any())
        assert isinstance(res.score, float)
        n = 2 if method == "persam" else 1
        assert res.points.shape == (n, 2) and res.points.dtype == np.int64
        assert res.point_labels.tolist() == ([1, 0] if method == "persam" else [1])
        h, w = image.shape[:2]
        assert (0 <= res.points[:, 0]).all() and (res.points[:, 0] < w).all()
        assert (0 <= res.points[:, 1]).all() and (res.points[:, 1] < h).all()
        assert res.final_stage == "refine2"
        assert res.box is not None and res.box.shape == (4,)
        assert res.instances == [] and res.stages is None and res.similarity is None


def test_segment_accepts_paths(model, scene, concepts, tmp_path):
    img, _, _ = scene
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    a = concepts["persam"].segment(img)
    b = concepts["persam"].segment(path)
    assert np.array_equal(a.mask, b.mask) and a.score == b.score


def test_positive_point_is_the_similarity_maximum(concepts, scene):
    img, _, _ = scene
    res = concepts["persam"].segment(img, return_similarity=True, return_stages=True)
    sim = res.similarity
    assert sim.shape == img.shape[:2] and sim.dtype == np.float32
    x, y = res.points[0]
    assert sim[y, x] == sim.max()
    x, y = res.points[1]
    assert sim[y, x] == sim.min()
    assert [s.name for s in res.stages] == ["step1", "refine1", "refine2"]
    assert res.stages[0].scores.shape == (1,) and res.stages[1].scores.shape == (3,)
    assert res.stages[1].best_idx == int(np.argmax(res.stages[1].scores))
    assert np.array_equal(res.stages[-1].mask, res.mask)
    assert res.stages[-1].box_prompt.tolist() == res.box.tolist()
    # The refinement-2 box is the bounding box of the refinement-1 mask.
    ys, xs = np.nonzero(res.stages[1].mask)
    assert res.box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_top_level_exports():
    assert persam.learn is learn
    assert persam.Concept is Concept
    assert persam.SegmentationResult is SegmentationResult


# -------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_save_load_round_trip(model, scene, concepts, method, tmp_path):
    img, _, other = scene
    concept = concepts[method]
    path = tmp_path / "concept.npz"
    concept.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concept.npz"]  # no temporary left over
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["metadata"]).decode())
        assert z["target_feat"].dtype == np.float32
    assert meta["format"] == "persam-concept" and meta["format_version"] == 1
    assert meta["method"] == method and meta["backbone"] == model.name
    assert meta["checkpoint_id"] == model.checkpoint_id and meta["name"] == concept.name
    loaded = Concept.load(path, model)
    assert torch.equal(loaded.target_feat, concept.target_feat)
    assert torch.equal(loaded.target_embedding, concept.target_embedding)
    if method == "persam_f":
        assert torch.equal(loaded.mask_weights, concept.mask_weights)
    assert loaded.options == json.loads(json.dumps(concept.options))
    a, b = concept.segment(other), loaded.segment(other)
    assert np.array_equal(a.mask, b.mask) and a.score == b.score
    unbound = Concept.load(path)
    assert unbound.model is None
    with pytest.raises(RuntimeError, match="no model"):
        unbound.segment(img)


def test_load_refuses_another_backbone(concepts, other_model, tmp_path):
    path = tmp_path / "c.npz"
    concepts["persam"].save(path)
    other_model.checkpoint_id = "another-checkpoint"
    try:
        with pytest.raises(ConceptMismatchError, match="learned with backbone"):
            Concept.load(path, other_model)
        with pytest.raises(ConceptMismatchError):
            segment_concepts(other_model, np.zeros((32, 32, 3), np.uint8), [concepts["persam"]])
    finally:
        other_model.checkpoint_id = "random"


def test_load_rejects_bad_files(model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        Concept.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match=r"junk.npz: not a persam concept file \(not an .npz archive\)$"):
        Concept.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match=r"other.npz: not a persam concept file \(no persam metadata\)$"):
        Concept.load(other)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")  # a zip archive too
    with pytest.raises(InputError, match=r"model.pt: not a persam concept file \(no persam metadata\)$"):
        Concept.load(tmp_path / "model.pt")
    no_feat = tmp_path / "no_feat.npz"
    np.savez(no_feat, metadata=np.frombuffer(b'{"format": "persam-concept", "format_version": 1}', np.uint8))
    with pytest.raises(InputError, match="no_feat.npz: not a valid persam concept file"):
        Concept.load(no_feat)
    # A pickled object array must be refused, not executed.
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, metadata=np.array([{"format": "persam-concept"}], dtype=object))
    with pytest.raises(InputError, match=r"pickled.npz: not a persam concept file \(it holds pickled"):
        Concept.load(pickled)
    assert zipfile.is_zipfile(pickled)
    pickle_file = tmp_path / "garbage.pt"
    # The legacy torch format: a plain pickle stream.
    torch.save({"weight": torch.zeros(2)}, pickle_file, _use_new_zipfile_serialization=False)
    for path in (junk, other, pickled, pickle_file):
        with pytest.raises(InputError) as e:
            Concept.load(path, model)
        # One line, without numpy's advice to allow pickles.
        assert "\n" not in str(e.value) and "allow_pickle" not in str(e.value)
        assert str(e.value).startswith(f"{path}: ")


def test_method_spellings_are_normalised(model, scene, concepts):
    img, mask, _ = scene
    assert {normalize_method(m) for m in ("persam", "PerSAM", " PERSAM ")} == {"persam"}
    assert {normalize_method(m) for m in ("persam-f", "PerSAM-F", "persam_f", "PerSAM_F")} == {"persam_f"}
    for spelling in ("persam-f", "PerSAM-F"):
        concept = learn(model, img, mask, method=spelling, steps=STEPS)
        assert concept.method == "persam_f"
        assert torch.equal(concept.mask_weights, concepts["persam_f"].mask_weights)
    assert learn(model, img, mask, method="PerSAM").method == "persam"


# ---------------------------------------------------------------------------------- few-shot
@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_few_shot_with_one_reference_is_one_shot(model, scene, method):
    img, mask, _ = scene
    one = learn(model, img, mask, method=method, steps=STEPS)
    few = learn(model, [img], [mask], method=method, steps=STEPS)
    assert torch.equal(one.target_feat, few.target_feat)
    assert torch.equal(one.target_embedding, few.target_embedding)
    if method == "persam_f":
        assert torch.equal(one.mask_weights, few.mask_weights)
        assert np.array_equal(one.fit.loss_total, few.fit.loss_total)


def test_few_shot_pools_reference_cells(model, scene):
    img, mask, other = scene
    mask_b = np.zeros(other.shape[:2], bool)
    mask_b[30:90, 50:120] = True
    a = learn(model, img, mask)
    b = learn(model, other, mask_b)
    both = learn(model, [img, other], [mask, mask_b])
    n_a = a.options["num_target_locations"][0]
    n_b = b.options["num_target_locations"][0]
    assert both.options["num_target_locations"] == [n_a, n_b]
    # The pooled mean is the cell-count-weighted mean of the two one-shot means.
    pooled = (n_a * a.target_embedding + n_b * b.target_embedding) / (n_a + n_b)
    assert torch.allclose(both.target_embedding, pooled, atol=1e-5)
    assert torch.allclose(both.target_feat, pooled.reshape(1, -1) / pooled.norm(), atol=1e-5)


def test_few_shot_duplicated_reference_matches_one_shot(model, scene):
    img, mask, _ = scene
    one = learn(model, img, mask, method="persam_f", steps=STEPS)
    two = learn(model, [img, img], [mask, mask], method="persam_f", steps=STEPS)
    assert torch.allclose(one.target_feat, two.target_feat, atol=1e-6)
    # The mean of two equal losses is the one-shot loss: same optimisation.
    np.testing.assert_allclose(two.fit.loss_total, one.fit.loss_total, atol=1e-6)
    assert torch.allclose(one.mask_weights, two.mask_weights, atol=1e-5)


# ------------------------------------------------------------------------ several concepts
def test_segment_concepts_equals_separate_calls(model, scene, concepts):
    img, _, other = scene
    mask_b = np.zeros(other.shape[:2], bool)
    mask_b[10:70, 20:110] = True
    extra = learn(model, other, mask_b, name="coffee")
    extra_f = learn(model, other, mask_b, method="persam_f", steps=STEPS)
    group = [concepts["persam"], extra, concepts["persam_f"], extra_f]
    for image in (img, other):
        batched = segment_concepts(model, image, group, return_stages=True)
        assert len(batched) == len(group)
        for concept, res in zip(group, batched, strict=True):
            single = concept.segment(image, return_stages=True)
            assert res.concept == concept.name
            assert np.array_equal(res.points, single.points)
            assert abs(res.score - single.score) <= 1e-5
            assert [s.best_idx for s in res.stages] == [s.best_idx for s in single.stages]
            assert int((res.mask != single.mask).sum()) <= 5


def test_segment_concepts_batches_decoder_calls(model, scene, concepts):
    img, _, _ = scene
    calls = []
    original = model.decode

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    model.decode = counting
    try:
        segment_concepts(model, img, [concepts["persam"], concepts["persam"], concepts["persam_f"]])
    finally:
        del model.decode
    # Three stages per method, all prompt sets of a method in one call.
    assert sorted(calls) == [1, 1, 1, 2, 2, 2]


# -------------------------------------------------------------------------- multi-instance
def test_multi_instance_search(concepts, scene):
    _, _, other = scene
    concept = concepts["persam"]
    single = concept.segment(other)
    res = concept.segment(other, max_instances=3, return_similarity=True)
    assert 1 <= len(res.instances) <= 3
    first = res.instances[0]
    assert np.array_equal(first.mask, single.mask) and first.score == single.score
    union = np.zeros_like(res.mask)
    sim = res.similarity.copy()
    floor = sim.min()
    for inst in res.instances:
        x, y = inst.points[0]
        assert not union[y, x], "an instance was searched inside an earlier one"
        # Each positive point is the most similar pixel outside the earlier instances.
        assert sim[y, x] == sim.max()
        assert inst.found and inst.instances == []
        union |= inst.mask
        sim[inst.mask] = floor
    assert np.array_equal(res.mask, union)


def test_score_threshold(concepts, scene):
    img, _, _ = scene
    res = concepts["persam"].segment(img)
    above = concepts["persam"].segment(img, score_threshold=res.score - 1e-3)
    below = concepts["persam"].segment(img, score_threshold=res.score + 1e-3)
    assert above.found and not below.found
    # The mask is still reported; `found` says it did not reach the threshold.
    assert np.array_equal(below.mask, res.mask)
    multi = concepts["persam"].segment(img, max_instances=3, score_threshold=res.score + 1e-3)
    assert not multi.found and multi.instances == []


# ------------------------------------------------------------------------- reference masks
def test_mask_formats_are_equivalent(model, scene, tmp_path):
    img, mask, _ = scene
    variants = {
        "bool": mask,
        "0/1": mask.astype(np.uint8),
        "0/255": mask.astype(np.uint8) * 255,
        "0/128": mask.astype(np.uint8) * 128,
        "rgb": np.stack([mask * 200, mask * 10, mask * 0], -1).astype(np.uint8),
        "float": mask.astype(np.float32),
    }
    png = tmp_path / "mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(png)
    pal = Image.fromarray(mask.astype(np.uint8) * 3, mode="P")
    pal.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    pal_path = tmp_path / "palette.png"
    pal.save(pal_path)
    variants["png"] = png
    variants["palette"] = pal_path
    ref = learn(model, img, mask)
    for name, m in variants.items():
        c = learn(model, img, m)
        assert torch.equal(c.target_feat, ref.target_feat), name


def test_mask_value_and_coverage_threshold(model, scene):
    img, _, _ = scene
    # A disk with an odd radius: its boundary cells are partly covered.
    yy, xx = np.mgrid[0:128, 0:128]
    mask = (xx - 61.3) ** 2 + (yy - 58.7) ** 2 <= 33.3**2
    strict = learn(model, img, mask)
    loose = learn(model, img, mask, mask_value=215)
    looser = learn(model, img, mask, coverage_threshold=0.1)
    n = [c.options["num_target_locations"][0] for c in (strict, loose, looser)]
    assert n[0] < n[1] < n[2]
    assert strict.options["coverage_threshold"] == pytest.approx(123.675 / 128)
    assert loose.options["coverage_threshold"] == pytest.approx(123.675 / 215)


def test_bad_reference_inputs(model, scene, tmp_path):
    img, mask, _ = scene
    with pytest.raises(InputError, match="empty"):
        learn(model, img, np.zeros_like(mask))
    with pytest.raises(InputError, match=r"64×64 but the reference image .* 128×128"):
        learn(model, img, np.ones((64, 64), bool))
    tiny = np.zeros_like(mask)
    tiny[50, 50] = True  # covers half of one embedding cell at most
    with pytest.raises(MaskTooSmallError, match="reference mask too small: no embedding cell is foreground"):
        learn(model, img, tiny)
    with pytest.raises(InputError, match="not found"):
        learn(model, tmp_path / "nope.jpg", mask)
    with pytest.raises(InputError, match="not found"):
        learn(model, img, tmp_path / "nope.png")
    with pytest.raises(InputError, match="2 reference images but 1 reference masks"):
        learn(model, [img, img], [mask])
    with pytest.raises(InputError, match=r"ref_mask\[1\]: mask is empty"):
        learn(model, [img, img], [mask, np.zeros_like(mask)])
    with pytest.raises(ValueError, match="method must be one of"):
        learn(model, img, mask, method="persam_x")
    with pytest.raises(ValueError, match="method must be one of"):
        learn(model, img, mask, method="persamf")
    with pytest.raises(ValueError, match="engine must be one of"):
        learn(model, img, mask, method="persam_f", engine="turbo")
    with pytest.raises(InputError, match="expected a mask of shape"):
        learn(model, img, np.zeros((128, 128, 2), bool))
    bad_path = tmp_path / "m.png"
    bad_path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read image"):
        learn(model, img, bad_path)


# --------------------------------------------------------------------------- prompt masks
def test_mask_from_prompts(model, scene):
    img, _, _ = scene
    mask = mask_from_prompts(model, img, points=[[60, 50]], labels=[1])
    assert mask.dtype == bool and mask.shape == img.shape[:2]
    # Independently: decode, post-process, keep the best-scoring of the three masks.
    out = model.decode(torch.tensor([[[60.0, 50.0]]]), torch.tensor([[1]]), multimask_output=True)
    high = model.postprocess(out.low_res_logits)[0] > 0
    assert np.array_equal(mask, high[int(out.iou_predictions[0].argmax())].numpy())
    boxed = mask_from_prompts(model, img, box=[10, 20, 90, 100])
    assert boxed.shape == img.shape[:2]
    both = mask_from_prompts(model, img, points=[[60, 50], [5, 5]], labels=[1, 0], box=[10, 20, 90, 100])
    assert both.dtype == bool


def test_mask_from_prompts_rejects_bad_prompts(model, scene):
    img, _, _ = scene
    with pytest.raises(InputError, match="at least one point or a box"):
        mask_from_prompts(model, img)
    with pytest.raises(InputError, match=r"points must be \[N, 2\]"):
        mask_from_prompts(model, img, points=[1, 2, 3])
    with pytest.raises(InputError, match="one entry per point"):
        mask_from_prompts(model, img, points=[[1, 2]], labels=[1, 0])
    with pytest.raises(InputError, match="labels must be 0"):
        mask_from_prompts(model, img, points=[[1, 2]], labels=[2])
    with pytest.raises(InputError, match="box must be"):
        mask_from_prompts(model, img, box=[1, 2, 3])
    with pytest.raises(InputError, match="x0 <= x1"):
        mask_from_prompts(model, img, box=[50, 2, 3, 40])
    with pytest.raises(InputError, match="finite"):
        mask_from_prompts(model, img, points=[[np.nan, 2]])
    with pytest.raises(InputError, match="finite"):
        mask_from_prompts(model, img, box=[0, 0, np.inf, 5])


def test_mask_from_prompts_rejects_prompts_outside_the_image(model, scene, monkeypatch):
    img, _, _ = scene  # 128 x 128
    cases = {
        r"point \(5000, 5000\) is outside the image \(128×128 pixels, W×H\)": {"points": [[5000, 5000]]},
        r"point \(128, 5\) is outside": {"points": [[10, 10], [128, 5]], "labels": [1, 0]},
        r"point \(3, -0.5\) is outside": {"points": [[3, -0.5]]},
        r"box \[200, 10, 300, 50\] is outside the image \(128×128 pixels, W×H\)": {"box": [200, 10, 300, 50]},
        r"box \[-50, -40, -1, 0\] is outside": {"box": [-50, -40, -1, 0]},
        r"x0 <= x1": {"box": [90, 10, 20, 50]},
    }
    with monkeypatch.context() as m:
        m.setattr(model, "set_image", lambda *_: pytest.fail("prompts are checked before encoding"))
        for message, prompts in cases.items():
            with pytest.raises(InputError, match=message) as e:
                mask_from_prompts(model, img, **prompts)
            assert "\n" not in str(e.value)
    # Points on the last pixel row / column and a box partly outside are fine.
    assert mask_from_prompts(model, img, points=[[127, 127], [0, 0]], labels=[1, 0]).shape == (128, 128)
    assert mask_from_prompts(model, img, box=[-20, 100, 500, 400]).shape == (128, 128)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 1)])
def test_degenerate_images_segment_without_warnings(concepts, size):
    image = np.zeros((*size, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for concept in concepts.values():
            res = concept.segment(image, max_instances=2, return_similarity=True)
            assert res.mask.shape == size and res.similarity.shape == size
            assert np.isfinite(res.score)


def test_aligned_attention_option(model, scene):
    img, mask, other = scene
    plain = learn(model, img, mask)
    aligned = learn(model, img, mask, aligned_attention=True)
    assert aligned.options["aligned_attention"] and not plain.options["aligned_attention"]
    assert torch.equal(plain.target_feat, aligned.target_feat)
    # Only the attention bias of step 1 differs, so the positive / negative points agree.
    a = plain.segment(other, return_stages=True)
    b = aligned.segment(other, return_stages=True)
    assert np.array_equal(a.points, b.points)
    assert not np.array_equal(a.stages[0].scores, b.stages[0].scores)


def test_mismatch_message_names_both_models_in_full():
    from persam.personalize import ConceptMismatchError

    image, mask = astronaut_scene()
    a = build_model(fast_sam_config(), seed=0)
    b = build_model(fast_sam_config(), seed=1)
    concept = persam.learn(a, image, mask)
    with pytest.raises(ConceptMismatchError) as e:
        concept.bind(b)
    assert a.checkpoint_id in str(e.value) and b.checkpoint_id in str(e.value)
