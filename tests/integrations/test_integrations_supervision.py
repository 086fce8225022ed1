"""persam Masks <-> supervision Detections: exact round trips, and supervision's own annotators and
metrics reading what we give them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import astronaut_scene, disc_scene, fast_sam_config

from persam.errors import InputError
from persam.results import Masks, Prompts

sv = pytest.importorskip("supervision")
from persam.integrations.supervision import from_detections, to_detections  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _masks() -> Masks:
    """Three masks on a 40 x 60 image: two objects (ids 3 and 7) and one empty, not-found mask."""
    m = np.zeros((3, 40, 60), bool)
    m[0, 5:20, 10:30] = True
    m[1, 22:38, 35:58] = True
    prompts = [
        Prompts(points=np.array([[15, 10]]), labels=np.array([1]), box=np.array([10, 5, 29, 19])),
        None,
        None,
    ]
    return Masks(masks=m, scores=[0.91, 0.5, np.nan], object_ids=[3, 7, 9], prompts=prompts)


def _assert_same(a: Masks, b: Masks) -> None:
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)  # NaN equals NaN here
    np.testing.assert_array_equal(a.object_ids, b.object_ids)
    np.testing.assert_array_equal(a.found, b.found)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert len(a.prompts) == len(b.prompts)
    for p, q in zip(a.prompts, b.prompts, strict=True):
        assert (p is None) == (q is None)
        if p is not None:
            np.testing.assert_array_equal(p.points, q.points)
            np.testing.assert_array_equal(p.box, q.box)


def test_fields_follow_supervision_conventions() -> None:
    m = _masks()
    det = to_detections(m, class_id=[1, 2, 2], class_names=["bg", "dog", "cat"])
    assert len(det) == 3
    np.testing.assert_array_equal(det.mask, m.masks)
    # Boxes are the ones supervision computes from the masks itself.
    np.testing.assert_array_equal(det.xyxy, sv.mask_to_xyxy(m.masks))
    np.testing.assert_array_equal(det.tracker_id, [3, 7, 9])
    np.testing.assert_array_equal(det.class_id, [1, 2, 2])
    assert det.data["class_name"].tolist() == ["dog", "cat", "cat"]
    assert det.confidence[0] == pytest.approx(0.91)


def test_round_trip_is_identical() -> None:
    m = _masks()
    _assert_same(from_detections(to_detections(m, class_names="dog")), m)


def test_round_trip_survives_supervision_operations() -> None:
    """Indexing and merging are supervision's; the extra data we carry must follow the rows."""
    m = _masks()
    det = to_detections(m)
    _assert_same(from_detections(det[[1, 0]]), m[[1, 0]])
    merged = sv.Detections.merge([det[:1], det[1:]])
    _assert_same(from_detections(merged), m)


def test_found_only_and_plain_detections() -> None:
    m = _masks()
    det = to_detections(m, found_only=True, class_names={0: "dog"})
    assert len(det) == 2 and det.tracker_id.tolist() == [3, 7]
    # Detections made by other tools (no persam data): found = non-empty, ids from tracker_id.
    plain = sv.Detections(xyxy=det.xyxy, mask=det.mask, confidence=det.confidence, tracker_id=None)
    back = from_detections(plain)
    assert back.object_ids.tolist() == [1, 2] and back.found.tolist() == [True, True]
    with pytest.raises(InputError):
        from_detections(sv.Detections(xyxy=np.zeros((1, 4), np.float32)))
    with pytest.raises(InputError):
        to_detections(m, class_id=[1, 2])
    with pytest.raises(InputError):
        to_detections(m, class_names=["dog"], class_id=2)


def test_mask_annotator_draws_the_masks() -> None:
    m = _masks()
    scene = np.zeros((40, 60, 3), np.uint8)
    out = sv.MaskAnnotator(opacity=1.0).annotate(scene.copy(), to_detections(m))
    painted = out.any(axis=2)
    np.testing.assert_array_equal(painted, m.union())
    labelled = sv.LabelAnnotator().annotate(out.copy(), to_detections(m, class_names="dog"))
    assert labelled.shape == scene.shape


def test_supervision_metrics_accept_them() -> None:
    m = _masks()
    found = m[m.found]
    targets = to_detections(found)
    preds = to_detections(found)
    result = sv.metrics.MeanAveragePrecision(metric_target=sv.metrics.MetricTarget.MASKS)
    value = result.update(preds, targets).compute()
    assert value.map50_95 == pytest.approx(1.0)
    # A prediction shifted off its target is no match.
    shifted = Masks(masks=np.roll(found.masks, 25, axis=2), scores=found.scores)
    value = sv.metrics.MeanAveragePrecision(metric_target=sv.metrics.MetricTarget.MASKS)
    assert value.update(to_detections(shifted), targets).compute().map50 < 0.5


def test_segmentation_and_video_results_convert() -> None:
    """Results of the real pipeline (a small random model): an image result and a tracked frame."""
    from persam import learn, track
    from persam.registry import build_model

    model = build_model(fast_sam_config(), checkpoint="none")
    img, mask = astronaut_scene()
    result = learn(model, img, mask).segment(img, max_instances=2)
    det = to_detections(result, class_names="astronaut")
    _assert_same(from_detections(det), result.masks)

    frames = np.stack([disc_scene(centre=(40 + 4 * i, 45)) for i in range(2)])
    first = np.zeros(frames.shape[1:3], np.uint8)
    first[30:60, 25:55] = 1
    first[5:25, 98:118] = 2
    last = list(track(model, frames, first))[-1]
    det = to_detections(last)
    assert det.tracker_id.tolist() == [1, 2]
    _assert_same(from_detections(det), last.masks)
