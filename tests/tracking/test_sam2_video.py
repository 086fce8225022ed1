"""Behaviour of the SAM 2 memory tracker on synthetic videos (tiny random model, small frames).

The random weights cannot see anything: these tests check the tracker's bookkeeping (object ids,
absence handling, memory bounds, streaming, prompts and options), not mask quality.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from persam.io import InputError
from persam.models.sam2 import sam2_from_config, tiny_sam2_config
from persam.tracking.sam2 import NO_OBJ_SCORE, FrameReader, open_session, track
from persam.tracking.sam2.postprocess import fill_holes, non_overlapping

H, W = 48, 64


@pytest.fixture(scope="module")
def model():
    cfg = tiny_sam2_config()
    cfg["model"]["image_size"] = 128  # 8x8 memory maps: fast, and every code path is the same
    torch.manual_seed(0)
    return sam2_from_config(cfg).eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def scene(t: int, x0: int = 4, speed: int = 3) -> np.ndarray:
    """A red block moving right by ``speed`` pixels a frame (it leaves the frame on the right), a
    blue block and a green one standing still, on a grey background."""
    img = np.full((H, W, 3), 90, np.uint8)
    img[30:44, 4:16] = (30, 40, 200)
    img[4:14, 44:58] = (40, 200, 60)
    x = x0 + speed * t
    if x < W:
        img[12:26, x : min(x + 12, W)] = (220, 40, 40)
    return img


def block_mask(t: int = 0) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[12:26, 4 + 3 * t : 16 + 3 * t] = True
    return m


def frames(n: int, pulled: list[int] | None = None) -> Iterator[np.ndarray]:
    """A stream of ``n`` frames (no length known); ``pulled`` counts the frames handed out."""
    for t in range(n):
        if pulled is not None:
            pulled.append(t)
        yield scene(t)


# ------------------------------------------------------------------------------ absence
def test_object_leaving_the_frame_is_reported_absent(model, monkeypatch):
    # Random weights cannot tell: pin the object-score head so that the model judges the object
    # absent on every tracked frame, the state the real model reaches once the block is gone.
    bias = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    monkeypatch.setattr(bias, "data", bias.data - 1000.0)
    video = np.stack([scene(t) for t in range(24)])  # the block leaves after frame 20
    results = list(track(model, video, {1: block_mask()}))
    assert [r.index for r in results] == list(range(24))
    assert results[0].present == {1: True}
    assert float(results[0].object_score_logits[0]) == 10.0
    for r in results[1:]:
        assert r.present == {1: False}
        assert float(r.object_score_logits[0]) <= 0
        assert (r.logits == NO_OBJ_SCORE).all()
        assert not r.label_map().any()


def test_absent_pointer_and_reappearance(model, monkeypatch):
    bias = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    monkeypatch.setattr(bias, "data", bias.data - 1000.0)
    video = np.stack([scene(t) for t in range(10)])
    session = open_session(model, video)
    session.add_mask(0, 1, block_mask())
    list(session.propagate(max_frames=5))
    state = session.objects[1]
    for t in range(1, 6):
        # fixed_no_obj_ptr: the pointer of an absent object is the learned "no object" pointer.
        torch.testing.assert_close(state.non_cond[t].obj_ptr, model.no_obj_ptr, atol=0, rtol=0)
    # A new mask where the object shows again makes it a conditioning frame: present there.
    _, ids, logits = session.add_mask(7, 1, block_mask(7))
    assert ids == [1] and (logits > 0).any()
    out = dict((t, lg) for t, _, lg in session.propagate(start_frame_idx=7))
    found, truth = (out[7][0, 0] > 0).numpy(), block_mask(7)
    assert (found & truth).sum() / (found | truth).sum() > 0.8
    assert sorted(state.cond) == [0, 7]


def test_empty_mask_means_absent(model):
    session = open_session(model, np.stack([scene(t) for t in range(3)]))
    _, _, logits = session.add_mask(0, 4, np.zeros((H, W), bool))
    out = session.objects[4].temp_cond[0]
    assert float(out.object_score_logits) == -10.0
    assert (logits <= -10.0 + 1e-4).all()
    torch.testing.assert_close(out.obj_ptr, model.no_obj_ptr, atol=0, rtol=0)


# ------------------------------------------------------------------------------ objects
def test_three_objects_keep_their_ids_and_are_tracked_independently(model):
    video = np.stack([scene(t) for t in range(8)])
    session = open_session(model, video)
    session.add_mask(0, 7, block_mask())
    session.add_points(0, 3, points=[[10, 37]], labels=[1])
    session.add_points(0, 12, box=[44, 4, 57, 13])
    joint = list(session.propagate())
    assert [t for t, _, _ in joint] == list(range(8))
    for _, ids, logits in joint:
        assert ids == [7, 3, 12]
        assert logits.shape == (3, 1, H, W)

    alone = open_session(model, video)
    alone.add_points(0, 3, points=[[10, 37]], labels=[1])
    for (_, _, lg_joint), (_, ids, lg_alone) in zip(joint, alone.propagate(), strict=True):
        assert ids == [3]
        assert torch.equal(lg_joint[1:2], lg_alone)


def test_label_map_uses_object_ids(model):
    results = list(track(model, np.stack([scene(t) for t in range(3)]), {5: block_mask(), 9: ~block_mask()}))
    first = results[0].label_map()
    assert set(np.unique(first)) == {5, 9}
    assert (first[block_mask()] == 5).mean() > 0.8 and (first[~block_mask()] == 9).mean() > 0.8


# ------------------------------------------------------------------------------ memory
def test_long_stream_keeps_a_bounded_state(model):
    pulled: list[int] = []
    count, worst = 0, {}
    session = open_session(model, frames(200, pulled))
    assert not session.keep_history and session.num_frames is None
    session.add_mask(0, 1, block_mask())
    session.add_points(0, 2, points=[[10, 37]], labels=[1])
    for t, ids, _ in session.propagate():
        assert t == count and ids == [1, 2]
        assert len(pulled) == t + 1  # frames are read as tracking reaches them
        for k, v in session.state_size().items():
            worst[k] = max(worst.get(k, 0), v)
        count += 1
    assert count == 200 and session.num_frames == 200
    per_object = {k: v / 2 for k, v in worst.items()}
    assert per_object["cond_frames"] == 1
    assert per_object["memories"] <= 1 + 6  # the conditioning frame + the last num_maskmem - 1
    assert per_object["pointers"] <= 1 + 15  # + the last max_obj_ptrs_in_encoder - 1
    assert per_object["mask_logits"] <= 1 + 6
    assert per_object["tracked"] <= 1 + 15
    assert per_object["prompts"] <= 1


def test_bounded_state_gives_the_official_masks(model):
    """Pruning drops only what the memory attention cannot read any more, and an unknown length
    counts as >= 16 frames, so a stream gives the masks of the full-history session."""
    n = 40
    video = np.stack([scene(t, speed=1) for t in range(n)])
    full = open_session(model, video, keep_history=True)
    full.add_mask(0, 1, block_mask())
    expected = [lg for _, _, lg in full.propagate()]
    assert full.state_size()["non_cond_frames"] == n - 1
    streamed = list(track(model, iter(video), {1: block_mask()}))
    assert len(streamed) == n
    for a, b in zip(expected, streamed, strict=True):
        assert torch.equal(a, b.logits)


def test_short_stream_needs_its_length_for_official_pointer_encoding(model):
    video = np.stack([scene(t) for t in range(6)])
    known = [r.logits for r in track(model, video, {1: block_mask()})]
    told = [r.logits for r in track(model, iter(video), {1: block_mask()}, num_frames=6)]
    assert all(torch.equal(a, b) for a, b in zip(known, told, strict=True))


# ------------------------------------------------------------------------------ propagation
def test_reverse_propagation(model):
    video = np.stack([scene(t) for t in range(6)])
    session = open_session(model, video)
    session.add_mask(5, 1, block_mask(5))
    assert [t for t, _, _ in session.propagate(reverse=True)] == [5, 4, 3, 2, 1, 0]
    assert all(session.objects[1].tracked[t] for t in range(5))
    assert list(session.propagate(reverse=True, start_frame_idx=0)) == []
    assert [t for t, _, _ in session.propagate(start_frame_idx=2, max_frames=2)] == [2, 3, 4]


def test_corrections_are_overwritten_unless_made_conditioning(model):
    video = np.stack([scene(t) for t in range(6)])
    for as_cond in (False, True):
        session = open_session(model, video)
        session.add_all_frames_to_correct_as_cond = as_cond
        session.add_mask(0, 1, block_mask())
        first = {t: lg for t, _, lg in session.propagate()}
        _, _, clicked = session.add_points(3, 1, points=[[30, 40], [8, 8]], labels=[1, 0])
        second = {t: lg for t, _, lg in session.propagate()}
        state = session.objects[1]
        if as_cond:
            assert sorted(state.cond) == [0, 3]
            assert torch.equal(second[3], clicked)
        else:
            assert sorted(state.cond) == [0]
            assert torch.equal(second[3], first[3])


def test_stream_cannot_go_back(model):
    session = open_session(model, frames(5))
    session.add_mask(0, 1, block_mask())
    list(session.propagate())
    with pytest.raises(InputError):
        session.add_mask(1, 1, block_mask(1))
    with pytest.raises(InputError):
        session.add_mask(9, 1, block_mask())


def test_frame_reader_sizes_and_ranges():
    reader = FrameReader(np.stack([scene(t) for t in range(3)]))
    assert reader.num_frames == 3 and reader.seekable
    assert reader.get(2).shape == (H, W, 3)
    with pytest.raises(IndexError):
        reader.get(3)
    mixed = FrameReader([scene(0), scene(0)[:10]])
    mixed.get(0)
    with pytest.raises(InputError):
        mixed.get(1)


# ------------------------------------------------------------------------------ options
def test_fill_holes_fills_small_8_connected_background_components():
    logits = torch.full((1, 1, 12, 12), 5.0)
    logits[0, 0, 2, 2] = -1.0  # 1-pixel hole
    logits[0, 0, 5, 5] = logits[0, 0, 6, 6] = -1.0  # 2 pixels, connected diagonally
    logits[0, 0, 8:11, 8:11] = -1.0  # 9 pixels
    out = fill_holes(logits, max_area=2)
    assert out[0, 0, 2, 2] == 0.1 and out[0, 0, 5, 5] == 0.1 and out[0, 0, 6, 6] == 0.1
    assert (out[0, 0, 8:11, 8:11] == -1.0).all()
    assert torch.equal(fill_holes(logits, max_area=0), logits)


def test_non_overlapping_keeps_the_best_object_per_pixel():
    logits = torch.tensor([[3.0, -1.0], [2.0, 4.0]]).reshape(2, 1, 1, 2)
    out = non_overlapping(logits)
    assert out[0, 0, 0, 0] == 3.0 and out[1, 0, 0, 0] == -10.0
    assert out[0, 0, 0, 1] == -10.0 and out[1, 0, 0, 1] == 4.0


# ------------------------------------------------------------------------------ backbones
def test_session_over_a_backbone_uses_its_model_and_encoder_dtype(model):
    from persam.backbones.sam2 import Sam2Backbone

    video = np.stack([scene(t) for t in range(4)])
    plain = open_session(model, video)
    plain.add_mask(0, 1, block_mask())
    expected = [lg for _, _, lg in plain.propagate()]
    wrapped = open_session(Sam2Backbone(model, name="tiny_random_sam2", checkpoint_id="random:test"), video)
    wrapped.add_mask(0, 1, block_mask())
    assert all(torch.equal(a, b) for (_, _, a), b in zip(wrapped.propagate(), expected, strict=True))

    fast = open_session(
        Sam2Backbone(model, name="tiny_random_sam2", checkpoint_id="random:test", dtype=torch.bfloat16), video
    )
    assert fast.engine.encoder_dtype == torch.bfloat16
    fast.add_mask(0, 1, block_mask())
    results = list(fast.propagate())
    assert len(results) == 4 and all(
        lg.dtype == torch.float32 and torch.isfinite(lg).all() for _, _, lg in results
    )


# ------------------------------------------------------------------------------ re-detection
def test_redetection_brings_a_lost_object_back(model):
    """The model is made to lose the object whenever it decodes from memory, and to see it when
    decoding without memory (a search): with re-detection every ``after``-th absent frame becomes
    a conditioning frame again; without it the object stays lost (official behaviour)."""
    from persam.tracking.sam2.redetect import Redetector

    from_memory = []
    hooks = [
        model.memory_attention.register_forward_hook(lambda *_: from_memory.append(True)),
        model.sam_mask_decoder.pred_obj_score_head.register_forward_hook(
            lambda _m, _i, out: torch.full_like(out, -5.0 if from_memory and from_memory.pop() else 5.0)
        ),
    ]
    try:
        video = np.stack([scene(t, speed=1) for t in range(12)])
        official = open_session(model, video)
        official.add_mask(0, 1, block_mask())
        assert [bool((lg > 0).any()) for _, _, lg in official.propagate()] == [True] + [False] * 11

        session = open_session(model, video)
        session.redetect = Redetector(after=3, max_redetections=2)
        session.add_mask(0, 1, block_mask())
        found = [bool((lg > 0).any()) for _, _, lg in session.propagate()]
    finally:
        for h in hooks:
            h.remove()
    state = session.objects[1]
    assert state.concept is not None and abs(float(state.concept.norm()) - 1) < 1e-5
    assert found == [True, False, False, True, False, False, True, False, False, True, False, False]
    assert state.redetected == [6, 9] and sorted(state.cond) == [0, 6, 9]  # the oldest (3) dropped
