"""The web demo (apps/demo.py), started on 127.0.0.1 and driven with gradio_client.

A small random model serves every request (its masks are meaningless), so these tests check what
the page returns — images, videos and zips of the right sizes and counts, readable messages for
bad input, a server that keeps working — not segmentation quality.
"""

from __future__ import annotations

import json
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import disc_scene, disc_video, free_port
from PIL import Image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `apps` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from apps import demo  # noqa: E402

H, W = 96, 128
# model, checkpoint, device (ignored by the random model); the precision is left to its default.
SETTINGS = ("sam_vit_b", "", "cpu")


# ------------------------------------------------------------------------------------ test data
def disc_mask(h: int = H, w: int = W, centre: tuple[int, int] = (60, 45), radius: int = 18) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, centre, radius, 1, -1)
    return m.astype(bool)


@dataclass
class Data:
    ref: Path
    ref_mask: Path
    targets: list[Path]
    target_sizes: dict[str, tuple[int, int]]  # file name -> (W, H)
    video: Path
    first_mask: Path
    text_file: Path
    broken_video: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    d = tmp_path_factory.mktemp("demo-data")
    Image.fromarray(disc_scene()).save(d / "ref.png")
    Image.fromarray(disc_mask().astype(np.uint8) * 255).save(d / "ref_mask.png")
    sizes = {"a.png": (W, H), "b.jpg": (W, H), "c.png": (112, 80)}
    targets = []
    for k, (name, (w, h)) in enumerate(sizes.items()):
        Image.fromarray(disc_scene(h, w, centre=(30 + 20 * k, 40))).save(d / name)
        targets.append(d / name)
    labels = np.zeros((H, W), np.uint8)
    labels[disc_mask()] = 1
    labels[5:26, W - 30 : W - 9] = 2  # the blue square
    first = Image.frombytes("P", (W, H), labels.tobytes())
    first.putpalette(demo.DAVIS_PALETTE)
    first.save(d / "first.png")
    (d / "notes.txt").write_text("not an image\n")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return Data(
        d / "ref.png",
        d / "ref_mask.png",
        targets,
        sizes,
        disc_video(d / "clip.avi"),
        d / "first.png",
        d / "notes.txt",
        d / "broken.mp4",
    )


# ---------------------------------------------------------------------------------------- server
@dataclass
class Server:
    url: str
    client: gradio_client.Client
    engine: demo.DemoEngine


def start(tmp_path: Path, random_model: bool = True, argv: list[str] | None = None) -> tuple[object, Server]:
    """A served app; ``argv`` (the demo's command line) sets the defaults of the Settings panel."""
    args = demo.parse_args(argv or [])
    engine = demo.DemoEngine(demo.ModelCache(random_model=random_model), work_dir=tmp_path)
    app = demo.build_app(
        engine,
        banner=demo.RANDOM_BANNER if random_model else None,
        default_model=args.model,
        default_checkpoint=args.checkpoint,
        default_device=args.device,
        default_dtype=args.dtype,
    )
    _, url, _ = demo.serve(app, "127.0.0.1", free_port(), prevent_thread_lock=True)
    return app, Server(url, gradio_client.Client(url, verbose=False), engine)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # One intra-op thread: on a busy machine, several threads contending for the cores slow the
    # small model down many times over.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    app, srv = start(tmp_path_factory.mktemp("demo-work"))
    try:
        yield srv
    finally:
        app.close()
        torch.set_num_threads(threads)


def segment(
    srv: Server, ref, mask=None, clicks: str = "", method: str = "PerSAM", targets=(), settings=SETTINGS
):
    """``settings=()`` leaves the model settings out: the server's defaults apply."""
    f = gradio_client.handle_file
    return srv.client.predict(
        None if ref is None else f(str(ref)),
        None if mask is None else f(str(mask)),
        clicks,
        method,
        [f(str(t)) for t in targets],
        *settings,
        api_name="/segment_images",
    )


def track(srv: Server, video, first_mask=None, clicks: str = "", method: str = "PerSAM"):
    f = gradio_client.handle_file
    return srv.client.predict(
        None if video is None else f(str(video)),
        None if first_mask is None else f(str(first_mask)),
        clicks,
        method,
        *SETTINGS,
        api_name="/track_video",
    )


def assert_error(status: str, *words: str) -> None:
    assert "⚠️" in status, status
    for w in words:
        assert w.lower() in status.lower(), status
    assert "Traceback" not in status


