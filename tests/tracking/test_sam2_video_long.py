"""The SAM 2 memory tracker over long and crowded synthetic videos (tiny random model, tiny frames).

Random weights see nothing, so the object-score head is pinned per (frame, object) to stage what a
trained model would report: an object leaving the frame and coming back, an object occluded by
another. The tests check the mechanics: absence reported, ids stable, label maps and overlays
written, a state that does not grow with the video length, and objects that do not disturb each
other.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from persam.models.sam2 import sam2_from_config, tiny_sam2_config
from persam.pipelines.video_folder import track_to_folder
from persam.tracking import Sam2Tracker
from persam.tracking.sam2 import MemoryEngine, open_session

H, W = 32, 48
LONG = 1000


@pytest.fixture(scope="module")
def model():
    cfg = tiny_sam2_config()
    cfg["model"]["image_size"] = 64  # 4x4 memory maps: every code path, little arithmetic
    torch.manual_seed(0)
    return sam2_from_config(cfg).eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def frame(t: int, wanderer_x: int | None) -> np.ndarray:
    """A red block at ``wanderer_x`` (None: out of the frame) and a still green one, on grey."""
    img = np.full((H, W, 3), 100, np.uint8)
    img[20:30, 30:42] = (40, 200, 60)
    if wanderer_x is not None:
        img[4:14, max(wanderer_x, 0) : max(wanderer_x + 10, 0)] = (220, 40, 40)
    return img


def wanderer_x(t: int) -> int | None:
    """Moves right one pixel every 4 frames: leaves the frame on frame 184, enters again from the
    left on frame 500 and leaves again on frame 684 (None: out of the frame)."""
    x = 2 + (t % 500) // 4
    return x if x < W else None


def absent_frames(t: int) -> bool:
    return wanderer_x(t) is None


class LazyVideo(Sequence[np.ndarray]):
    """The ``LONG`` frames of :func:`frame`, each made when it is read (never all held at once)."""

    def __init__(self) -> None:
        self.furthest = -1

    def __len__(self) -> int:
        return LONG

    def __getitem__(self, t: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= t < LONG:
            raise IndexError(t)
        self.furthest = max(self.furthest, t)
        return frame(t, wanderer_x(t))


@contextlib.contextmanager
def pinned_scores(model, monkeypatch, absent: Callable[[int, int], bool]) -> Iterator[None]:
    """While active, the decoder judges object ``o`` absent on frame ``t`` exactly when
    ``absent(t, o)`` (object score logit -20, else +20)."""
    current: list[tuple[int, int]] = []
    step = MemoryEngine.step

    def tracked_step(self, frame_idx, features, state, **kwargs):
        current.append((frame_idx, state.obj_id))
        try:
            return step(self, frame_idx, features, state, **kwargs)
        finally:
            current.pop()

    def pin(_module, _inputs, out):
        if not current:
            return out
        return torch.full_like(out, -20.0 if absent(*current[-1]) else 20.0)

    monkeypatch.setattr(MemoryEngine, "step", tracked_step)
    hook = model.sam_mask_decoder.pred_obj_score_head.register_forward_hook(pin)
    try:
        yield
    finally:
        hook.remove()


def test_thousand_frames_with_an_object_leaving_and_coming_back(model, monkeypatch, tmp_path):
    from persam.backbones.sam2 import Sam2Backbone

    video = LazyVideo()
    labels = np.zeros((H, W), np.uint8)
    labels[4:14, 2:12] = 3
    labels[20:30, 30:42] = 8
    tracker = Sam2Tracker(Sam2Backbone(model, name="tiny_random_sam2", checkpoint_id="random:test"))
    sizes: list[dict[str, int]] = []
    results: list[tuple[int, dict[int, bool], set[int]]] = []

    def on_frame(r) -> None:
        assert video.furthest <= r.index + 8  # frames are made as tracking reaches them (a few ahead)
        sizes.append(tracker.state_size())
        results.append((r.index, dict(r.present), set(np.unique(r.label_map).tolist())))

    with pinned_scores(model, monkeypatch, lambda t, o: o == 3 and absent_frames(t)):
        summary = track_to_folder(
            tracker.model, video, labels, tmp_path / "out", tracker=tracker,
            overlay=tmp_path / "overlay.avi", on_frame=on_frame,
        )  # fmt: skip
    assert summary.frames == LONG and summary.object_ids == [3, 8]
    assert [i for i, _, _ in results] == list(range(LONG))
    doc = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert len(doc["frames"]) == LONG
    for t, present, ids in results[1:]:
        assert list(present) == [3, 8]  # ids stable
        objects = doc["frames"][t]["objects"]
        assert list(objects) == ["3", "8"]
        if absent_frames(t):
            assert not present[3] and 3 not in ids and not objects["3"]["present"]
            assert objects["3"]["score"] < 0.5
        else:
            assert objects["3"]["score"] > 0.5  # back after leaving (frames 600..)
        assert ids <= {0, 3, 8} and present[8] == (8 in ids)
    assert absent_frames(300) and not absent_frames(550) and results[550][1][3] is not None
    for t in (0, 450, LONG - 1):
        written = np.asarray(Image.open(tmp_path / "out" / f"{t:05d}.png"))
        assert written.shape == (H, W) and set(np.unique(written).tolist()) <= {0, 3, 8}
    assert (tmp_path / "overlay.avi").stat().st_size > 0

    # The memory bank is full after num_maskmem frames and the pointer window after 16: from then
    # on the state holds the same number of items and bytes whatever the video length.
    assert sizes[1]["bytes"] > 0
    steady = sizes[20]
    assert all(s == steady for s in sizes[20:]), "the tracker's state grows with the video"
    assert steady["memories"] == 2 * 7 and steady["pointers"] == 2 * 16 and steady["cond_frames"] == 2


def test_occluded_object_is_absent_and_the_others_are_untouched(model, monkeypatch):
    """Three objects; the middle one hides behind another on frames 8..13. Objects are tracked
    with their own memories: the other two give exactly the masks of a run without occlusion."""
    n = 20

    def scene(t: int) -> np.ndarray:
        img = frame(t, 2 + t)
        img[16:26, 4:14] = (30, 40, 200)  # the occluded object (id 5)
        if 8 <= t <= 13:
            img[14:28, 2:16] = (200, 200, 40)  # the occluder, in front
        return img

    video = np.stack([scene(t) for t in range(n)])
    masks = {1: video[0, ..., 0] == 220, 5: video[0, ..., 2] == 200, 9: video[0, ..., 1] == 200}

    def run() -> list[tuple[int, list[int], torch.Tensor]]:
        session = open_session(model, video)
        for oid, m in masks.items():
            session.add_mask(0, oid, m)
        return list(session.propagate())

    with pinned_scores(model, monkeypatch, lambda t, o: o == 5 and 8 <= t <= 13):
        hidden = run()
    with pinned_scores(model, monkeypatch, lambda t, o: False):
        visible = run()
    for (t, ids, logits), (_, _, ref) in zip(hidden, visible, strict=True):
        assert ids == [1, 5, 9]
        assert torch.equal(logits[[0, 2]], ref[[0, 2]])
        if 8 <= t <= 13:
            assert (logits[1] <= -1000).all()  # absent: no pixel at all
    # After the occlusion the object's memory holds absent frames: decoding goes on from it.
    assert [t for t, _, _ in hidden] == list(range(n))
