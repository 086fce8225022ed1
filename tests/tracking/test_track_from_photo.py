"""Tracking from a photo: the object is learned from a photo, found on the first frame where it
appears, and tracked from there (``persam.track(..., concepts=...)`` and ``persam track --ref``).

The colour segmenter of ``test_video`` makes finding checkable: a red shape over a grey photo is
found where it is, and nothing is found on frames without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ColourBackbone
from PIL import Image
from skimage import data

import persam
from persam.cli import main
from persam.errors import InputError
from persam.pipelines.video import track

T, H, W, APPEARS = 5, 64, 80, 2


def _grey_photo(h: int, w: int, offset: int = 0) -> np.ndarray:
    """A grey photo (no chroma, so the colour segmenter sees only the shapes drawn on it)."""
    cam = np.asarray(Image.fromarray(data.camera()).resize((w + 40, h + 40)))[offset : offset + h, :w]
    return np.repeat(cam[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def video() -> tuple[np.ndarray, np.ndarray]:
    """A red square appearing on frame ``APPEARS`` and moving right over a photo; its labels."""
    frames = np.repeat(_grey_photo(H, W)[None], T, axis=0)
    labels = np.zeros((T, H, W), np.uint8)
    for i in range(APPEARS, T):
        x = 10 + 6 * (i - APPEARS)
        frames[i, 20:38, x : x + 18] = (220, 30, 30)
        labels[i, 20:38, x : x + 18] = 1
    return frames, labels


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, np.ndarray]:
    """Another photo with the red square elsewhere, and its mask."""
    image = _grey_photo(70, 90, offset=15)
    mask = np.zeros((70, 90), bool)
    mask[30:52, 50:72] = True
    image[mask] = (215, 35, 35)
    return image, mask


def test_track_from_a_photo_finds_the_object_then_tracks_it(video, photo):
    frames, labels = video
    model = ColourBackbone()
    concept = persam.learn(model, *photo)
    results = list(track(model, frames, concepts=[concept], tracker="persam"))
    assert [r.index for r in results] == list(range(T))
    for r in results[:APPEARS]:  # before it appears: background, absent, no score
        assert not r.label_map.any() and r.present == {1: False} and r.scores == {1: None}
        assert not r.is_reference
    found = results[APPEARS]
    assert found.is_reference and np.array_equal(found.label_map, labels[APPEARS])
    for r, lab in zip(results[APPEARS + 1 :], labels[APPEARS + 1 :], strict=True):
        assert r.present == {1: True} and np.array_equal(r.label_map, lab)


def test_several_objects_start_on_the_first_frame_with_all_of_them(video, photo):
    frames, labels = video
    frames, labels = frames.copy(), labels.copy()
    frames[APPEARS + 1 :, 44:58, 50:64] = (30, 200, 40)  # a green square, one frame later
    labels[APPEARS + 1 :, 44:58, 50:64] = 2
    green_photo = _grey_photo(50, 50)
    green_mask = np.zeros((50, 50), bool)
    green_mask[10:30, 15:35] = True
    green_photo[green_mask] = (35, 190, 45)
    model = ColourBackbone()
    concepts = [persam.learn(model, *photo), persam.learn(model, green_photo, green_mask)]
    results = list(track(model, frames, concepts=concepts, tracker="persam"))
    assert [r.is_reference for r in results] == [i == APPEARS + 1 for i in range(T)]
    assert all(r.object_ids == [1, 2] for r in results)
    assert not any(r.label_map.any() for r in results[: APPEARS + 1])
    for r, lab in zip(results[APPEARS + 1 :], labels[APPEARS + 1 :], strict=True):
        assert np.array_equal(r.label_map, lab)


def test_find_threshold_and_concept_errors(video, photo):
    frames, labels = video
    model = ColourBackbone()
    concept = persam.learn(model, *photo)
    # The colour segmenter's masks score 0.9: above it, nothing is ever found.
    results = list(track(model, frames, concepts=[concept], find_threshold=0.95))
    assert len(results) == T and not any(r.label_map.any() for r in results)
    with pytest.raises(InputError, match="either first_mask or concepts"):
        track(model, frames, labels[0], concepts=[concept])
    with pytest.raises(InputError, match="either first_mask or concepts"):
        track(model, frames)
    with pytest.raises(InputError, match="find_threshold must be in"):
        track(model, frames, concepts=[concept], find_threshold=1.5)
    with pytest.raises(InputError, match="at least one concept"):
        track(model, frames, concepts=[])


def _write_frames(folder, frames: np.ndarray) -> None:
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")


def test_cli_track_from_a_photo(video, photo, tmp_path, monkeypatch, capsys):
    frames, labels = video
    _write_frames(tmp_path / "frames", frames)
    Image.fromarray(photo[0]).save(tmp_path / "dog.png")
    Image.fromarray(photo[1].astype(np.uint8) * 255).save(tmp_path / "dog_mask.png")
    monkeypatch.setattr("persam.cli.track.load_model", lambda args, *_: ColourBackbone())
    out = tmp_path / "out"
    rc = main(["track", str(tmp_path / "frames"), "--ref", str(tmp_path / "dog.png"), "--ref-mask",
               str(tmp_path / "dog_mask.png"), "-o", str(out), "--tracker", "persam", "-q"])  # fmt: skip
    assert rc == 0 and f"{T} frame(s), 1 object(s)" in capsys.readouterr().out
    for i in range(T):
        assert np.array_equal(np.asarray(Image.open(out / f"{i:05d}.png")), labels[i])
    doc = json.loads((out / "scores.json").read_text())
    assert doc["object_ids"] == [1] and doc["references"] == [str(tmp_path / "dog.png")]
    assert [f["objects"]["1"]["present"] for f in doc["frames"]] == [i >= APPEARS for i in range(T)]
    assert doc["frames"][APPEARS]["reference"]
    # A saved concept file gives the same run.
    persam.learn(ColourBackbone(), *photo).save(tmp_path / "dog.persam")
    again = tmp_path / "again"
    rc = main(
        ["track", str(tmp_path / "frames"), "--concept", str(tmp_path / "dog.persam"), "-o", str(again), "-q"]
    )
    assert rc == 0
    for i in range(T):
        assert np.array_equal(np.asarray(Image.open(again / f"{i:05d}.png")), labels[i])


def test_cli_photo_option_errors(video, photo, tmp_path, monkeypatch, capsys):
    frames, labels = video
    _write_frames(tmp_path / "frames", frames)
    Image.fromarray(photo[0]).save(tmp_path / "dog.png")
    Image.fromarray(labels[-1] * 255).save(tmp_path / "first.png")
    monkeypatch.setattr("persam.cli.track.load_model", lambda args, *_: ColourBackbone())
    base = ["track", str(tmp_path / "frames"), "-o", str(tmp_path / "out"), "-q"]
    ref, first = tmp_path / "dog.png", tmp_path / "first.png"
    cases = [
        (["--ref", str(tmp_path / "dog.png")], "--ref-mask: got 0 mask(s) for 1 --ref image(s)"),
        (["--ref", str(ref), "--ref-mask", str(first), "--mask", str(first)], "--mask cannot be combined"),
        (["--concept", str(tmp_path / "none.persam")], "--concept"),
        (["--mask", str(tmp_path / "first.png"), "--tracker", "sam2"], "tracker 'sam2' needs a SAM 2 model"),
    ]
    for args, message in cases:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_command_line_defaults_match_the_library():
    from persam.cli import track_objects
    from persam.pipelines import find
    from persam.tracking import TRACKER_CHOICES

    assert track_objects.FIND_THRESHOLD == find.FIND_THRESHOLD
    assert track_objects.TRACKER_CHOICES == TRACKER_CHOICES


def _vanishing_pixel(model, h: int, w: int) -> np.ndarray:
    """A one-pixel mask that the bilinear resampling onto ``model``'s embedding grid misses."""
    from persam.personalize.reference import best_covered_cells

    for x in range(w):
        mask = np.zeros((h, w), bool)
        mask[0, x] = True
        if not best_covered_cells(model, mask).any():
            return mask
    raise AssertionError("every pixel of the first row reaches the embedding grid")


