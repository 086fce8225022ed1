"""The web demo's parts without a server: inputs, settings, engine, examples and the work folder."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import disc_scene, disc_video
from PIL import Image

pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `apps` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from apps import demo  # noqa: E402
from apps.demo import engine as demo_engine  # noqa: E402

H, W = 96, 128


def disc_mask(h: int = H, w: int = W, centre: tuple[int, int] = (60, 45), radius: int = 18) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, centre, radius, 1, -1)
    return m.astype(bool)


def test_parse_clicks() -> None:
    assert demo.parse_clicks("") == []
    assert demo.parse_clicks("[[1, 2.5, 1], [3, 4, 0]]") == [(1.0, 2.5, 1), (3.0, 4.0, 0)]
    assert demo.parse_clicks("[[1, 2, 1, 3]]", with_object=True) == [(1.0, 2.0, 1, 3)]
    for bad in ("[[1, 2]]", "[[1, 2, 5]]", "{}", "[[1, 2, true]]", "nope", '[["a", 2, 1]]'):
        with pytest.raises(demo.DemoError):
            demo.parse_clicks(bad)
    with pytest.raises(demo.DemoError, match="Object ids"):
        demo.parse_clicks("[[1, 2, 1, 0]]", with_object=True)


def test_brush_labels_map_colours_to_objects() -> None:
    layer = np.zeros((H, W, 4), np.uint8)
    layer[10:20, 10:20] = (*demo.davis_colour(1), 255)
    layer[30:40, 50:60] = (*demo.davis_colour(2), 128)  # a soft stroke still counts
    layer[50:52, 5:7] = (200, 10, 10, 255)  # closest to object 1's dark red
    value = {"background": disc_scene(), "layers": [layer], "composite": disc_scene()}
    colours = [demo.davis_colour(k) for k in range(1, 7)]
    labels = demo.brush_labels(value, colours)
    assert labels.shape == (H, W)
    assert (labels[10:20, 10:20] == 1).all() and (labels[30:40, 50:60] == 2).all()
    assert (labels[50:52, 5:7] == 1).all()
    assert int((labels > 0).sum()) == 100 + 100 + 4
    np.testing.assert_array_equal(demo.brush_mask(value), labels > 0)
    assert demo.brush_mask({"background": disc_scene(), "layers": [np.zeros((H, W, 4), np.uint8)]}) is None
    assert demo.editor_background(value).shape == (H, W, 3)


def test_command_line_defaults_are_local_and_private() -> None:
    args = demo.parse_args([])
    assert (args.host, args.port, args.share, args.random_model) == ("127.0.0.1", 7860, False, False)
    args = demo.parse_args(["--host", "0.0.0.0", "--port", "8000", "--random-model"])
    assert (args.host, args.port, args.share, args.random_model) == ("0.0.0.0", 8000, False, True)
    assert (args.model, args.checkpoint, args.dtype) == ("sam_vit_b", "", demo.DEFAULT_DTYPE)
    assert args.max_file_size == "50mb" and args.work_dir is None
    args = demo.parse_args(["--model", "cfg/my_sam.json", "--checkpoint", "none", "--dtype", "bfloat16"])
    assert (args.model, args.checkpoint, args.dtype) == ("cfg/my_sam.json", "none", "bfloat16")
    with pytest.raises(SystemExit):
        demo.parse_args(["--dtype", "float8"])


def test_model_dropdown_lists_registry_random_and_given_models() -> None:
    values = [value for _, value in demo.model_choices("sam_vit_b")]
    assert values[: len(demo.MODEL_CHOICES)] == demo.MODEL_CHOICES
    assert {
        "tiny_random_sam",
        "tiny_random_mobile_sam",
        "tiny_random_efficient_sam",
        "tiny_random_sam2",
    } <= set(values)
    assert values.count("sam_vit_b") == 1
    assert [value for _, value in demo.model_choices("cfg/my_sam.json")][-1] == "cfg/my_sam.json"


def test_clicks_reuse_the_reference_embedding(tmp_path: Path) -> None:
    engine = demo.DemoEngine(demo.ModelCache(random_model=True), work_dir=tmp_path)
    settings = demo.ModelSettings("sam_vit_b")
    model = engine.cache.get(settings)
    encoded = []
    original = model._encode_image
    model._encode_image = lambda image: (encoded.append(image.shape), original(image))[1]
    img = disc_scene()
    for clicks in ([(60, 45, 1)], [(60, 45, 1), (5, 90, 0)], [(60, 45, 1), (5, 90, 0), (70, 50, 1)]):
        assert engine.mask_from_clicks(settings, img, clicks).shape == (H, W)
    assert encoded == [(H, W, 3)]
    with pytest.raises(demo.DemoError, match="outside"):
        engine.mask_from_clicks(settings, img, [(W + 5, 10, 1)])
    with pytest.raises(demo.DemoError, match="positive"):
        engine.mask_from_clicks(settings, img, [(10, 10, 0)])


def test_track_video_reports_progress_frame_by_frame(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    engine = demo.DemoEngine(demo.ModelCache(random_model=True), work_dir=tmp_path / "work")
    labels = np.zeros((H, W), np.uint8)
    labels[disc_mask()] = 3
    seen: list[tuple[float, str]] = []
    res = engine.track_video(
        demo.ModelSettings("sam_vit_b"),
        str(disc_video(tmp_path / "clip.avi")),
        labels,
        "persam",
        progress=lambda fraction, text: seen.append((fraction, text)),
    )
    assert res.frames == 6 and res.summary == "Tracked 1 object(s) over 6 frame(s)."
    assert [round(f, 3) for f, _ in seen] == [round(k / 6, 3) for k in range(1, 7)]
    assert seen[-1][1] == "frame 6 of 6"


def test_unavailable_device_and_unknown_model_are_messages(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(demo.DemoError, match="cuda is not available"):
            demo.resolve_device("cuda")
    assert demo.resolve_device("cpu") == "cpu"
    with pytest.raises(demo.DemoError, match="Unknown model"):
        demo.resolve_checkpoint_path("sam_vit_x", "")
    with pytest.raises(demo.DemoError, match="Checkpoint file not found"):
        demo.resolve_checkpoint_path("sam_vit_b", str(tmp_path / "missing.pth"))
    ckpt = tmp_path / "given.pth"
    ckpt.write_bytes(b"")
    assert demo.resolve_checkpoint_path("sam_vit_b", f"  {ckpt}  ") == ckpt
    assert demo.resolve_checkpoint_path("tiny_random_sam", " None ") is None
    assert demo.resolve_dtype(" BFloat16 ") == "bfloat16"
    with pytest.raises(demo.DemoError, match="Unknown precision 'float8'"):
        demo.resolve_dtype("float8")


def test_default_precision_is_auto_only_when_the_library_resolves_it() -> None:
    from persam.devices import resolve_dtype
    from persam.errors import InputError

    try:
        resolve_dtype("auto")
    except InputError:
        assert demo.DEFAULT_DTYPE == "float32" and "auto" not in demo.DTYPE_CHOICES
    else:
        assert demo.DEFAULT_DTYPE == "auto" and "auto" in demo.DTYPE_CHOICES
    assert demo.ModelSettings("sam_vit_b").dtype == demo.DEFAULT_DTYPE


def test_captions_give_the_score_and_say_not_found() -> None:
    assert demo.caption("a.png", 0.91234, True) == "a.png — score 0.912"
    assert demo.caption("b.jpg", 0.1, False) == "b.jpg — score 0.100 (not found)"
    assert demo.caption("c.png", float("nan"), True) == "c.png — no score"


def test_examples_are_small_readable_and_made_once(tmp_path: Path) -> None:
    from persam.io import load_image, load_mask
    from persam.readers import open_video

    ex = demo.make_examples(tmp_path)
    assert [e.label for e in ex.images] == ["sticker", "coffee cup"] and len(ex.videos) == 1
    files = sorted((tmp_path / "examples").iterdir())
    assert sum(f.stat().st_size for f in files) < 1_000_000
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    for e in ex.images:
        ref = load_image(e.reference)
        if e.mask is not None:  # an exact mask: the sticker's disc, a few thousand pixels
            mask = load_mask(e.mask)
            assert mask.shape == ref.shape[:2] and 3_000 < mask.sum() < 10_000
        else:
            clicks = demo.parse_clicks(e.clicks)
            assert any(c[2] == 1 for c in clicks)
            assert all(0 <= c[0] < ref.shape[1] and 0 <= c[1] < ref.shape[0] for c in clicks)
        assert len(e.targets) >= 2 and all(load_image(t).ndim == 3 for t in e.targets)
    with open_video(ex.videos[0].video) as source:
        frames = [f for _, f in source.frames()]
    assert len(frames) == 12 and frames[0].shape == (120, 180, 3)
    (x, y, label, obj), *_ = demo.parse_clicks(ex.videos[0].clicks, with_object=True)
    assert label == 1 and obj == 1 and frames[0][int(y), int(x), 0] > 200  # on the yellow ball
    demo.make_examples(tmp_path)  # a second start reuses the files
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes


def test_work_dir_is_cleaned_up(tmp_path: Path) -> None:
    owned = demo.WorkDir()
    run = owned.new_run()
    (run / "mask.png").write_bytes(b"x")
    owned.cleanup()
    assert not owned.path.exists()

    given = demo.WorkDir(tmp_path / "work")
    demo.make_examples(given.path)
    run = given.new_run()
    given.cleanup()
    assert not run.exists()  # this run's results go, the user's folder and the examples stay
    assert (given.path / "examples" / "cup_reference.jpg").is_file()
    given.cleanup()  # twice is harmless


def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A PNG whose header claims ``width x height`` pixels (far over Pillow's safety limit) in a few
    hundred bytes: Pillow refuses it with ``DecompressionBombError``."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(row * 8)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def test_decompression_bombs_are_spotted_from_the_header(tmp_path: Path) -> None:
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb_png(tmp_path / "big.png"))
    assert demo_engine.too_large(tmp_path / "big.png") == "too large to read safely"
    Image.fromarray(disc_scene()).save(tmp_path / "fine.png")
    assert demo_engine.too_large(tmp_path / "fine.png") is None


def test_not_found_targets_are_captioned_and_left_out_of_coco(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    engine = demo.DemoEngine(demo.ModelCache(random_model=True), work_dir=tmp_path / "work")
    settings = demo.ModelSettings("sam_vit_b")
    real = engine.concept(settings, disc_scene(), disc_mask(), "persam")

    class AbsentInNarrowImages:
        """The learned concept, except that it finds nothing in images narrower than the reference."""

        def segment(self, image: np.ndarray, **kwargs: object) -> object:
            result = real.segment(image, **kwargs)
            return result if image.shape[1] == W else dataclasses.replace(result, found=False)

    monkeypatch.setattr(engine, "concept", lambda *args: AbsentInNarrowImages())
    for name, (w, h) in {"wide.png": (W, H), "narrow.png": (112, 80)}.items():
        Image.fromarray(disc_scene(h, w)).save(tmp_path / name)
    res = engine.segment_images(
        settings,
        disc_scene(),
        disc_mask(),
        "persam",
        [str(tmp_path / "wide.png"), str(tmp_path / "narrow.png")],
    )
    captions = {t.name: t.caption for t in res.targets}
    assert not captions["wide.png"].endswith("(not found)")
    assert captions["narrow.png"].startswith("narrow.png — score ") and captions["narrow.png"].endswith(
        "(not found)"
    )
    coco = json.loads(res.coco_path.read_text())
    ids = {im["file_name"]: im["id"] for im in coco["images"]}
    annotated = {a["image_id"] for a in coco["annotations"]}
    assert set(ids) == {"wide.png", "narrow.png"}
    assert ids["narrow.png"] not in annotated
    assert res.summary == "Segmented 2 image(s) with PerSAM."


def test_targets_with_the_same_name_keep_both_results(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    engine = demo.DemoEngine(demo.ModelCache(random_model=True), work_dir=tmp_path / "work")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(disc_scene()).save(tmp_path / folder / "photo.png")
    res = engine.segment_images(
        demo.ModelSettings("sam_vit_b"), disc_scene(), disc_mask(), "persam",
        [str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png")],
    )  # fmt: skip
    assert [t.name for t in res.targets] == ["photo.png", "photo_2.png"]
    import zipfile

    with zipfile.ZipFile(res.zip_path) as zf:
        assert sorted(zf.namelist()) == ["photo.png", "photo_2.png"]


def test_tiny_random_sam2_serves_both_flows(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    engine = demo.DemoEngine(demo.ModelCache(), work_dir=tmp_path / "work")
    settings = demo.ModelSettings("tiny_random_sam2", "none", "cpu")
    Image.fromarray(disc_scene()).save(tmp_path / "t.png")
    res = engine.segment_images(settings, disc_scene(), disc_mask(), "persam", [str(tmp_path / "t.png")])
    assert res.summary == "Segmented 1 image(s) with PerSAM." and len(res.targets) == 1
    labels = disc_mask().astype(np.uint8)
    video = engine.track_video(settings, str(disc_video(tmp_path / "clip.avi")), labels, "persam")
    assert video.summary == "Tracked 1 object(s) over 6 frame(s)."


def test_candidates_is_offered_only_where_the_library_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.demo import settings as demo_settings
    from persam.methods import method_spec

    def spec(method: str):
        return None if method == "candidates" else method_spec(method)

    try:
        method_spec("candidates")
        known = True
    except (KeyError, ValueError):
        known = False
    assert ("Candidates" in demo_settings.image_method_labels()) == known
    monkeypatch.setattr(demo_settings, "method_spec", spec)
    assert demo_settings.image_method_labels() == {
        "PerSAM": "persam", "PerSAM-F": "persam_f", "Candidates": "candidates",
    }  # fmt: skip
    assert demo_settings.method_title("candidates") == "Candidates"


@pytest.mark.parametrize("label, method", [("PerSAM-F", "persam_f"), ("Candidates", "candidates")])
def test_the_method_choice_reaches_learn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str, method: str
) -> None:
    """The Images tab's method goes to ``learn`` as the library spells it, through the same code
    path for every method (here ``candidates`` learns as PerSAM-F where the library lacks it)."""
    from apps.demo import settings as demo_settings
    from apps.demo.callbacks import PageCallbacks
    from persam.methods import method_spec

    torch.set_num_threads(1)
    monkeypatch.setattr(demo_settings, "method_spec", lambda m: None if m == "candidates" else method_spec(m))
    seen = []
    real_learn = demo_engine.learn

    def learn(model, image, mask, *, method: str, **options):
        seen.append(method)
        return real_learn(model, image, mask, method="persam_f" if method == "candidates" else method)

    monkeypatch.setattr(demo_engine, "learn", learn)
    engine = demo.DemoEngine(demo.ModelCache(random_model=True), work_dir=tmp_path / "work")
    Image.fromarray(disc_scene()).save(tmp_path / "t.png")
    out = PageCallbacks(engine).run_images(
        disc_scene(), disc_mask(), label, [str(tmp_path / "t.png")], demo.ModelSettings("sam_vit_b"),
        lambda *a, **k: None,
    )  # fmt: skip
    assert seen == [method]
    assert out[-1].startswith(f"Segmented 1 image(s) with {label}.")
    assert len(out) == 6 and all(Path(f).is_file() for f in out[1:5])


def test_candidates_segments_through_the_images_tab(tmp_path: Path) -> None:
    """With the library's ``candidates`` method the Images tab learns, ranks the generated masks and
    writes its downloads like the cascade methods do."""
    from apps.demo.callbacks import PageCallbacks
    from apps.demo.settings import image_method_labels

    torch.set_num_threads(1)
    assert image_method_labels()["Candidates"] == "candidates"
    engine = demo.DemoEngine(demo.ModelCache(), work_dir=tmp_path / "work")
    Image.fromarray(disc_scene()).save(tmp_path / "t.png")
    out = PageCallbacks(engine).run_images(
        disc_scene(), disc_mask(), "Candidates", [str(tmp_path / "t.png")],
        demo.ModelSettings("tiny_random_sam", "none", "cpu"), lambda *a, **k: None,
    )  # fmt: skip
    assert out[-1].startswith("Segmented 1 image(s) with Candidates.")
    assert len(out) == 6 and all(Path(f).is_file() for f in out[1:5])
