"""The SAM 2 memory tracker behind the ``Tracker`` protocol: through ``persam.track`` and
``track_to_folder``, the ``"auto"`` choice, and its errors (tiny random SAM 2, a few tiny frames)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ColourBackbone
from PIL import Image

import persam
from persam.errors import InputError
from persam.pipelines.video import track
from persam.pipelines.video_folder import track_to_folder
from persam.tracking import (
    TRACKERS,
    PerSAMTracker,
    Redetector,
    Sam2Tracker,
    Tracker,
    make_tracker,
    resolve_tracker,
)
from persam.tracking.sam2 import track as sam2_track

T, H, W = 3, 40, 56


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A red square moving right (id 2) and a still green one (id 5) on grey."""
    frames = np.full((T, H, W, 3), 110, np.uint8)
    for i in range(T):
        frames[i, 6:20, 4 + 4 * i : 18 + 4 * i] = (210, 40, 40)
        frames[i, 24:36, 36:50] = (40, 200, 60)
    labels = np.zeros((H, W), np.uint8)
    labels[6:20, 4:18] = 2
    labels[24:36, 36:50] = 5
    return frames, labels


def _sam2(object_score: float | None = None):
    """The tiny random SAM 2; with ``object_score``, its decoder gives every object that object
    score logit (so random weights still see the objects, or never do)."""
    torch.set_num_threads(1)
    model = persam.build_model("tiny_random_sam2", checkpoint=None)
    if object_score is not None:
        last = model.model.sam_mask_decoder.pred_obj_score_head.layers[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(object_score)
    return model


def test_sam2_tracker_writes_the_streaming_engine_results(scene, tmp_path):
    frames, labels = scene
    model = _sam2(object_score=20.0)
    summary = track_to_folder(model, frames, labels, tmp_path / "out", tracker="sam2")
    assert summary.frames == T and summary.object_ids == [2, 5]
    reference = list(sam2_track(model, frames, labels))
    doc = json.loads((tmp_path / "out" / "scores.json").read_text())
    for i in range(T):
        written = np.asarray(Image.open(tmp_path / "out" / f"{i:05d}.png"))
        expected = labels if i == 0 else reference[i].label_map()
        assert np.array_equal(written, expected)
        assert set(np.unique(written)) <= {0, 2, 5}
        objects = doc["frames"][i]["objects"]
        assert list(objects) == ["2", "5"]  # ids stable on every frame
        for oid in (2, 5):
            assert objects[str(oid)]["present"] == bool((written == oid).any())
            assert 0.5 < objects[str(oid)]["score"] <= 1.0  # presence probability
    assert doc["frames"][0]["reference"] and not doc["frames"][1]["reference"]


def test_sam2_tracker_reports_absent_objects(scene):
    frames, labels = scene
    results = list(track(_sam2(object_score=-20.0), frames[:2], labels))  # auto: sam2
    assert results[0].is_reference and results[0].present == {2: True, 5: True}
    lost = results[1]
    assert lost.present == {2: False, 5: False} and lost.boxes == {2: None, 5: None}
    assert not lost.label_map.any()
    assert all(s is not None and s < 0.5 for s in lost.scores.values())
    assert not lost.masks.found.any() and lost.masks.object_ids.tolist() == [2, 5]


def test_auto_picks_sam2_for_sam2_models_and_persam_for_the_others(scene):
    frames, labels = scene
    sam2 = _sam2()
    assert resolve_tracker("auto", sam2) == "sam2" and resolve_tracker("auto", ColourBackbone()) == "persam"
    assert isinstance(make_tracker("auto", sam2), Sam2Tracker)
    assert isinstance(make_tracker("auto", ColourBackbone()), PerSAMTracker)
    assert isinstance(make_tracker("sam2", sam2), Tracker) and "sam2" in TRACKERS
    by_auto = [r.label_map for r in track(ColourBackbone(), frames, labels)]
    by_name = [r.label_map for r in track(ColourBackbone(), frames, labels, tracker="persam")]
    assert all(np.array_equal(a, b) for a, b in zip(by_auto, by_name, strict=True))


def test_redetection_options_pass_through():
    sam2 = _sam2()
    assert make_tracker("sam2", sam2).redetect is None  # off by default
    assert make_tracker("sam2", sam2, redetect=True).redetect == Redetector()
    mine = Redetector(after=2, min_similarity=0.3)
    assert make_tracker("sam2", sam2, redetect=mine).redetect is mine


def test_tracker_errors(scene):
    frames, labels = scene
    with pytest.raises(InputError, match="tracker 'sam2' needs a SAM 2 model .*'colour'"):
        make_tracker("sam2", ColourBackbone())
    with pytest.raises(InputError, match="tracker 'sam2' needs a SAM 2 model"):
        track(ColourBackbone(), frames, labels, tracker="sam2")
    with pytest.raises(InputError, match="tracker must be one of auto, persam, sam2, got 'xmem'"):
        track(ColourBackbone(), frames, labels, tracker="xmem")
    tracker = Sam2Tracker(_sam2())
    with pytest.raises(RuntimeError, match="initialize"):
        tracker.step(frames[0], 0)
    with pytest.raises(InputError, match="mask is 56x40 but the video frames are 28x20"):
        tracker.initialize(frames[0][:20, :28], persam.readers.load_first_mask(labels), 0)


def test_cli_track_with_the_sam2_tracker(scene, tmp_path, capsys):
    from helpers import write_palette_png

    from persam.cli import main
    from persam.readers import DAVIS_PALETTE

    torch.set_num_threads(1)
    frames, labels = scene
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames[:2]):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    mask = write_palette_png(tmp_path / "first.png", labels, list(DAVIS_PALETTE))
    out = tmp_path / "out"
    args = ["--model", "tiny_random_sam2", "--checkpoint", "none", "--device", "cpu", "-q"]
    track_args = ["--tracker", "sam2", "--redetect-after", "1"]
    assert main(["track", str(folder), "--mask", str(mask), "-o", str(out), *track_args, *args]) == 0
    assert "2 frame(s), 2 object(s)" in capsys.readouterr().out
    doc = json.loads((out / "scores.json").read_text())
    assert doc["tracker"] == "sam2" and doc["object_ids"] == [2, 5] and len(doc["frames"]) == 2
    assert np.array_equal(np.asarray(Image.open(out / "00000.png")), labels)
