"""What the web demo teaches and hands back, through a launched server and ``gradio_client``: the
examples, the reference mask preview, scores and "not found" on every result, the masks zip and the
COCO file, an unreadable target among good ones, and the launched program's upload limit and
cleanup on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import gradio_client  # noqa: E402  (test_demo skips this module when it is missing)
import numpy as np
import pytest
import torch
from helpers import free_port
from PIL import Image
from test_demo import ROOT, Data, Server, assert_mask_zip, demo, make_data, segment, start
from test_demo_units import bomb_png

from persam.drawing import render_overlay

CAPTION = re.compile(r"^(?P<name>.+) — score (?P<score>-?\d+\.\d{3})(?P<absent> \(not found\))?$")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return make_data(tmp_path_factory.mktemp("demo-data"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/apps/test_demo.py: the small model is fastest on one thread
    app, srv = start(tmp_path_factory.mktemp("demo-work"))
    try:
        yield srv
    finally:
        app.close()
        torch.set_num_threads(threads)


def page_config(srv: Server) -> dict:
    with urllib.request.urlopen(srv.url.rstrip("/") + "/config", timeout=10) as r:
        return json.loads(r.read().decode("utf-8"))


def datasets(srv: Server) -> dict[str, dict]:
    """The page's example sets by element id."""
    return {
        c["props"]["elem_id"]: c["props"]
        for c in page_config(srv)["components"]
        if c.get("type") == "dataset"
    }


def test_examples_are_on_the_page_and_produce_results(server: Server) -> None:
    examples = datasets(server)
    images, videos = examples["image-examples"], examples["video-examples"]
    assert images["sample_labels"] == ["sticker", "coffee cup"]
    assert videos["sample_labels"] == ["rolling ball"]
    folder = server.engine.work_dir / "examples"
    f = gradio_client.handle_file

    targets = [folder / n for n in ("sticker_astronaut.jpg", "sticker_cat.jpg", "no_sticker.jpg")]
    gallery, zip_path, coco_path, _, _, status = server.client.predict(
        f(str(folder / "sticker_reference.png")), f(str(folder / "sticker_reference_mask.png")), "",
        "PerSAM", [f(str(t)) for t in targets], "sam_vit_b", "", "cpu", api_name="/segment_images",
    )  # fmt: skip
    assert status == "Segmented 3 image(s) with PerSAM."
    assert [CAPTION.match(item["caption"])["name"] for item in gallery] == [t.name for t in targets]
    assert_mask_zip(zip_path, {t.name: Image.open(t).size for t in targets})

    video_clicks = videos["samples"][0][1]
    video, zip_path, status = server.client.predict(
        f(str(folder / "rolling_ball.avi")), None, video_clicks, "PerSAM", "sam_vit_b", "", "cpu",
        api_name="/track_video",
    )  # fmt: skip
    assert status == "Tracked 1 object(s) over 12 frame(s)."
    with zipfile.ZipFile(zip_path) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 12


def test_reference_mask_preview_tints_the_marked_object(server: Server, data: Data) -> None:
    view, mask_path, status = server.client.predict(
        gradio_client.handle_file(str(data.ref)), "[[60, 45, 1]]", "sam_vit_b", "", "cpu",
        api_name="/reference_mask",
    )  # fmt: skip
    assert "This is what will be learned" in status
    photo = np.asarray(Image.open(data.ref).convert("RGB"), np.int16)
    drawn = np.asarray(Image.open(view).convert("RGB"), np.int16)
    mask = np.asarray(Image.open(mask_path)) > 0
    assert mask.any() and drawn.shape == photo.shape
    changed = np.abs(drawn - photo).sum(-1) > 30
    assert changed[mask].mean() > 0.9  # the object is tinted: the user sees what will be learned
    # Exactly the library's drawing of that mask and click on the photo: nothing else is changed.
    expected = render_overlay(photo.astype(np.uint8), mask, [[60, 45]], [1]).astype(np.int16)
    assert np.abs(drawn - expected).max() <= 1


def test_results_show_scores_and_not_found_in_agreement_with_coco(server: Server, data: Data) -> None:
    gallery, _, coco_path, *_, status = segment(server, data.ref, data.ref_mask, targets=data.targets)
    assert status == "Segmented 3 image(s) with PerSAM."
    coco = json.loads(Path(coco_path).read_text())
    ids = {im["file_name"]: im["id"] for im in coco["images"]}
    scores = {a["image_id"]: a["score"] for a in coco["annotations"]}
    for item in gallery:
        m = CAPTION.match(item["caption"])
        assert m, item["caption"]
        image_id = ids[m["name"]]
        # "not found" exactly where the COCO results hold no detection, and the same score.
        assert (m["absent"] is not None) == (image_id not in scores)
        if image_id in scores:
            assert float(m["score"]) == pytest.approx(scores[image_id], abs=5e-4)


