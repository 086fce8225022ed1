"""Video tracking and video I/O on synthetic videos made here.

Two models are used: a small random SAM (built from a config dict) exercises the real decoder
path; a deterministic colour segmenter (a :class:`Backbone` whose "decoder" returns the saturated
colour region under the first positive point, and nothing on grey) makes tracking behaviour
checkable: objects followed, ids kept, an object leaving the frame reported absent and found again.
"""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from helpers import (
    FPS,
    ColourBackbone,
    H,
    W,
    fast_sam_config,
    iou,
    make_scene,
    write_palette_png,
    write_video,
)
from PIL import Image

from persam.io import InputError
from persam.personalize.boxes import expand_box
from persam.pipelines.video import VideoTracker, track
from persam.readers import DAVIS_PALETTE, Prefetcher, davis_sequence, load_first_mask, open_video
from persam.registry import build_model
from persam.tracking import FrameResult
from persam.writers import LabelMapWriter


@pytest.fixture(scope="module")
def small_sam():
    return build_model(fast_sam_config(), checkpoint="none")


@pytest.fixture(scope="module")
def scene():
    return make_scene()


# ------------------------------------------------------------------------------------ tracking
def test_follows_objects_keeps_ids_and_handles_an_object_leaving(scene):
    frames, labels = scene
    model = ColourBackbone()
    results = list(track(model, frames, labels[0], diagnostics=True, prefetch=2))
    events = {
        (name, r.index, st.slot): value
        for r in results[1:]
        for st in r.diagnostics
        for name, value in (("box_prompt", st.box_prompt), ("points", (st.points, st.labels)))
    }
    assert [r.index for r in results] == list(range(len(frames)))
    assert results[0].is_reference and np.array_equal(results[0].label_map, labels[0])
    for r in results:
        assert r.object_ids == [2, 3, 7]
        assert set(np.unique(r.label_map).tolist()) <= {0, 2, 3, 7}
        for oid in (3, 7):  # always (at least partly) visible
            assert r.present[oid]
            assert iou(r.label_map == oid, labels[r.index] == oid) > 0.9, (r.index, oid)
    # The blue square (id 2) is outside the frame on frames 4..6: absent, no score, no box ...
    for r in results[4:7]:
        assert not r.present[2] and r.scores[2] is None and r.boxes[2] is None
        assert not (r.label_map == 2).any()
    # ... searched by similarity alone (no box, no centre point) on the frames after it vanished ...
    for i in (5, 6, 7):
        assert events[("box_prompt", i, 0)] is None
        assert len(events[("points", i, 0)][0]) == 2
    # ... and found again when it comes back.
    for r in results[7:]:
        assert r.present[2] and iou(r.label_map == 2, labels[r.index] == 2) > 0.9
        assert events[("box_prompt", r.index + 1, 0)] is not None if r.index + 1 < len(frames) else True
    # One image-encoder pass per frame, the reference frame included, whatever the object count.
    assert model.encoder_calls == len(frames)


def test_decoder_runs_once_per_step_for_all_objects(scene):
    frames, labels = scene
    model = ColourBackbone()
    tracker = VideoTracker(model)
    tracker.initialize(frames[0], load_first_mask(labels[0]))
    model.decoder_batches.clear()
    tracker.step(frames[1], 1)
    assert model.decoder_batches == [3, 3, 3]  # three steps, B = 3 objects each
    # Reference behaviour: one decoder call per object and step.
    naive = VideoTracker(model, batch_objects=False)
    naive.initialize(frames[0], load_first_mask(labels[0]))
    model.decoder_batches.clear()
    naive.step(frames[1], 1)
    assert model.decoder_batches == [1] * 9


