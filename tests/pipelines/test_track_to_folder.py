"""The one track-and-write path (:func:`persam.pipelines.video.track_to_folder`) and the choice of
tracker by name."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import ColourBackbone, make_scene
from PIL import Image

from persam.errors import InputError
from persam.pipelines.video import track
from persam.pipelines.video_folder import track_to_folder
from persam.readers import DAVIS_PALETTE
from persam.tracking import TRACKERS, PerSAMTracker, Tracker, make_tracker


@pytest.fixture(scope="module")
def scene():
    return make_scene(t=5)


def test_writes_label_maps_scores_and_overlay(scene, tmp_path):
    frames, labels = scene
    out, overlay = tmp_path / "out" / "seq", tmp_path / "vis" / "clip.mp4"
    seen = []
    summary = track_to_folder(
        ColourBackbone(),
        frames,
        labels[0],
        out,
        overlay=overlay,
        metadata={"video": "toy"},
        on_frame=seen.append,
    )
    assert summary.frames == 5 and summary.object_ids == [2, 3, 7] and not summary.skipped
    assert [r.index for r in seen] == list(range(5))
    expected = list(track(ColourBackbone(), frames, labels[0]))
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(5)] + ["scores.json"]
    for i, r in enumerate(expected):
        im = Image.open(out / f"{i:05d}.png")
        assert im.mode == "P" and im.getpalette()[:768] == DAVIS_PALETTE
        assert np.array_equal(np.asarray(im), r.label_map)
    doc = json.loads((out / "scores.json").read_text())
    assert doc["video"] == "toy" and doc["object_ids"] == [2, 3, 7] and len(doc["frames"]) == 5
    assert doc["frames"][1] == dict(expected[1].to_record(), name="00001")
    cap = cv2.VideoCapture(str(overlay))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_skip_done_resumes_and_failures_leave_nothing(scene, tmp_path, monkeypatch):
    frames, labels = scene
    out = tmp_path / "seq"
    real_step = PerSAMTracker.step

    def failing_step(self, frame, index):
        if index == 3:
            raise InputError(f"frame {index}: broken")
        return real_step(self, frame, index)

    monkeypatch.setattr(PerSAMTracker, "step", failing_step)
    with pytest.raises(InputError, match="broken"):
        track_to_folder(ColourBackbone(), frames, labels[0], out, skip_done=True)
    assert not out.exists()  # nothing half-written
    monkeypatch.undo()
    assert track_to_folder(ColourBackbone(), frames, labels[0], out, skip_done=True).frames == 5
    model = ColourBackbone()
    again = track_to_folder(model, frames, labels[0], out, skip_done=True)
    assert again.skipped and again.frames == 0 and model.encoder_calls == 0
    assert track_to_folder(model, frames, labels[0], out).frames == 5  # without skip_done: recomputed


def test_mask_of_another_size_is_named(scene, tmp_path):
    frames, _ = scene
    with pytest.raises(InputError, match=r"mask is 64×48 \(W×H\) but the video frames are 128×96"):
        track_to_folder(ColourBackbone(), frames, np.ones((48, 64), np.uint8), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_tracker_by_name_and_unknown_names(scene):
    frames, labels = scene
    assert "persam" in TRACKERS
    tracker = make_tracker("persam", ColourBackbone(), topk=1)
    assert isinstance(tracker, PerSAMTracker) and isinstance(tracker, Tracker) and tracker.topk == 1
    with pytest.raises(InputError, match="tracker must be one of auto, persam, sam2, got 'sam3'"):
        make_tracker("sam3", ColourBackbone())
    with pytest.raises(InputError, match="tracker must be one of .*'xmem'"):
        track(ColourBackbone(), frames, labels[0], tracker="xmem")
    # A tracker object is used as given.
    mine = PerSAMTracker(ColourBackbone(), compat="official")
    by_object = [r.label_map for r in track(mine.model, frames, labels[0], tracker=mine)]
    by_name = [r.label_map for r in track(ColourBackbone(), frames, labels[0], compat="official")]
    assert all(np.array_equal(a, b) for a, b in zip(by_object, by_name, strict=True))


def test_each_tracked_object_is_a_concept_learned_like_learn(scene):
    from persam.personalize import Concept, learn_on_current_image
    from persam.readers import load_first_mask
    from persam.tracking.persam_tracker import VIDEO_MASK_VALUE

    frames, labels = scene
    model = ColourBackbone()
    tracker = PerSAMTracker(model)
    tracker.initialize(frames[0], load_first_mask(labels[0]))
    assert [o.object_id for o in tracker.objects] == [2, 3, 7]
    for obj in tracker.objects:
        assert isinstance(obj.concept, Concept) and obj.concept.method == "persam"
        assert obj.concept.options["mask_value"] == VIDEO_MASK_VALUE
        again = learn_on_current_image(
            model, labels[0] == obj.object_id, mask_value=VIDEO_MASK_VALUE, feature_reduce="mean_max",
            small_mask="best_cells",
        )  # fmt: skip
        assert np.array_equal(again.target_feat.numpy(), obj.concept.target_feat.numpy())
    assert model.encoder_calls == 1  # every object learned from one encoding of the first frame


def test_a_one_shot_stream_of_frames_loses_no_frame(scene, tmp_path):
    """A generator can be read once: every frame of it is tracked and written, the first too."""
    frames, labels = scene
    summary = track_to_folder(ColourBackbone(), (f for f in frames), labels[0], tmp_path / "gen")
    assert summary.frames == 5
    expected = list(track(ColourBackbone(), frames, labels[0]))
    for i, r in enumerate(expected):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "gen" / f"{i:05d}.png")), r.label_map)
