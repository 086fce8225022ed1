"""The web demo (apps/demo/), started on 127.0.0.1 and driven with gradio_client.

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
from helpers import disc_scene, disc_video, free_port
from PIL import Image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[2]
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
    return make_data(tmp_path_factory.mktemp("demo-data"))


def make_data(d: Path) -> Data:
    """Reference, mask, three targets of two sizes, a clip and its first-frame label map, bad files."""
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
    gallery, zip_path, coco_path, _, _, status = segment(
        server, data.ref, data.ref_mask, targets=data.targets
    )
    assert status == "Segmented 3 image(s) with PerSAM."
    assert len(gallery) == 3
    for item, target in zip(gallery, data.targets, strict=True):
        assert item["caption"].startswith(target.name + " — score ")
        with Image.open(item["image"]) as im:
            assert im.size == data.target_sizes[target.name]
    assert_mask_zip(zip_path, data.target_sizes)


def test_reference_embedding_and_concept_are_reused(server: Server, data: Data) -> None:
    *_, status = segment(server, data.ref, data.ref_mask, targets=data.targets[:1])
    assert status.startswith("Segmented 1 image(s)")
    learned = server.engine.concepts_learned
    assert learned >= 1
    for targets in (data.targets[1:], data.targets[:1]):
        *_, status = segment(server, data.ref, data.ref_mask, targets=targets)
        assert status.startswith("Segmented")
    assert server.engine.concepts_learned == learned  # same reference: learned once, reused
    *_, status = segment(server, data.ref, data.ref_mask, method="PerSAM-F", targets=data.targets[:1])
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
    gallery, zip_path, coco_path, _, _, status = segment(
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
    gallery, zip_path, coco_path, _, _, status = segment(server, data.ref, targets=data.targets[:1])
    assert_error(status, "no reference mask")
    assert gallery == [] and zip_path is None and coco_path is None

    *_, status = segment(server, data.ref, data.ref_mask)
    assert_error(status, "at least one target")

    *_, status = segment(server, data.ref, data.ref_mask, targets=[data.text_file])
    assert_error(status, "notes.txt", "not a readable image")

    *_, status = segment(server, data.text_file, data.ref_mask, targets=data.targets[:1])
    assert_error(status, "reference photo", "not a readable image")

    *_, status = segment(server, data.ref, data.targets[2], targets=data.targets[:1])  # 112x80 mask
    assert_error(status, "reference mask is 112x80")

    *_, status = segment(server, data.ref, clicks="[[60, 45]]", targets=data.targets[:1])
    assert_error(status, "[x, y, label]")

    gallery, zip_path, coco_path, _, _, status = segment(
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
