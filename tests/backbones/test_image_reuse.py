"""Backbone.set_image encodes an image once: setting the same content again reuses the embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fast_sam_config

from persam.backbones.base import image_fingerprint
from persam.io import InputError
from persam.personalize import learn, mask_from_prompts, segment_concepts
from persam.registry import build_model

H, W = 96, 128


pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    img[30:70, 40:90] = (230, 200, 30)
    return img


def _counted(config: dict | str):
    """A small random backbone whose ``encoder_calls`` counts image-encoder runs."""
    bb = build_model(config, checkpoint="none")
    bb.encoder_calls = 0

    def count(*_):
        bb.encoder_calls += 1

    bb.model.image_encoder.register_forward_hook(count)
    return bb


@pytest.fixture(params=["sam", "efficient_sam"])
def model(request):
    return _counted(fast_sam_config() if request.param == "sam" else "tiny_random_efficient_sam")


def test_fingerprint_depends_on_content_shape_and_dtype_only():
    img = _scene()
    assert image_fingerprint(img) == image_fingerprint(img.copy())
    assert image_fingerprint(img[:, ::-1]) == image_fingerprint(np.ascontiguousarray(img[:, ::-1]))
    changed = img.copy()
    changed[5, 7, 1] ^= 1
    others = [changed, img.reshape(W, H, 3), img.astype(np.int16), img[:, :, ::-1], img[:-1]]
    keys = {image_fingerprint(a) for a in [img, *others]}
    assert len(keys) == 1 + len(others)


def test_same_content_is_encoded_once(model):
    img = _scene()
    model.set_image(img)
    features = model.features
    model.set_image(img.copy())  # another array, same content
    model.set_image(np.asfortranarray(img))  # another memory layout, same content
    assert model.encoder_calls == 1 and model.features is features

    changed = img.copy()
    changed[0, 0, 0] += 1  # one value differs: a new image
    model.set_image(changed)
    assert model.encoder_calls == 2
    model.set_image(img)  # only the current image is remembered
    assert model.encoder_calls == 3
    torch.testing.assert_close(model.features, features, rtol=0, atol=0)


def test_reset_image_forgets_the_image(model):
    img = _scene()
    model.set_image(img)
    model.reset_image()
    with pytest.raises(RuntimeError, match="no image set"):
        model.features  # noqa: B018
    with pytest.raises(RuntimeError, match="no image set"):
        model.original_size  # noqa: B018
    model.set_image(img)
    assert model.encoder_calls == 2 and model.original_size == (H, W)


def test_a_rejected_image_leaves_a_consistent_state(model):
    img = _scene()
    model.set_image(img)
    with pytest.raises(InputError):
        model.set_image(img.astype(np.float32))
    with pytest.raises(InputError):
        model.set_image(img[..., :2])
    model.set_image(img)
    assert model.original_size == (H, W) and model.features.shape[-2:] == (64, 64)


def test_reference_mask_then_learn_then_segment_encode_each_photo_once(model):
    ref, target = _scene(0), _scene(1)
    for points, labels in (([[60, 50]], [1]), ([[60, 50], [5, 5]], [1, 0])):  # two clicks
        assert mask_from_prompts(model, ref, points, labels).shape == (H, W)
    # A random decoder's mask may be too small to learn from; the object's box is not.
    mask = np.zeros((H, W), bool)
    mask[30:70, 40:90] = True
    concept = learn(model, ref, mask)
    assert model.encoder_calls == 1

    first = concept.segment(target)
    again = concept.segment(target.copy())
    segment_concepts(model, target, [concept, concept])
    assert model.encoder_calls == 2
    np.testing.assert_array_equal(first.mask, again.mask)
