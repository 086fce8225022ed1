"""PerSAM and PerSAM-F end to end on a SAM 2 backbone (the small random ``tiny_sam2_config``
model: the masks mean nothing, so these tests check the contract — shapes, types, fitted weights,
multi-instance search, determinism, concept files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import persam
from persam.backbones.sam2 import Sam2Backbone
from persam.personalize import Concept
from persam.personalize.finetune import initial_mask_param, mask_weights_from_param

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> Sam2Backbone:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return persam.build_model("tiny_random_sam2", checkpoint=None)


def _scene(shift: int = 0, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a yellow disc (the object) moved ``shift`` pixels to the right."""
    rng = np.random.default_rng(shift)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255.0 / w, yy * 255.0 / h, np.full((h, w), 80.0)], -1)
    img += rng.normal(0, 10, img.shape)
    disc = (yy - h * 0.5) ** 2 + (xx - w * 0.35 - shift) ** 2 < (h * 0.25) ** 2
    img[disc] = (240, 220, 40)
    return np.clip(img, 0, 255).astype(np.uint8), disc


@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_learn_and_segment(model, method):
    ref, ref_mask = _scene()
    target, _ = _scene(shift=20)
    concept = persam.learn(model, ref, ref_mask, method=method, steps=20)
    assert concept.backbone_name == "tiny_random_sam2"
    assert concept.target_feat.shape[-1] == model.embed_dim
    if method == "persam_f":
        w = concept.mask_weights.reshape(3)
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))
        initial = mask_weights_from_param(initial_mask_param()).reshape(3)
        assert not torch.allclose(w, initial.to(w.dtype))
    else:
        assert concept.mask_weights is None
    result = concept.segment(target, return_stages=True)
    assert result.mask.shape == target.shape[:2] and result.mask.dtype == bool
    assert isinstance(result.found, bool)
    assert result.found == bool(result.mask.any())
    assert np.isfinite(result.score)
    assert result.stages and all(s.mask.shape == target.shape[:2] for s in result.stages)
    again = concept.segment(target)
    assert np.array_equal(again.mask, result.mask) and again.score == result.score


def test_multi_instance(model):
    ref, ref_mask = _scene()
    target, _ = _scene(shift=25)
    concept = persam.learn(model, ref, ref_mask, method="persam")
    many = concept.segment(target, max_instances=2)
    assert many.mask.shape == target.shape[:2]
    assert len(many.instances) <= 2
    if many.instances:  # the mask is the union of the accepted instances
        assert np.array_equal(many.mask, np.logical_or.reduce([i.mask for i in many.instances]))


def test_concept_file_round_trip(model, tmp_path):
    ref, ref_mask = _scene()
    target, _ = _scene(shift=10)
    concept = persam.learn(model, ref, ref_mask, method="persam_f", steps=10)
    path = tmp_path / "thing.persam"
    concept.save(path)
    loaded = Concept.load(path, model)
    assert loaded.method == "persam_f"
    assert np.array_equal(loaded.segment(target).mask, concept.segment(target).mask)