def test_downloads_hold_png_masks_and_a_coco_file_that_agree(server: Server, data: Data) -> None:
    from persam.results import decode_rle

    _, zip_path, coco_path, *_ = segment(server, data.ref, data.ref_mask, targets=data.targets)
    assert_mask_zip(zip_path, data.target_sizes)
    coco = json.loads(Path(coco_path).read_text())
    assert {im["file_name"] for im in coco["images"]} == set(data.target_sizes)
    assert {(im["file_name"], im["width"], im["height"]) for im in coco["images"]} == {
        (name, w, h) for name, (w, h) in data.target_sizes.items()
    }
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    with zipfile.ZipFile(zip_path) as zf:
        for ann in coco["annotations"]:
            name = names[ann["image_id"]]
            with zf.open(Path(name).stem + ".png") as fh:
                png = np.asarray(Image.open(fh)) > 0
            assert np.array_equal(decode_rle(ann["segmentation"]), png)
            assert ann["area"] == int(png.sum()) and np.isfinite(ann["score"])


def _brush_alpha(region: dict) -> np.ndarray:
    """A Label Studio brush region's mask: with the Label Studio SDK's decoder where it is installed
    (its environment in CI), else with ours (checked against the SDK's in that environment)."""
    try:
        from label_studio_sdk.converter.brush import decode_rle as decode
    except ImportError:
        from persam.integrations.labelstudio_rle import decode_brush_rle as decode
    h, w = region["original_height"], region["original_width"]
    return np.asarray(decode(region["value"]["rle"])).reshape(h, w, 4)[:, :, 3] > 0


def test_label_studio_and_cvat_downloads_hold_the_result_masks(server: Server, data: Data) -> None:
    from pycocotools import mask as mask_utils

    gallery, zip_path, _, ls_path, cvat_path, _ = segment(
        server, data.ref, data.ref_mask, targets=data.targets
    )
    found = {CAPTION.match(item["caption"])["name"]: CAPTION.match(item["caption"])["absent"] is None
             for item in gallery}  # fmt: skip
    with zipfile.ZipFile(zip_path) as zf:
        pngs = {n: np.asarray(Image.open(zf.open(Path(n).stem + ".png"))) > 0 for n in data.target_sizes}

    # Label Studio: one task per target, a brush region where the object was found.
    tasks = json.loads(Path(ls_path).read_text())
    assert sorted(t["data"]["image"] for t in tasks) == sorted(data.target_sizes)
    for task in tasks:
        name = task["data"]["image"]
        (pred,) = task["predictions"]
        regions = pred["result"]
        assert len(regions) == int(found[name])
        for region in regions:
            assert (region["original_width"], region["original_height"]) == data.target_sizes[name]
            assert region["type"] == "brushlabels" and region["from_name"] == "tag"
            np.testing.assert_array_equal(_brush_alpha(region), pngs[name])

    # CVAT: a COCO 1.0 zip (annotations/instances_default.json) with RLE masks marked iscrowd.
    with zipfile.ZipFile(cvat_path) as zf:
        assert zf.namelist() == ["annotations/instances_default.json"]
        coco = json.loads(zf.read("annotations/instances_default.json"))
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    assert sorted(names.values()) == sorted(data.target_sizes) and coco["categories"]
    assert sorted(names[a["image_id"]] for a in coco["annotations"]) == sorted(n for n in found if found[n])
    for ann in coco["annotations"]:
        assert ann["iscrowd"] == 1
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle) > 0, pngs[names[ann["image_id"]]])


def test_an_unreadable_target_is_reported_and_the_others_are_segmented(
    server: Server, data: Data, tmp_path: Path
) -> None:
    bomb = bomb_png(tmp_path / "huge.png")
    targets = [data.targets[0], bomb, data.text_file, data.targets[2]]
    gallery, zip_path, coco_path, _, _, status = segment(server, data.ref, data.ref_mask, targets=targets)
    assert status.startswith("Segmented 2 image(s) with PerSAM.")
    assert "huge.png (too large to read safely)" in status and "notes.txt (not a readable image)" in status
    assert [CAPTION.match(item["caption"])["name"] for item in gallery] == ["a.png", "c.png"]
    assert_mask_zip(zip_path, {n: data.target_sizes[n] for n in ("a.png", "c.png")})
    assert {im["file_name"] for im in json.loads(Path(coco_path).read_text())["images"]} == {"a.png", "c.png"}

    *_, status = segment(server, data.ref, data.ref_mask, targets=[bomb])
    assert "⚠️" in status and "huge.png (too large to read safely)" in status


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return
        except OSError:
            time.sleep(1.0)
    raise AssertionError(f"the demo did not start at {url}")


def _upload(url: str, name: str, payload: bytes) -> int:
    boundary = "persamtestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_command_line_limits_uploads_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "apps.demo",
        "--random-model",
        "--port",
        str(port),
        "--max-file-size",
        "20kb",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, proc)
        work = list(tmp_path.glob("persam-demo-*"))
        assert len(work) == 1 and (work[0] / "examples" / "rolling_ball.avi").is_file()
        assert _upload(url, "small.png", b"x" * 1_000) == 200
        assert _upload(url, "large.png", b"x" * 40_000) == 413  # refused before any handler runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # it dies of the signal, as supervisors expect
        assert not work[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_upload_limit_is_served_to_the_page(server: Server) -> None:
    assert page_config(server)["max_file_size"] == 50 * 1024 * 1024
    assert demo.DEFAULT_MAX_FILE_SIZE == "50mb"
