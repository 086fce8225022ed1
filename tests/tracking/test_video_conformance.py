"""The video tracker against the reference PerSAM video script (``persam/video.pt``, tiny random SAM).

``compat="official"`` must reproduce every recorded prompt, score, logit grid and label map (within
the fixture README's tolerances); ``compat="fixed"`` must differ exactly where the reference's
``uint8`` area comparison did not pick the truly largest mask. Decisions the README marks as
fragile are fed from the fixture (a tracker subclass overriding its decisions); every other
decision must come out the same on its own (the tracker's diagnostics record both).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch
from helpers import fixture_dir, load_fixture
from torch import nn

from persam.io import load_label_map
from persam.pipelines.video import track
from persam.readers import load_first_mask
from persam.tracking import PerSAMTracker

SCORE_ATOL = 1e-5
LOW_RES_ATOL = 1e-5
LOGITS_ATOL = 2e-5
FEAT_ATOL = 1e-5
MAX_LABEL_PIXELS = 8  # "a handful" of label-map pixels may differ


class _MemoEncoder(nn.Module):
    """Returns the stored embedding for an input seen before (the fixture frames are encoded by
    three runs; the encoder itself is covered by the SAM conformance tests)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.cache: dict[str, torch.Tensor] = {}
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        key = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.encoder(x)
        return self.cache[key].clone()


@pytest.fixture(scope="module")
def video() -> dict[str, Any]:
    return load_fixture("persam", "video.pt")


@pytest.fixture(scope="module")
def tiny():
    from persam.registry import build_model

    sam = fixture_dir("sam")
    torch.set_num_threads(1)
    model = build_model(str(sam / "tiny_config.json"), checkpoint=str(sam / "tiny_state_dict.pt"))
    model.model.image_encoder = _MemoEncoder(model.model.image_encoder)
    return model