def assert_mask_zip(path: str, sizes: dict[str, tuple[int, int]]) -> None:
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(Path(n).stem + ".png" for n in sizes)
        for name in sizes:
            with zf.open(Path(name).stem + ".png") as fh:
                im = Image.open(fh)
                im.load()
            assert im.mode == "L" and im.size == sizes[name]
            assert set(np.unique(np.asarray(im)).tolist()) <= {0, 255}


# ----------------------------------------------------------------------------------------- tests
def test_api_exposes_the_three_endpoints_only(server: Server) -> None:
    endpoints = set(server.client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/reference_mask", "/segment_images", "/track_video"}


def test_page_shows_the_random_model_banner(server: Server) -> None:
    with urllib.request.urlopen(server.url.rstrip("/") + "/config", timeout=10) as r:
        config = r.read().decode("utf-8")
    assert "masks are meaningless" in config


def test_segment_images_with_a_mask_image(server: Server, data: Data) -> None:
    gallery, zip_path, status = segment(server, data.ref, data.ref_mask, targets=data.targets)
    assert status == "Segmented 3 image(s) with PerSAM."
    assert len(gallery) == 3
    for item, target in zip(gallery, data.targets, strict=True):
        assert item["caption"].startswith(target.name + " — score ")
        with Image.open(item["image"]) as im:
            assert im.size == data.target_sizes[target.name]
    assert_mask_zip(zip_path, data.target_sizes)


def test_reference_embedding_and_concept_are_reused(server: Server, data: Data) -> None:
    _, _, status = segment(server, data.ref, data.ref_mask, targets=data.targets[:1])
    assert status.startswith("Segmented 1 image(s)")
    learned = server.engine.concepts_learned
    assert learned >= 1
    for targets in (data.targets[1:], data.targets[:1]):
        _, _, status = segment(server, data.ref, data.ref_mask, targets=targets)
        assert status.startswith("Segmented")
    assert server.engine.concepts_learned == learned  # same reference: learned once, reused
    _, _, status = segment(server, data.ref, data.ref_mask, method="PerSAM-F", targets=data.targets[:1])
    assert server.engine.concepts_learned == learned + 1  # another method is another concept


def test_reference_mask_from_clicks(server: Server, data: Data) -> None:
    f = gradio_client.handle_file
    view, mask_path, status = server.client.predict(
        f(str(data.ref)), "[[60, 45, 1], [5, 90, 0]]", *SETTINGS, api_name="/reference_mask"
    )
    assert status.startswith("Reference mask:") and "2 click(s)" in status
    with Image.open(mask_path) as im:
        assert im.size == (W, H) and im.mode == "L"
        assert set(np.unique(np.asarray(im)).tolist()) <= {0, 255}
    with Image.open(view) as im:
        assert im.size == (W, H)


def test_segment_images_from_clicks_with_persam_f(server: Server, data: Data) -> None:
    gallery, zip_path, status = segment(
        server, data.ref, clicks="[[60, 45, 1]]", method="PerSAM-F", targets=data.targets[:2]
    )
    assert status == "Segmented 2 image(s) with PerSAM-F."
    assert len(gallery) == 2
    assert_mask_zip(zip_path, {t.name: data.target_sizes[t.name] for t in data.targets[:2]})


def test_track_video_from_a_label_map(server: Server, data: Data) -> None:
    video, zip_path, status = track(server, data.video, data.first_mask)
    assert status == "Tracked 2 object(s) over 6 frame(s)."
    assert Path(video).suffix == ".webm"
    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 6 and all(f.shape == (H, W, 3) for f in frames)
    with zipfile.ZipFile(zip_path) as zf:
        pngs = sorted(n for n in zf.namelist() if n.endswith(".png"))
        assert pngs == [f"clip/{i:05d}.png" for i in range(6)]
        for name in pngs:
            with zf.open(name) as fh:
                im = Image.open(fh)
                im.load()
            assert im.mode == "P" and im.size == (W, H)
            assert set(np.unique(np.asarray(im)).tolist()) <= {0, 1, 2}
            assert im.getpalette()[3:9] == demo.DAVIS_PALETTE[3:9]
        first = np.asarray(Image.open(zf.open("clip/00000.png")))
        scores = json.loads(zf.read("clip/scores.json"))
    assert np.array_equal(first, np.asarray(Image.open(data.first_mask)))  # frame 0 is the given mask
    assert len(scores["frames"]) == 6


def test_track_video_from_clicks_on_two_objects(server: Server, data: Data) -> None:
    video, zip_path, status = track(server, data.video, clicks="[[60, 45, 1, 1], [110, 15, 1, 2]]")
    assert status.startswith("Tracked") and status.endswith("over 6 frame(s).")
    with zipfile.ZipFile(zip_path) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 6


def test_bad_image_inputs_give_messages_and_the_app_keeps_serving(server: Server, data: Data) -> None:
    gallery, zip_path, status = segment(server, data.ref, targets=data.targets[:1])
    assert_error(status, "no reference mask")
    assert gallery == [] and zip_path is None

    _, _, status = segment(server, data.ref, data.ref_mask)
    assert_error(status, "at least one target")

    _, _, status = segment(server, data.ref, data.ref_mask, targets=[data.text_file])
    assert_error(status, "notes.txt", "not a readable image")

    _, _, status = segment(server, data.text_file, data.ref_mask, targets=data.targets[:1])
    assert_error(status, "reference photo", "not a readable image")

    _, _, status = segment(server, data.ref, data.targets[2], targets=data.targets[:1])  # 112x80 mask
    assert_error(status, "reference mask is 112x80")

    _, _, status = segment(server, data.ref, clicks="[[60, 45]]", targets=data.targets[:1])
    assert_error(status, "[x, y, label]")

    gallery, zip_path, status = segment(
        server, data.ref, data.ref_mask, targets=[data.text_file, data.targets[0]]
    )
    assert status.startswith("Segmented 1 image(s)") and "notes.txt (not a readable image)" in status
    assert len(gallery) == 1
    assert_mask_zip(zip_path, {data.targets[0].name: (W, H)})


def test_bad_video_inputs_give_messages_and_the_app_keeps_serving(server: Server, data: Data) -> None:
    video, zip_path, status = track(server, data.broken_video, clicks="[[60, 45, 1, 1]]")
    assert_error(status, "cannot read the video", "broken.mp4")
    assert "/tmp" not in status and video is None and zip_path is None

    _, _, status = track(server, data.ref, clicks="[[60, 45, 1, 1]]")
    assert_error(status, "cannot read the video")

    _, _, status = track(server, data.video)
    assert_error(status, "mark at least one object")

    _, _, status = track(server, data.video, data.ref_mask.parent / "c.png")  # a colour photo, 112x80
    assert_error(status, "first-frame mask is 112x80")

    _, zip_path, status = track(server, data.video, data.first_mask)
    assert status == "Tracked 2 object(s) over 6 frame(s)."


def test_missing_checkpoint_is_a_message_not_a_stack_trace(
    tmp_path: Path, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "empty-cache"))
    app, srv = start(tmp_path / "work", random_model=False)
    try:
        f = gradio_client.handle_file
        for checkpoint, words in (
            ("", ("no checkpoint for sam_vit_h in the cache", "persam weights download sam_vit_h")),
            (str(tmp_path / "nope.pth"), ("checkpoint file not found", "nope.pth")),
        ):
            _, _, status = srv.client.predict(
                f(str(data.ref)),
                f(str(data.ref_mask)),
                "",
                "PerSAM",
                [f(str(data.targets[0]))],
                "sam_vit_h",
                checkpoint,
                "cpu",
                api_name="/segment_images",
            )
            assert_error(status, *words)
        _, _, status = srv.client.predict(
            f(str(data.video)), f(str(data.first_mask)), "", "PerSAM", "efficient_sam_vit_t", "", "auto",
            api_name="/track_video",
        )  # fmt: skip
        assert_error(status, "persam weights download efficient_sam_vit_t")
    finally:
        app.close()


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SAM config (windowed attention only, so one encoder pass takes milliseconds)."""
    path = tmp_path_factory.mktemp("configs") / "tiny_sam.json"
    path.write_text(json.dumps({**demo.RANDOM_MODEL_CONFIG, "name": "tiny_json_sam"}))
    return path


@pytest.fixture(scope="module")
def config_server(tmp_path_factory: pytest.TempPathFactory, model_config: Path):
    """The app as ``python -m apps.demo --model CONFIG.json --checkpoint none --device cpu`` starts it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    argv = ["--model", str(model_config), "--checkpoint", "none", "--device", "cpu"]
    app, srv = start(tmp_path_factory.mktemp("demo-config-work"), random_model=False, argv=argv)
    try:
        yield srv
    finally:
        app.close()
        torch.set_num_threads(threads)


