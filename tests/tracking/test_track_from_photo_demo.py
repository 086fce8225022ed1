"""The demo's video paths beyond the marked first frame, called directly (no browser): the tracker
choice and tracking the object of a reference photo."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import ColourBackbone
from PIL import Image
from test_track_from_photo import APPEARS, T, _write_frames
from test_track_from_photo import photo as photo  # noqa: F401 (fixtures)
from test_track_from_photo import video as video  # noqa: F401

pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `apps` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from apps import demo  # noqa: E402


@pytest.fixture()
def engine(tmp_path: Path, monkeypatch) -> demo.DemoEngine:
    """An engine whose model is the deterministic colour segmenter."""
    cache = demo.ModelCache()
    model = ColourBackbone()
    monkeypatch.setattr(cache, "get", lambda settings: model)
    return demo.DemoEngine(cache, work_dir=tmp_path / "work")


def _label_maps(zip_path: Path) -> list[np.ndarray]:
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        return [np.asarray(Image.open(zf.open(n))) for n in names]


def test_engine_tracks_the_object_of_a_reference_photo(engine, video, photo, tmp_path):  # noqa: F811
    frames, labels = video
    _write_frames(tmp_path / "clip", frames)
    settings = demo.ModelSettings("colour")
    res = engine.track_video(
        settings, str(tmp_path / "clip"), None, "persam", tracker="persam", reference=photo
    )
    assert res.frames == T
    assert res.summary == (
        f"Tracked 1 object(s) over {T} frame(s). The object was found on frame {APPEARS}; "
        "earlier frames have no mask."
    )
    maps = _label_maps(res.zip_path)
    assert len(maps) == T and all(np.array_equal(m, lab) for m, lab in zip(maps, labels, strict=True))
    # The page's callback takes the Images tab's reference (photo + clicked mask) the same way.
    cb = demo.PageCallbacks(engine)
    out = cb.on_run_video(
        str(tmp_path / "clip"), None, [], None, "photo", "PerSAM", "auto", photo[0], photo[1], None,
        "clicks", "colour", "", "cpu", "float32", progress=lambda f, desc="": None,
    )  # fmt: skip
    assert Path(out[0]).is_file() and f"found on frame {APPEARS}" in out[2]


def test_engine_video_errors_name_the_problem(engine, video, photo, tmp_path):  # noqa: F811
    frames, labels = video
    _write_frames(tmp_path / "clip", frames)
    settings, clip = demo.ModelSettings("colour"), str(tmp_path / "clip")
    with pytest.raises(
        demo.DemoError, match="Mark at least one object on the first frame, or give a reference"
    ):
        engine.track_video(settings, clip, np.zeros(labels[0].shape, np.uint8), "persam")
    with pytest.raises(demo.DemoError, match="Unknown tracker 'xmem'"):
        engine.track_video(settings, clip, labels[-1], "persam", tracker="xmem")
    with pytest.raises(demo.DemoError, match="tracker 'sam2' needs a SAM 2 model"):
        engine.track_video(settings, clip, labels[-1], "persam", tracker="sam2")
    empty = (photo[0], np.zeros(photo[1].shape, bool))
    with pytest.raises(demo.DemoError, match="reference mask is empty"):
        engine.track_video(settings, clip, None, "persam", reference=empty)