def test_official_compat_assigns_boxes_by_position(scene):
    """When the object with the lowest id vanishes, the reference gives its box slot to the next
    label and stops processing the last object; the fixed mode keeps boxes with their labels."""
    frames, labels = scene
    frames = frames.copy()
    labels = labels.copy()
    # Let object 2 vanish at frame 2 (paint it grey) and stay away.
    for i in range(2, len(frames)):
        frames[i][labels[i] == 2] = 110
    boxes: dict[str, dict[tuple[int, int], object]] = {"official": {}, "fixed": {}}
    results = {}
    for compat in ("official", "fixed"):
        results[compat] = list(
            track(ColourBackbone(), frames[:5], labels[0], compat=compat, diagnostics=True)
        )
        for r in results[compat][1:]:
            for st in r.diagnostics:
                boxes[compat][(r.index, st.slot)] = st.box_prompt
    prev = results["official"][2]
    assert not prev.present[2] and prev.present[3]
    # official: slot 0 (id 2) takes the box of id 3, slot 1 (id 3) the box of id 7; id 7 is not processed.
    box, _ = boxes["official"][(3, 0)]
    assert box.tolist() == expand_box(np.array(prev.boxes[3]), 10, (H, W))[0].tolist()
    box, _ = boxes["official"][(3, 1)]
    assert box.tolist() == expand_box(np.array(prev.boxes[7]), 10, (H, W))[0].tolist()
    assert (3, 2) not in boxes["official"]
    assert results["official"][3].scores[7] is None
    # fixed: id 2 has no box any more, the others keep their own.
    assert boxes["fixed"][(3, 0)] is None
    box, _ = boxes["fixed"][(3, 2)]
    assert box.tolist() == expand_box(np.array(results["fixed"][2].boxes[7]), 10, (H, W))[0].tolist()
    assert results["fixed"][3].present[7] and results["fixed"][4].present[3]


def test_expand_box_clips_like_the_reference():
    box, centre = expand_box(np.array([5, 12, 300, 230]), 10, (240, 320))
    assert box.tolist() == [0, 2, 310, 240] and centre.tolist() == [155, 121]
    box, centre = expand_box(np.array([50, 50, 60, 70]), 10, (240, 320))
    assert box.tolist() == [40, 40, 70, 80] and centre.tolist() == [55, 60]


def test_start_and_stride(scene):
    frames, labels = scene
    results = list(track(ColourBackbone(), frames, labels[3], start=3, stride=2))
    assert [r.index for r in results] == [3, 5, 7, 9]
    assert np.array_equal(results[0].label_map, labels[3])
    assert results[0].is_reference and not any(r.is_reference for r in results[1:])


def test_small_object_does_not_crash(scene):
    frames, labels = scene
    first = np.zeros((H, W), np.uint8)
    first[20:23, 40:42] = 5  # 6 pixels: covers no embedding cell by half
    results = list(track(ColourBackbone(), frames[:3], first))
    assert len(results) == 3 and results[0].object_ids == [5]


def test_small_sam_batched_equals_per_object(small_sam, scene, one_thread):
    frames, labels = scene
    batched = list(track(small_sam, frames[:4], labels[0]))
    single = list(track(small_sam, frames[:4], labels[0], batch_objects=False))
    for a, b in zip(batched, single, strict=True):
        assert a.index == b.index
        assert (a.label_map != b.label_map).sum() <= 5
        assert a.label_map.dtype == np.uint8 and a.label_map.shape == (H, W)
        assert set(np.unique(a.label_map).tolist()) <= {0, 2, 3, 7}


def test_small_sam_persam_f(small_sam, scene, one_thread):
    frames, labels = scene
    tracker = VideoTracker(small_sam, method="persam-f", finetune_kwargs={"steps": 30})
    ref = tracker.initialize(frames[0], load_first_mask(labels[0]))
    assert ref.is_reference
    for obj in tracker.objects:
        weights = obj.concept.mask_weights
        assert weights.shape == (3,)
        assert torch.isclose(weights.sum(), torch.tensor(1.0), atol=1e-5)
        assert not torch.allclose(weights, torch.full((3,), 1 / 3))  # moved from the start
    with torch.no_grad():
        res = tracker.step(frames[1], 1)
    assert res.label_map.shape == (H, W) and set(res.scores) == {2, 3, 7}


def test_bad_tracking_inputs(scene, tmp_path):
    frames, labels = scene
    model = ColourBackbone()
    with pytest.raises(InputError, match="no object"):
        list(track(model, frames, np.zeros((H, W), np.uint8)))
    with pytest.raises(InputError, match=r"mask is 64×48 \(W×H\) but the video frames are 128×96"):
        list(track(model, frames, np.ones((48, 64), np.uint8)))
    with pytest.raises(InputError, match="beyond the end"):
        list(track(model, frames, labels[0], start=len(frames)))
    png = write_palette_png(tmp_path / "small.png", np.ones((48, 64), np.uint8))
    with pytest.raises(InputError, match=r"small\.png: mask is 64×48"):
        list(track(model, frames, png))
    with pytest.raises(ValueError, match="method"):
        VideoTracker(model, method="sam2")