def test_a_found_mask_the_tracker_cannot_learn_from_is_not_found(monkeypatch):
    """PerSAM can find a mask of scattered pixels that misses every embedding cell: searching
    goes on instead of the tracker failing on it."""
    from types import SimpleNamespace

    import persam.pipelines.find as find
    from persam.errors import MaskTooSmallError
    from persam.readers import load_first_mask
    from persam.tracking import PerSAMTracker

    model = persam.build_model("tiny_random_sam", checkpoint="none", device="cpu", dtype="float32")
    frame = _grey_photo(240, 320)  # 3.2 image pixels per model pixel: some pixels fall between cells
    model.set_image(frame)
    speck = _vanishing_pixel(model, 240, 320)
    square = np.zeros((240, 320), bool)
    square[60:140, 100:200] = True
    for mask, expected in ((speck, None), (square, square)):
        found = SimpleNamespace(found=True, mask=mask)
        monkeypatch.setattr(find, "segment_concepts", lambda *a, found=found, **k: [found])
        first = find.find_objects(model, frame, [object()], find_threshold=0.5)
        assert (first is None) if expected is None else np.array_equal(first.masks[0], expected)
    # The same mask given as the first frame's mask: an error naming the mask and the object.
    first = load_first_mask([speck])
    first.source = "first.png"
    with pytest.raises(MaskTooSmallError, match=r"^first\.png: object 1: reference mask too small"):
        PerSAMTracker(model).initialize(frame, first)