def test_model_config_json_with_random_weights_serves_the_images_flow(
    config_server: Server, data: Data, model_config: Path
) -> None:
    info = config_server.client.view_api(print_info=False, return_format="dict")
    params = {p["label"]: p for p in info["named_endpoints"]["/segment_images"]["parameters"]}
    assert params["Model"]["parameter_default"] == str(model_config)
    assert params["Precision"]["parameter_default"] == "float32"
    with urllib.request.urlopen(config_server.url.rstrip("/") + "/config", timeout=10) as r:
        config = json.loads(r.read().decode("utf-8"))
    dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model")
    assert str(model_config) in [value for _, value in dropdown["props"]["choices"]]

    gallery, zip_path, status = segment(
        config_server, data.ref, data.ref_mask, targets=data.targets, settings=()
    )
    assert status.startswith("Segmented 3 image(s) with PerSAM.")
    assert "masks are meaningless" in status  # random weights: said with every result
    assert len(gallery) == 3
    assert_mask_zip(zip_path, data.target_sizes)
    model = config_server.engine.cache.get(demo.ModelSettings(str(model_config), "none", "cpu"))
    assert model.name == "tiny_json_sam" and model.checkpoint_id.startswith("random:")

    view, mask_path, status = config_server.client.predict(
        gradio_client.handle_file(str(data.ref)), "[[60, 45, 1]]", api_name="/reference_mask"
    )
    assert status.startswith("Reference mask:") and "masks are meaningless" in status
    with Image.open(mask_path) as im:
        assert im.size == (W, H)


