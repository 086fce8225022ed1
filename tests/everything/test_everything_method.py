"""Method "candidates" through the public API: persam.learn(..., method="candidates"),
Concept.segment, segment_concepts beside PerSAM concepts, the concept file, box sources, and the
mechanics on every backbone family (tiny random models)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ColourBackbone, iou, make_scene

import persam
from persam.errors import InputError
from persam.everything import use_detector
from persam.methods import method_spec, normalize_method
from persam.personalize import Concept, segment_concepts
from persam.registry import build_model

OPTIONS = {"points_per_side": 8}
RED = 3  # label of make_scene's red square


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def paste(
    image: np.ndarray, labels: np.ndarray, label: int, dx: int, dy: int
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with a copy of object ``label`` moved by (dx, dy), and the copy's mask."""
    ys, xs = np.nonzero(labels == label)
    out = image.copy()
    out[ys + dy, xs + dx] = image[ys, xs]
    copy = np.zeros(labels.shape, bool)
    copy[ys + dy, xs + dx] = True
    return out, copy


def erase(image: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    out = image.copy()
    out[labels == label] = 110
    return out


@pytest.fixture
def scene():
    frames, labels = make_scene(t=3)
    return frames, labels


@pytest.fixture
def learned(scene):
    frames, labels = scene
    model = ColourBackbone()
    concept = persam.learn(
        model, frames[0], labels[0] == RED, method="candidates", name="red", method_options=OPTIONS
    )
    return model, concept


def test_method_spelling_and_spec():
    assert normalize_method("Candidates") == "candidates"
    assert not method_spec("candidates").cascade
    assert method_spec("persam").cascade


def test_learned_concept_holds_its_calibration(learned):
    _, concept = learned
    settings = concept.options["candidates"]
    assert concept.method == "candidates" and concept.reference_feats.shape == (1, 4)
    assert settings["source"] == "grid" and settings["generator"] == OPTIONS
    calibration = settings["calibration"]
    assert calibration["own_score"] > settings["threshold"] > calibration["other_score"]


def test_the_object_and_a_pasted_copy_are_found(scene, learned):
    frames, labels = scene
    _, concept = learned
    target, copy = paste(frames[2], labels[2], RED, dx=60, dy=40)
    result = concept.segment(target, max_instances=3)
    assert result.found and result.concept == "red" and len(result.instances) == 2
    truths = [labels[2] == RED, copy]
    for inst in result.instances:
        assert max(iou(inst.mask, t) for t in truths) > 0.8
    masks = result.masks
    assert isinstance(masks, persam.Masks) and masks.found.all() and len(masks) == 2
    assert concept.segment(target, max_instances=1).masks.masks.shape[0] == 1


def test_not_found_without_the_object(scene, learned):
    frames, labels = scene
    _, concept = learned
    result = concept.segment(erase(frames[1], labels[1], RED), max_instances=3)
    assert not result.found and not result.mask.any() and result.instances == []
    assert not result.masks.found.any()


def test_concept_file_round_trip(tmp_path, scene, learned):
    frames, labels = scene
    model, concept = learned
    concept.save(tmp_path / "red.persam")
    loaded = Concept.load(tmp_path / "red.persam", model)
    assert loaded.method == "candidates" and loaded.options["candidates"] == concept.options["candidates"]
    np.testing.assert_allclose(loaded.reference_feats, concept.reference_feats)
    target, _ = paste(frames[2], labels[2], RED, dx=60, dy=40)
    a, b = concept.segment(target, max_instances=3), loaded.segment(target, max_instances=3)
    assert [i.score for i in a.instances] == pytest.approx([i.score for i in b.instances])
    for x, y in zip(a.instances, b.instances, strict=True):
        np.testing.assert_array_equal(x.mask, y.mask)


def test_segment_concepts_mixes_methods(scene, learned):
    frames, labels = scene
    model, concept = learned
    cascade = persam.learn(model, frames[0], labels[0] == RED, method="persam")
    red, candidates = segment_concepts(model, frames[1], [cascade, concept])
    assert red.final_stage != "everything" and candidates.final_stage == "everything"
    assert iou(red.mask, labels[1] == RED) > 0.8 and iou(candidates.mask, labels[1] == RED) > 0.8


def test_score_threshold_replaces_the_calibrated_one(scene, learned):
    frames, _ = scene
    _, concept = learned
    assert not concept.segment(frames[1], score_threshold=1.01).found


def test_bad_options_are_one_line_errors(scene):
    frames, labels = scene
    model = ColourBackbone()
    for options, message in (
        ({"colour": 1}, "unknown option 'colour'"),
        ({"source": "boxes"}, "needs a detector"),
        ({"points_per_side": 0}, "points_per_side"),
    ):
        with pytest.raises(InputError, match=message):
            persam.learn(model, frames[0], labels[0] == RED, method="candidates", method_options=options)
    with pytest.raises(ValueError, match="method_options"):
        persam.learn(model, frames[0], labels[0] == RED, method="persam", method_options={"refine": False})


def test_box_source_finds_the_boxed_object_and_needs_its_detector_again(tmp_path, scene):
    frames, labels = scene

    def boxes_of(image, lab):
        out = []
        for k in (RED, 7, 2):
            ys, xs = np.nonzero(lab == k)
            if xs.size:
                out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return np.array(out, np.float64), np.linspace(0.9, 0.5, len(out))

    by_image = {frames[i].tobytes(): boxes_of(frames[i], labels[i]) for i in range(3)}
    detector = lambda image: by_image[np.asarray(image).tobytes()]  # noqa: E731
    model = ColourBackbone()
    options = {"source": "boxes", "detector": detector}
    concept = persam.learn(model, frames[0], labels[0] == RED, method="candidates", method_options=options)
    result = concept.segment(frames[2], max_instances=3)
    assert result.found and len(result.instances) == 1
    assert iou(result.mask, labels[2] == RED) > 0.8
    concept.save(tmp_path / "c.persam")
    loaded = Concept.load(tmp_path / "c.persam", model)
    with pytest.raises(InputError, match="detector"):
        loaded.segment(frames[2])
    again = use_detector(loaded, detector).segment(frames[2])
    np.testing.assert_array_equal(again.mask, concept.segment(frames[2]).mask)


@pytest.mark.parametrize(
    "name", ["tiny_random_sam", "tiny_random_mobile_sam", "tiny_random_efficient_sam", "tiny_random_sam2"]
)
def test_every_backbone_family_runs_the_method(name):
    """Mechanics only: random weights find nothing in particular."""
    model = build_model(name)
    frames, labels = make_scene(t=2)
    options = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    concept = persam.learn(model, frames[0], labels[0] == RED, method="candidates", method_options=options)
    assert np.isfinite(concept.options["candidates"]["threshold"])
    result = concept.segment(frames[1], max_instances=2)
    assert result.mask.shape == frames[1].shape[:2] and len(result.instances) <= 2
    assert result.found == bool(result.instances)
