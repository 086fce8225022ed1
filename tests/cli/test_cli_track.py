"""``persam track`` end to end on small synthetic videos with a small random model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import fast_sam_config, write_palette_png, write_video
from PIL import Image

from persam.cli import main
from persam.readers import DAVIS_PALETTE

H, W, T, FPS = 72, 96, 6, 8.0


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Two textured squares (ids 1 and 2) moving over a textured background."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.zeros((T, H, W, 3), np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    tex1 = rng.integers(150, 255, (16, 16, 3)).astype(np.uint8)
    tex1[..., 1:] //= 4
    tex2 = rng.integers(150, 255, (18, 18, 3)).astype(np.uint8)
    tex2[..., :2] //= 4
    for i in range(T):
        bg = 100 + 30 * np.sin(xx / 5.0 + i) * np.cos(yy / 7.0)
        frames[i] = np.clip(bg[..., None] + rng.normal(0, 5, (H, W, 3)), 0, 255).astype(np.uint8)
        frames[i, 10 + i : 26 + i, 8 + 3 * i : 24 + 3 * i] = tex1
        labels[i, 10 + i : 26 + i, 8 + 3 * i : 24 + 3 * i] = 1
        frames[i, 40:58, 70 - 3 * i : 88 - 3 * i] = tex2
        labels[i, 40:58, 70 - 3 * i : 88 - 3 * i] = 2
    return frames, labels


@pytest.fixture()
def setup(tmp_path):
    torch.set_num_threads(1)
    frames, labels = _scene()
    config = tmp_path / "small.json"
    config.write_text(json.dumps(fast_sam_config()))
    palette = list(DAVIS_PALETTE)
    palette[3:9] = [250, 10, 200, 10, 250, 200]  # custom colours for ids 1 and 2
    return {
        "frames": frames,
        "labels": labels,
        "video": write_video(tmp_path / "clip.mp4", frames, fps=FPS),
        "mask": write_palette_png(tmp_path / "first.png", labels[0], palette),
        "palette": palette,
        "model": ["--model", str(config), "--checkpoint", "none", "--device", "cpu", "-q"],
        "tmp": tmp_path,
    }


def _frame_count(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n, fps = 0, cap.get(cv2.CAP_PROP_FPS)
    while cap.grab():
        n += 1
    cap.release()
    return n, fps


def test_track_video_end_to_end(setup, capsys):
    out, overlay = setup["tmp"] / "out", setup["tmp"] / "vis" / "clip_overlay.mp4"
    rc = main(["track", str(setup["video"]), "--mask", str(setup["mask"]), "-o", str(out),
               "--overlay", str(overlay), *setup["model"]])  # fmt: skip
    assert rc == 0
    assert "6 frame(s), 2 object(s)" in capsys.readouterr().out
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{i:05d}.png" for i in range(T)]
    for i in range(T):
        im = Image.open(out / f"{i:05d}.png")
        assert im.mode == "P" and im.size == (W, H)
        assert im.getpalette()[:768] == setup["palette"]  # the first mask's palette is kept
        assert set(np.unique(np.asarray(im)).tolist()) <= {0, 1, 2}
    assert np.array_equal(np.asarray(Image.open(out / "00000.png")), setup["labels"][0])
    scores = json.loads((out / "scores.json").read_text())
    assert scores["object_ids"] == [1, 2] and scores["fps"] == pytest.approx(FPS)
    assert [f["index"] for f in scores["frames"]] == list(range(T))
    assert [f["name"] for f in scores["frames"]] == [f"{i:05d}" for i in range(T)]
    assert scores["frames"][0]["reference"] and set(scores["frames"][3]["objects"]) == {"1", "2"}
    n, fps = _frame_count(overlay)
    assert n == T and fps == pytest.approx(FPS)
    assert sorted(p.name for p in overlay.parent.iterdir()) == ["clip_overlay.mp4"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_track_davis_folder_with_stride_and_persam_f(setup, capsys):
    root = setup["tmp"] / "DAVIS"
    seq = root / "JPEGImages" / "480p" / "toy"
    ann = root / "Annotations" / "480p" / "toy"
    seq.mkdir(parents=True)
    ann.mkdir(parents=True)
    for i, f in enumerate(setup["frames"]):
        Image.fromarray(f).save(seq / f"{i:05d}.jpg", quality=95)
    write_palette_png(ann / "00000.png", setup["labels"][0], DAVIS_PALETTE)
    out = setup["tmp"] / "res" / "toy"
    args = [
        "--stride",
        "2",
        "--method",
        "persam-f",
        "--compat",
        "official",
        "--overlay",
        str(setup["tmp"] / "o.avi"),
    ]
    rc = main(["track", str(seq), "-o", str(out), *args, *setup["model"]])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00002.png", "00004.png"]
    assert Image.open(out / "00002.png").getpalette()[:768] == DAVIS_PALETTE
    assert json.loads((out / "scores.json").read_text())["method"] == "persam_f"
    n, fps = _frame_count(setup["tmp"] / "o.avi")
    assert n == 3 and fps == pytest.approx(24.0 / 2)  # frame folders play at 24 frames/s; stride 2


def test_track_one_mask_per_object(setup):
    tmp = setup["tmp"]
    paths = []
    for k in (1, 2):
        p = tmp / f"obj{k}.png"
        Image.fromarray((setup["labels"][0] == k).astype(np.uint8) * 255).save(p)
        paths += ["--mask", str(p)]
    out = tmp / "multi"
    assert main(["track", str(setup["video"]), *paths, "-o", str(out), "--start", "1", *setup["model"]]) == 0
    first = np.asarray(Image.open(out / "00001.png"))
    assert np.array_equal(first, setup["labels"][0])  # binary masks become ids 1 and 2 on frame --start
    assert Image.open(out / "00001.png").getpalette()[:768] == DAVIS_PALETTE
    assert not (out / "00000.png").exists()


@pytest.mark.parametrize(
    "case", ["unreadable", "zero_frames", "mask_size", "empty_mask", "start", "missing", "out_under_file"]
)
def test_track_bad_inputs(setup, case, capsys):
    tmp = setup["tmp"]
    video, mask = setup["video"], setup["mask"]
    extra: list[str] = []
    if case == "unreadable":
        video = tmp / "broken.mp4"
        video.write_bytes(b"\x00garbage" * 50)
        culprit = video.name
    elif case == "zero_frames":
        video = tmp / "zero.mp4"
        cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H)).release()
        culprit = video.name
    elif case == "mask_size":
        mask = write_palette_png(tmp / "small_mask.png", setup["labels"][0][:40, :50], DAVIS_PALETTE)
        culprit = mask.name
    elif case == "empty_mask":
        mask = write_palette_png(tmp / "empty_mask.png", np.zeros((H, W), np.uint8), DAVIS_PALETTE)
        culprit = mask.name
    elif case == "start":
        extra = ["--start", str(T)]
        culprit = video.name
    elif case == "missing":
        video = tmp / "nowhere.mp4"
        culprit = video.name
    out, overlay = tmp / "out_bad", tmp / "ovl" / "bad.mp4"
    if case == "out_under_file":
        (tmp / "afile").write_text("x")
        out = tmp / "afile" / "out"
        culprit = "afile"
    rc = main(["track", str(video), "--mask", str(mask), "-o", str(out), "--overlay", str(overlay),
               *extra, *setup["model"]])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("persam track: error:") and culprit in err
    assert not out.exists() and not overlay.parent.exists()


def test_track_without_mask_says_what_is_needed(setup, capsys):
    rc = main(["track", str(setup["video"]), "-o", str(setup["tmp"] / "o"), *setup["model"]])
    err = capsys.readouterr().err
    assert rc != 0 and "first-frame mask is required" in err and "DAVIS" not in err


def test_overlay_video_has_ordinary_permissions(setup):
    import os
    import stat

    overlay = setup["tmp"] / "perm.mp4"
    args = ["track", str(setup["video"]), "--mask", str(setup["mask"]), "-o", str(setup["tmp"] / "p")]
    assert main([*args, "--overlay", str(overlay), *setup["model"]]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(overlay.stat().st_mode) == 0o666 & ~umask


def test_track_failure_midway_leaves_no_output(setup, monkeypatch, capsys):
    from persam.pipelines import video as video_mod

    calls = {"n": 0}
    real_step = video_mod.VideoTracker.step

    def failing_step(self, frame, index):
        calls["n"] += 1
        if calls["n"] == 3:
            raise video_mod.InputError(f"frame {index}: decoding failed")
        return real_step(self, frame, index)

    monkeypatch.setattr(video_mod.VideoTracker, "step", failing_step)
    out = setup["tmp"] / "existing"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    overlay = setup["tmp"] / "mid.mp4"
    rc = main(["track", str(setup["video"]), "--mask", str(setup["mask"]), "-o", str(out),
               "--overlay", str(overlay), *setup["model"]])  # fmt: skip
    assert rc != 0 and "decoding failed" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert not overlay.exists() and not list(setup["tmp"].glob(".mid.mp4*"))