def test_tracks_a_video_file_with_both_decoders(scene, tmp_path, monkeypatch):
    frames, labels = scene
    video = write_video(tmp_path / "scene.mp4", frames)
    mask = write_palette_png(tmp_path / "first.png", labels[0])
    with_decord = list(track(ColourBackbone(), video, mask))
    monkeypatch.setitem(sys.modules, "decord", None)  # as if decord were not installed
    with_opencv = list(track(ColourBackbone(), video, mask))
    assert [r.index for r in with_decord] == [r.index for r in with_opencv] == list(range(len(frames)))
    for a, b in zip(with_decord[1:], with_opencv[1:], strict=True):
        for oid in (3, 7):
            # Lossy colour subsampling blurs the edges of the (partly occluded) objects.
            assert iou(a.label_map == oid, labels[a.index] == oid) > 0.7
            assert iou(a.label_map == oid, b.label_map == oid) > 0.95


# ------------------------------------------------------------------------------------ video I/O
def test_decord_and_opencv_read_the_same_frames(scene, tmp_path, monkeypatch):
    frames, _ = scene
    for suffix in (".mp4", ".avi"):
        path = write_video(tmp_path / f"v{suffix}", frames)
        src = open_video(path)
        assert src.info.backend == "decord"
        assert src.info.num_frames == len(frames) and src.info.fps == pytest.approx(FPS)
        assert src.info.size == (H, W)
        dec = list(src.frames())
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "decord", None)
            cv = open_video(path)
            assert cv.info.backend == "opencv"
            assert cv.info.num_frames == len(frames) and cv.info.fps == pytest.approx(FPS)
            ocv = list(cv.frames())
        assert [i for i, _ in dec] == [i for i, _ in ocv] == list(range(len(frames)))
        for (i, a), (_, b) in zip(dec, ocv, strict=True):
            assert a.dtype == np.uint8 and a.shape == (H, W, 3)
            # Lossy codec: close to what was written, in order (each frame nearest its original).
            err = [np.abs(a.astype(int) - f).mean() for f in frames]
            assert int(np.argmin(err)) == i and err[i] < 8
            assert np.abs(a.astype(int) - b).mean() < 3


def test_opencv_stride_and_start(scene, tmp_path, monkeypatch):
    frames, _ = scene
    path = write_video(tmp_path / "v.mp4", frames)
    monkeypatch.setitem(sys.modules, "decord", None)
    got = list(open_video(path).frames(start=1, stride=3))
    assert [i for i, _ in got] == [1, 4, 7]
    with pytest.raises(InputError, match="beyond the end"):
        list(open_video(path).frames(start=50))


def test_frame_folder_natural_order(scene, tmp_path):
    frames, _ = scene
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(len(frames)):  # frame0, frame5, frame10, ...: natural, not lexicographic order
        Image.fromarray(frames[i]).save(folder / f"frame{5 * i}.png")
    (folder / "notes.txt").write_text("not a frame")
    src = open_video(folder)
    assert src.info.backend == "folder" and src.info.num_frames == len(frames)
    assert src.info.names == [f"frame{5 * i}" for i in range(len(frames))]
    for i, f in src.frames():
        assert np.array_equal(f, frames[i])


def test_bad_videos(tmp_path, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 20)
    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    writer.release()  # a container without frames
    for decord_missing in (False, True):
        with monkeypatch.context() as m:
            if decord_missing:
                m.setitem(sys.modules, "decord", None)
            for path in (bad, empty, tmp_path / "missing.mp4"):
                with pytest.raises(InputError, match=path.name) as e:
                    open_video(path)
                assert "\n" not in str(e.value)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no frame images"):
        open_video(tmp_path / "nothing")


