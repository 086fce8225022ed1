"""The web demo in a real browser: Playwright driving the system Chromium (/usr/bin/chromium).

Images: a click on Segment without a reference shows a message; then upload a reference, click on
the object (the mask is drawn live), add targets, run, and the gallery shows one overlay per
target. Video: an undecodable upload shows a message; then upload a clip, click on an object in its
first frame, track, and the overlay video plays. Examples: picking the example of each tab fills in
every step (reference mask or marked objects shown at once), and running it gives results and
downloads. Screenshots go to ``test-artifacts/``. Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import disc_scene, disc_video, free_port
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `apps` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from apps import demo  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
H, W = 96, 128
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no system Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | list[Path]]:
    d = tmp_path_factory.mktemp("browser-data")
    Image.fromarray(disc_scene()).save(d / "reference.png")
    targets = []
    for k in range(3):
        Image.fromarray(disc_scene(centre=(35 + 25 * k, 50))).save(d / f"target{k}.png")
        targets.append(d / f"target{k}.png")
    disc_video(d / "clip.avi")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {"reference": d / "reference.png", "targets": targets, "video": d / "clip.avi",
            "broken": d / "broken.mp4"}  # fmt: skip


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/apps/test_demo.py: the small model is fastest on one thread
    app = demo.create_demo(random_model=True, work_dir=tmp_path_factory.mktemp("browser-work"))
    _, local_url, _ = demo.serve(app, "127.0.0.1", free_port(), prevent_thread_lock=True)
    try:
        yield local_url
    finally:
        app.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # Assertions wait as long as actions: on a busy machine a model call can take seconds.
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    page.goto(url)
    sync_api.expect(page.locator("#banner")).to_contain_text("meaningless")
    try:
        yield page
    finally:
        context.close()


def click_image_at(page, selector: str, x: float, y: float) -> None:
    """Clicks pixel (x, y) of an image shown with ``object-fit: contain`` inside its element."""
    img = page.locator(f"{selector} img").first
    img.wait_for()
    box = img.bounding_box()
    natural = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    scale = min(box["width"] / natural[0], box["height"] / natural[1], 1.0)
    left = (box["width"] - natural[0] * scale) / 2
    top = (box["height"] - natural[1] * scale) / 2
    img.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})


def test_images_upload_click_segment_gallery(page, files) -> None:
    expect = sync_api.expect
    status = page.locator("#status-images")

    page.locator("#run-images").click()  # nothing uploaded yet
    expect(status).to_contain_text("No reference photo")

    page.locator("#ref-image input[type=file]").set_input_files(str(files["reference"]))
    expect(status).to_contain_text("Click on your object")
    click_image_at(page, "#ref-image", 60, 45)
    expect(status).to_contain_text("Reference mask:")
    expect(status).to_contain_text("from 1 click(s)")

    page.locator("#run-images").click()  # no targets yet: a message, and the page keeps working
    expect(status).to_contain_text("Upload at least one target image")

    page.locator("#targets input[type=file]").set_input_files([str(t) for t in files["targets"]])
    expect(page.locator("#targets")).to_contain_text("target2")
    page.locator("#run-images").click()
    expect(status).to_contain_text("Segmented 3 image(s) with PerSAM.")
    expect(page.locator("#gallery img")).to_have_count(3)
    expect(page.locator("#gallery")).to_contain_text("target0.png — score")
    with page.expect_download() as download:
        page.locator("#masks-zip").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert sorted(zf.namelist()) == ["target0.png", "target1.png", "target2.png"]
    assert "Traceback" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_images.png"), full_page=True)


def test_images_brush_reference(page, files) -> None:
    expect = sync_api.expect
    status = page.locator("#status-images")
    page.locator("#ref-image input[type=file]").set_input_files(str(files["reference"]))
    expect(status).to_contain_text("Click on your object")
    page.get_by_role("tab", name="Brush").first.click()
    page.locator("#run-images").click()  # the photo is in the editor, nothing painted yet
    expect(status).to_contain_text("No reference mask: brush over your object")

    page.locator("#ref-brush-editor button[aria-label='Brush']").click()
    canvas = page.locator("#ref-brush-editor canvas").first
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.45
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 12, y + 2, steps=3)
    page.mouse.up()
    page.locator("#targets input[type=file]").set_input_files([str(t) for t in files["targets"][:2]])
    expect(page.locator("#targets")).to_contain_text("target1")
    page.locator("#run-images").click()
    expect(status).to_contain_text("Segmented 2 image(s) with PerSAM.")
    expect(page.locator("#gallery img")).to_have_count(2)


def test_video_upload_click_track_plays(page, files) -> None:
    expect = sync_api.expect
    status = page.locator("#status-video")
    page.get_by_role("tab", name="Video").click()

    page.locator("#video-in input[type=file]").set_input_files(str(files["broken"]))
    expect(status).to_contain_text("Cannot read the video")
    page.locator("#video-in button[aria-label='Clear']").first.click()

    page.locator("#video-in input[type=file]").set_input_files(str(files["video"]))
    expect(status).to_contain_text("Pick an object number")
    click_image_at(page, "#frame", 60, 45)
    expect(status).to_contain_text("1 object(s) marked")
    page.locator("#run-video").click()
    expect(status).to_contain_text("Tracked 1 object(s) over 6 frame(s).")
    video = page.locator("#video-out video")
    video.wait_for()
    page.wait_for_function(
        "() => { const v = document.querySelector('#video-out video'); return v && v.readyState >= 1; }"
    )
    duration = video.evaluate("v => v.duration")
    assert 0 < duration < 5  # 6 frames at 8 frames/s, decoded by the browser
    with page.expect_download() as download:
        page.locator("#video-zip").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 6
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_video.png"), full_page=True)


def test_images_example_fills_every_step_and_segments(page) -> None:
    expect = sync_api.expect
    status = page.locator("#status-images")
    page.locator("#image-examples").get_by_text("sticker").click()
    # The reference mask is drawn as soon as the example is picked, before anything is segmented.
    expect(status).to_contain_text("This is what will be learned")
    expect(status).to_contain_text("from the example's mask")
    expect(page.locator("#ref-image img").first).to_be_visible()
    expect(page.locator("#targets")).to_contain_text("no_sticker")
    page.locator("#run-images").click()
    expect(status).to_contain_text("Segmented 3 image(s) with PerSAM.")
    expect(page.locator("#gallery img")).to_have_count(3)
    expect(page.locator("#gallery")).to_contain_text("sticker_cat.jpg — score")
    table = page.locator("#results-table")  # every score and found / not found, in full
    for name in ("sticker_astronaut.jpg", "sticker_cat.jpg", "no_sticker.jpg"):
        expect(table.locator("tr", has_text=name)).to_contain_text(re.compile(r"-?\d+\.\d{3}\s+(not )?found"))
    with page.expect_download() as download:
        page.locator("#masks-zip").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert sorted(zf.namelist()) == ["no_sticker.png", "sticker_astronaut.png", "sticker_cat.png"]
    with page.expect_download() as download:
        page.locator("#coco-json").click()
    coco = json.loads(Path(download.value.path()).read_text())
    names = {im["file_name"] for im in coco["images"]}
    assert names == {"no_sticker.jpg", "sticker_astronaut.jpg", "sticker_cat.jpg"}
    with page.expect_download() as download:
        page.locator("#labelstudio-json").click()
    tasks = json.loads(Path(download.value.path()).read_text())
    assert {t["data"]["image"] for t in tasks} == names
    with page.expect_download() as download:
        page.locator("#cvat-zip").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert zf.namelist() == ["annotations/instances_default.json"]
    assert "Traceback" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_images_example.png"), full_page=True)


def test_video_example_marks_the_ball_and_tracks_it(page) -> None:
    expect = sync_api.expect
    status = page.locator("#status-video")
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-examples").get_by_text("rolling ball").click()
    expect(status).to_contain_text("1 object(s) marked")
    expect(page.locator("#frame img").first).to_be_visible()
    page.locator("#run-video").click()
    # Twelve frames take a while on a busy CPU: the status shows the progress meanwhile.
    expect(status).to_contain_text("Tracked 1 object(s) over 12 frame(s).", timeout=4 * TIMEOUT_MS)
    page.wait_for_function(
        "() => { const v = document.querySelector('#video-out video'); return v && v.readyState >= 1; }"
    )
    assert 1 < page.locator("#video-out video").evaluate("v => v.duration") < 3  # 12 frames at 8 fps
    with page.expect_download() as download:
        page.locator("#video-zip").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 12
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_video_example.png"), full_page=True)