def test_bfloat16_precision_is_used_and_cached_separately(
    config_server: Server, data: Data, model_config: Path
) -> None:
    cache = config_server.engine.cache
    settings = (str(model_config), "none", "cpu")
    _, _, status = segment(
        config_server, data.ref, data.ref_mask, targets=data.targets[:1], settings=settings
    )
    assert status.startswith("Segmented 1 image(s)")
    fp32 = cache.get(demo.ModelSettings(*settings, "float32"))
    gallery, zip_path, status = segment(
        config_server, data.ref, data.ref_mask, targets=data.targets[:2], settings=(*settings, "bfloat16")
    )
    assert status.startswith("Segmented 2 image(s)") and "⚠️ Unexpected" not in status
    assert len(gallery) == 2
    assert_mask_zip(zip_path, {t.name: data.target_sizes[t.name] for t in data.targets[:2]})
    bf16 = cache.get(demo.ModelSettings(*settings, "bfloat16"))
    assert bf16 is not fp32 and bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32


def test_bad_model_values_give_messages_and_the_app_keeps_serving(
    tmp_path: Path, data: Data, model_config: Path
) -> None:
    torch.set_num_threads(1)
    app, srv = start(tmp_path / "work", random_model=False, argv=["--model", "sam_vit_q", "--device", "cpu"])
    try:
        _, _, status = segment(srv, data.ref, data.ref_mask, targets=data.targets[:1], settings=())
        assert_error(status, "unknown model 'sam_vit_q'", "sam_vit_b", "tiny_random_sam", "json")

        not_json = tmp_path / "broken.json"
        not_json.write_text('{"image_encoder": ')
        not_sam = tmp_path / "other.json"
        not_sam.write_text('{"layers": 3}')
        for model, checkpoint, words in (
            (str(tmp_path / "missing.json"), "none", ("model config file not found", "missing.json")),
            (str(not_json), "none", ("broken.json", "not valid json")),
            (str(not_sam), "none", ("other.json", "unrecognised model config")),
            (str(model_config), "", ("no official checkpoint", "none")),  # a config has no cached file
            ("tiny_random_sam", "auto", ("tiny_random_sam has no official checkpoint",)),
        ):
            _, _, status = segment(
                srv, data.ref, data.ref_mask, targets=data.targets[:1], settings=(model, checkpoint, "cpu")
            )
            assert_error(status, *words)

        gallery, _, status = segment(
            srv,
            data.ref,
            data.ref_mask,
            targets=data.targets[:1],
            settings=("tiny_random_sam", "none", "cpu"),
        )
        assert status.startswith("Segmented 1 image(s)") and "masks are meaningless" in status
        assert len(gallery) == 1
    finally:
        app.close()


# ---------------------------------------------------------------------------- functions, no server
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
    assert (args.model, args.checkpoint, args.dtype) == ("sam_vit_b", "", "float32")
    args = demo.parse_args(["--model", "cfg/my_sam.json", "--checkpoint", "none", "--dtype", "bfloat16"])
    assert (args.model, args.checkpoint, args.dtype) == ("cfg/my_sam.json", "none", "bfloat16")
    with pytest.raises(SystemExit):
        demo.parse_args(["--dtype", "float8"])


def test_model_dropdown_lists_registry_random_and_given_models() -> None:
    values = [value for _, value in demo.model_choices("sam_vit_b")]
    assert values[: len(demo.MODEL_CHOICES)] == demo.MODEL_CHOICES
    assert {"tiny_random_sam", "tiny_random_mobile_sam", "tiny_random_efficient_sam"} <= set(values)
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