def test_first_mask_kinds(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[10:20, 10:20] = 4
    labels[30:50, 60:90] = 9
    palette = list(DAVIS_PALETTE)
    palette[4 * 3 : 4 * 3 + 3] = [1, 2, 3]
    first = load_first_mask(write_palette_png(tmp_path / "ids.png", labels, palette), size=(H, W))
    assert first.object_ids == [4, 9] and first.palette[:768] == palette
    assert np.array_equal(first.label_map, labels)
    binary = tmp_path / "binary.png"
    Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(binary)
    first = load_first_mask(binary)
    assert first.object_ids == [1] and first.palette is None and np.array_equal(first.masks[0], labels > 0)
    a, b = labels == 4, labels == 9
    first = load_first_mask([a, b])
    assert first.object_ids == [1, 2] and np.array_equal(first.label_map, a * 1 + b * 2)
    with pytest.raises(InputError, match="no object"):
        load_first_mask(np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="mask 1: the mask holds no object"):
        load_first_mask([a, np.zeros_like(a)])
    with pytest.raises(InputError, match=r"ids\.png: mask is 128×96 \(W×H\) but the video frames are 64×48"):
        load_first_mask(tmp_path / "ids.png", size=(48, 64))


def test_davis_sequence(tmp_path, scene):
    frames, labels = scene
    seq = tmp_path / "DAVIS" / "JPEGImages" / "480p" / "toy"
    ann = tmp_path / "DAVIS" / "Annotations" / "480p" / "toy"
    seq.mkdir(parents=True)
    ann.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(frames[i]).save(seq / f"{i:05d}.jpg")
    write_palette_png(ann / "00000.png", labels[0])
    folder, mask = davis_sequence(tmp_path / "DAVIS", "toy")
    assert folder == seq and mask == ann / "00000.png"
    with pytest.raises(InputError, match="missing"):
        davis_sequence(tmp_path / "DAVIS", "missing")


def test_label_map_writer_commits_atomically(tmp_path, scene):
    frames, labels = scene
    out = tmp_path / "out" / "seq"
    overlay = tmp_path / "vis" / "overlay.mp4"
    with LabelMapWriter(out, palette=DAVIS_PALETTE, overlay=overlay, fps=12.0, metadata={"video": "x"}) as w:
        for i in range(4):
            w.write(f"{i:05d}", labels[i], frames[i], {"index": i})
            assert not (out / f"{i:05d}.png").exists() and not overlay.exists()  # staged until the end
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
        "00003.png",
        "scores.json",
    ]
    im = Image.open(out / "00002.png")
    assert im.mode == "P" and im.getpalette()[:768] == DAVIS_PALETTE
    assert np.array_equal(np.asarray(im), labels[2])
    cap = cv2.VideoCapture(str(overlay))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    assert sorted(p.name for p in overlay.parent.iterdir()) == ["overlay.mp4"]


def test_label_map_writer_leaves_nothing_on_error(tmp_path, scene):
    frames, labels = scene
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    for out in (tmp_path / "new" / "deeper", existing):
        overlay = tmp_path / "ovl" / "o.mp4"
        with pytest.raises(RuntimeError, match="boom"):
            with LabelMapWriter(out, overlay=overlay) as w:
                w.write("00000", labels[0], frames[0], {})
                raise RuntimeError("boom")
        assert not (tmp_path / "new").exists() and not (tmp_path / "ovl").exists()
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


def test_prefetcher_propagates_errors_and_stops_early():
    def gen():
        yield 1
        yield 2
        raise InputError("frame 3: broken")

    it = iter(Prefetcher(gen(), maxsize=1))
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(InputError, match="broken"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    p = Prefetcher(endless(), maxsize=2)
    it = iter(p)
    assert next(it) == 0
    it.close()
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n and n <= 5  # bounded read-ahead, and the thread stopped
    assert not any(t.name == "persam-frame-reader" and t.is_alive() for t in threading.enumerate())


def test_frame_result_record():
    r = FrameResult(3, np.zeros((2, 2), np.uint8), [1, 2], {1: 0.5, 2: None}, {1: True, 2: False},
                    {1: (0, 0, 1, 1), 2: None})  # fmt: skip
    rec = r.to_record()
    assert rec == {
        "index": 3,
        "reference": False,
        "objects": {
            "1": {"present": True, "score": 0.5, "box": [0, 0, 1, 1]},
            "2": {"present": False, "score": None, "box": None},
        },
    }