def _grid(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return x[..., rows, :][..., cols]


def _stats(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return torch.stack([x.sum(), x.abs().sum(), (x * x).sum()])


def _assert_stats(ours: torch.Tensor, ref: torch.Tensor, n: int) -> None:
    assert abs(float(ours[0] - ref[0])) <= 1e-5 * n
    torch.testing.assert_close(ours[1:], ref[1:].double(), rtol=1e-5, atol=1e-6)


class _FedTracker(PerSAMTracker):
    """Imposes the fixture's decisions (similarity points and mask choices), keeping the automatic
    points beside them; the tracker's diagnostics record every step and automatic choice."""

    def __init__(self, model, video: dict[str, Any], **options: Any) -> None:
        super().__init__(model, diagnostics=True, **options)
        self.video = video
        self.auto_points: dict[tuple[int, int], Any] = {}

    def point_prompts(self, index, slot, sim):
        self.auto_points[(index, slot)] = super().point_prompts(index, slot, sim)
        ref = self.video["results"][index]["objects"][slot]
        return ref["topk_xy"][:2].numpy(), ref["topk_label"][:2].numpy()

    def choose(self, call, index, slots, auto):
        objects = self.video["results"][index]["objects"]
        return torch.tensor([int(objects[s][call]["ic_index"]) for s in slots], dtype=torch.int64)


class _Recorder:
    """Every step of every object, keyed ``(event, frame, slot)`` as the tracker's diagnostics
    give them: ``events`` holds what was used, ``auto`` what the tracker decided on its own."""

    def __init__(self, results: list, tracker: PerSAMTracker) -> None:
        self.events: dict[tuple[str, int, int], Any] = {}
        self.auto: dict[tuple[str, int, int], Any] = {}
        for r in results[1:]:
            for st in r.diagnostics:
                i, j = r.index, st.slot
                self.events[("points", i, j)] = (st.points, st.labels)
                self.events[("box_prompt", i, j)] = st.box_prompt
                for call, rec in st.calls.items():
                    info = {"scores": rec.scores, "low_res": rec.low_res}
                    if rec.areas is not None:
                        info["areas"] = rec.areas
                    if rec.box is not None:
                        info["box"] = rec.box
                    self.events[(call, i, j)] = info
                    if rec.choice is not None:
                        k = call[-1]
                        self.events[(f"choice{k}", i, j)] = rec.choice
                        self.auto[(f"choice{k}", i, j)] = rec.auto_choice
                if st.logits is not None:
                    self.events[("logits", i, j)] = st.logits
        for key, value in getattr(tracker, "auto_points", {}).items():
            self.auto[("points", *key)] = value


def _run(model, video: dict[str, Any], compat: str, feed: bool) -> tuple[list, _Recorder, PerSAMTracker]:
    frames = video["frames"].numpy()
    first = load_first_mask(video["gt_labels"][0].numpy())
    topk = int(video["args"]["topk"])
    if feed:
        tracker = _FedTracker(model, video, compat=compat, topk=topk)
    else:
        tracker = PerSAMTracker(model, compat=compat, topk=topk, diagnostics=True)
    results = [tracker.initialize(frames[0], first, 0)]
    with torch.no_grad():
        for i in range(1, len(frames)):
            results.append(tracker.step(frames[i], i))
    return results, _Recorder(results, tracker), tracker


@pytest.fixture(scope="module")
def official_fed(tiny, video):
    return _run(tiny, video, "official", feed=True)


@pytest.fixture(scope="module")
def official_auto(tiny, video):
    return _run(tiny, video, "official", feed=False)


@pytest.fixture(scope="module")
def fixed_auto(tiny, video):
    return _run(tiny, video, "fixed", feed=False)


# ------------------------------------------------------------------------------ official, step by step
def test_reference_features_match(tiny, video, official_fed):
    _, _, tracker = official_fed
    assert [o.object_id for o in tracker.objects] == video["object_labels"].tolist()
    for obj, ref in zip(tracker.objects, video["objects"], strict=True):
        torch.testing.assert_close(
            obj.concept.target_feat.reshape(1, -1), ref["fore_feat"], atol=FEAT_ATOL, rtol=0
        )
    # The whole video costs one encoder pass per frame, the first frame included.
    assert tiny.model.image_encoder.calls >= len(video["frames"])


def test_official_prompts_match(video, official_fed):
    _, rec, _ = official_fed
    for i, res in video["results"].items():
        for j, ref in enumerate(res["objects"]):
            xy, labels = rec.auto[("points", i, j)]
            fragile = float(ref["top2_margin_rel"]) < 1e-5  # frame 5 object 0: 2nd vs 3rd point
            if fragile:
                assert xy[0].tolist() == ref["topk_xy"][0].tolist()
            else:
                assert xy.tolist() == ref["topk_xy"][:2].tolist(), (i, j)
            assert labels.tolist() == [1, 1]
            box, centre = rec.events[("box_prompt", i, j)]
            assert box.tolist() == ref["box_prompt"].tolist(), (i, j)
            assert centre.tolist() == ref["center"][0].tolist(), (i, j)


def test_official_calls_match(video, official_fed):
    _, rec, _ = official_fed
    rows, cols = video["lr_rows"], video["lr_cols"]
    hr_rows, hr_cols = video["hr_rows"], video["hr_cols"]
    h, w = video["frames"].shape[1:3]
    for i, res in video["results"].items():
        for j, ref in enumerate(res["objects"]):
            c1, c2, c3 = (rec.events[(f"call{k}", i, j)] for k in (1, 2, 3))
            r1, r2, r3 = ref["call1"], ref["call2"], ref["call3"]
            # Call 1: points + box, the "largest" mask by uint8 area.
            torch.testing.assert_close(c1["scores"], r1["scores"], atol=SCORE_ATOL, rtol=0)
            assert (c1["areas"] - r1["mask_area"]).abs().max() <= 3, (i, j)
            torch.testing.assert_close(
                _grid(c1["low_res"][int(r1["ic_index"])], rows, cols),
                r1["chosen_low_res_logits_grid"],
                atol=LOW_RES_ATOL,
                rtol=0,
            )
            for m in range(3):
                _assert_stats(_stats(c1["low_res"][m]), r1["low_res_logits_stats"][m], 256 * 256)
            if bool(r1["uint8_choice_stable"]):
                assert rec.auto[("choice1", i, j)] == int(r1["ic_index"]), (i, j)
            # Call 2: points + mask input.
            torch.testing.assert_close(c2["scores"], r2["scores"], atol=SCORE_ATOL, rtol=0)
            torch.testing.assert_close(
                _grid(c2["low_res"][int(r2["ic_index"])], rows, cols),
                r2["chosen_low_res_logits_grid"],
                atol=LOW_RES_ATOL,
                rtol=0,
            )
            assert rec.auto[("choice2", i, j)] == int(r2["ic_index"])
            # Call 3: points + refined box + mask input; its logits enter the label map.
            assert c3["box"].tolist() == ref["refine_box"].tolist(), (i, j)
            torch.testing.assert_close(c3["scores"], r3["scores"], atol=SCORE_ATOL, rtol=0)
            torch.testing.assert_close(
                _grid(c3["low_res"][int(r3["ic_index"])], rows, cols),
                r3["chosen_low_res_logits_grid"],
                atol=LOW_RES_ATOL,
                rtol=0,
            )
            if float(r3["score_margin"]) > 1e-4:
                assert rec.auto[("choice3", i, j)] == int(r3["ic_index"])
            logits = rec.events[("logits", i, j)]
            torch.testing.assert_close(
                _grid(logits, hr_rows, hr_cols), r3["chosen_logits_grid"], atol=LOGITS_ATOL, rtol=0
            )
            _assert_stats(_stats(logits), r3["chosen_logits_stats"], h * w)


def test_official_label_maps_step_by_step(video, official_fed):
    results, _, _ = official_fed
    assert np.array_equal(results[0].label_map, video["gt_labels"][0].numpy())
    for r in results[1:]:
        ref = video["results"][r.index]
        assert (r.label_map != ref["label_map"].numpy()).sum() <= MAX_LABEL_PIXELS, r.index
        assert sorted(int(v) for v in np.unique(r.label_map) if v) == ref["next_box_labels"].tolist()


# ------------------------------------------------------------------------------ official, end to end
def test_official_end_to_end_label_maps(video, official_auto):
    results, _, _ = official_auto
    assert [r.index for r in results] == list(range(len(video["frames"])))
    for r in results[1:]:
        diff = int((r.label_map != video["results"][r.index]["label_map"].numpy()).sum())
        assert diff <= MAX_LABEL_PIXELS, (r.index, diff)
        assert all(r.present.values())


def test_track_driver_matches_tracker(tiny, video, official_auto, tmp_path):
    """The public driver (background decoding, palette PNG mask input) gives the same maps."""
    from PIL import Image

    png = tmp_path / "00000.png"
    im = Image.fromarray(video["gt_labels"][0].numpy(), mode="L").convert("P")
    im.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (768 - 9))
    im.save(png)
    assert np.array_equal(load_label_map(png), video["gt_labels"][0].numpy())
    results = list(track(tiny, video["frames"].numpy(), png, compat="official", prefetch=2))
    for ours, ref in zip(results, official_auto[0], strict=True):
        assert ours.index == ref.index
        assert np.array_equal(ours.label_map, ref.label_map)


# ------------------------------------------------------------------------------ fixed
def test_fixed_picks_the_truly_largest_mask(video, fixed_auto):
    _, rec, _ = fixed_auto
    for i, res in video["results"].items():
        for j, _ref in enumerate(res["objects"]):
            areas = rec.events[("call1", i, j)]["areas"]
            assert rec.events[("choice1", i, j)] == int(torch.argmax(areas))


def test_fixed_differs_from_official_exactly_where_uint8_choice_did(video, fixed_auto, official_fed):
    fixed, rec, _ = fixed_auto
    _, orec, _ = official_fed
    agree_frames, differ_frames = [], []
    for r in fixed[1:]:
        i = r.index
        ref = video["results"][i]
        same_boxes = all(
            rec.events[("box_prompt", i, j)][0].tolist() == o["box_prompt"].tolist()
            for j, o in enumerate(ref["objects"])
        )
        agree = []
        for j, o in enumerate(ref["objects"]):
            same_choice = int(o["call1"]["ic_index"]) == int(o["call1"]["true_largest_index"])
            agree.append(same_choice)
            if not same_boxes:
                continue
            s2, o2 = rec.events[("call2", i, j)]["scores"], o["call2"]["scores"]
            if same_choice and rec.events[("points", i, j)][0].tolist() == o["topk_xy"][:2].tolist():
                torch.testing.assert_close(s2, o2, atol=SCORE_ATOL, rtol=0)
            elif not same_choice:
                assert float((s2 - o2).abs().max()) > 1e-4, (i, j)  # another mask input
        diff = int((r.label_map != ref["label_map"].numpy()).sum())
        if same_boxes and all(agree):
            agree_frames.append(i)
            assert diff <= MAX_LABEL_PIXELS, (i, diff)
        elif not all(agree):
            differ_frames.append(i)
            assert diff > MAX_LABEL_PIXELS, (i, diff)
    # In this fixture the reference's uint8 choice matched the true largest mask for both objects
    # on frame 2 only.
    assert agree_frames == [2]
    assert differ_frames == [1, 3, 4, 5, 6, 7]


def test_fixed_is_sane(video, fixed_auto):
    results, _, _ = fixed_auto
    for r in results[1:]:
        assert r.label_map.dtype == np.uint8 and r.label_map.shape == video["gt_labels"].shape[1:]
        assert set(np.unique(r.label_map).tolist()) <= {0, 1, 2}
        assert all(r.present.values())
        for oid in (1, 2):
            assert r.scores[oid] is not None and np.isfinite(r.scores[oid])
            x0, y0, x1, y1 = r.boxes[oid]
            ys, xs = np.nonzero(r.label_map == oid)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
