"""``persam track`` never loses work or data: resuming after SIGKILL, no mixing of runs, inputs kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fast_sam_config, write_palette_png, write_video
from PIL import Image

from persam.cli import main

ROOT = Path(__file__).resolve().parents[2]
H, W, T = 48, 64, 40


def _frames(n: int = T) -> tuple[np.ndarray, np.ndarray]:
    """A textured square moving over a textured background, and its label map on frame 0."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:H, 0:W]
    tex = rng.integers(150, 255, (14, 14, 3)).astype(np.uint8)
    out = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        bg = 100 + 30 * np.sin(xx / 5.0 + i / 4) * np.cos(yy / 7.0)
        out[i] = np.clip(bg[..., None], 0, 255).astype(np.uint8)
        x = 6 + i % 30
        out[i, 12:26, x : x + 14] = tex
    labels = np.zeros((H, W), np.uint8)
    labels[12:26, 6:20] = 1
    return out, labels


@pytest.fixture()
def clip(tmp_path: Path) -> dict:
    torch.set_num_threads(1)
    frames, labels = _frames()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    config = tmp_path / "small.json"
    config.write_text(json.dumps(fast_sam_config()))
    return {
        "frames": folder,
        "video": write_video(tmp_path / "clip.avi", frames[:6], fps=8.0),
        "mask": write_palette_png(tmp_path / "first.png", labels),
        "model": ["--model", str(config), "--checkpoint", "none", "--device", "cpu", "-q"],
        "tmp": tmp_path,
    }


def _cmd(clip: dict, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "persam.cli",
        "track",
        str(clip["frames"]),
        "--mask",
        str(clip["mask"]),
        "-o",
        str(out),
        *clip["model"],
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_sigkill_then_rerun_resumes_without_recomputing(clip: dict) -> None:
    out, overlay = clip["tmp"] / "out", clip["tmp"] / "vis" / "o.avi"
    journal = out / ".persam-track-resume" / "frames.jsonl"
    proc = subprocess.Popen(
        _cmd(clip, out, "--overlay", str(overlay)), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stage = out / ".persam-track-resume"
    done = {p.name: p.stat().st_ino for p in stage.glob("*.png")}
    assert len(done) >= 8
    assert [p for p in overlay.parent.iterdir() if p.name.endswith(".part.avi")]  # the killed video

    again = subprocess.run(
        _cmd(clip, out, "--overlay", str(overlay)), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert f"{T} frame(s) ({len(done)} kept from an interrupted run)" in again.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(T)]
    # The frames the killed run had written were moved into place, not computed and written again.
    assert all((out / name).stat().st_ino == ino for name, ino in done.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in overlay.parent.iterdir()) == ["o.avi"]
    scores = json.loads((out / "scores.json").read_text())
    assert [f["index"] for f in scores["frames"]] == list(range(T))

    full = clip["tmp"] / "full"
    assert subprocess.run(_cmd(clip, full), env=_env(), capture_output=True, timeout=600).returncode == 0
    resumed, reference = _labels(out), _labels(full)
    for name in done:
        assert np.array_equal(resumed[name], reference[name]), name


def test_rerun_with_other_parameters_refuses_or_replaces(clip: dict, capsys) -> None:
    out = clip["tmp"] / "out"
    args = ["track", str(clip["video"]), "--mask", str(clip["mask"]), "-o", str(out), *clip["model"]]
    assert main(args) == 0
    assert len(list(out.glob("*.png"))) == 6
    capsys.readouterr()
    assert main([*args, "--stride", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another track run (its stride differs)" in err and "--overwrite" in err
    assert len(list(out.glob("*.png"))) == 6  # untouched
    assert main([*args, "--stride", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00002.png", "00004.png"]
    assert main(args[:-1] + ["-q"]) == 2  # back to stride 1 needs --overwrite again


def test_png_files_no_run_wrote_need_overwrite(clip: dict, capsys) -> None:
    out = clip["tmp"] / "mine"
    out.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(out / "00001.png")
    args = ["track", str(clip["video"]), "--mask", str(clip["mask"]), "-o", str(out), *clip["model"]]
    assert main(args) == 2
    assert "no persam track run wrote" in capsys.readouterr().err
    assert np.asarray(Image.open(out / "00001.png")).shape == (4, 4)


def test_outputs_never_replace_inputs(clip: dict, capsys) -> None:
    video, mask = clip["video"], clip["mask"]
    before = video.read_bytes()
    base = ["track", str(video), "--mask", str(mask), *clip["model"]]
    cases = [
        ([*base, "-o", str(clip["tmp"] / "a"), "--overlay", str(video), "--overwrite"], "input VIDEO"),
        ([*base, "-o", str(clip["tmp"] / "b"), "--overlay", str(clip["tmp"] / "first.avi")], None),
        ([*base, "-o", str(mask.parent), "--overwrite"], "input --mask"),
        (
            [
                "track",
                str(clip["frames"]),
                "--mask",
                str(mask),
                "-o",
                str(clip["frames"] / "o"),
                *clip["model"],
            ],
            "inside the frame folder",
        ),
    ]
    for argv, needle in cases[:1] + cases[2:]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    assert video.read_bytes() == before
    assert np.asarray(Image.open(mask)).max() == 1


def test_existing_overlay_file_needs_overwrite(clip: dict, capsys) -> None:
    theirs = clip["tmp"] / "theirs.avi"
    theirs.write_bytes(b"someone's video")
    args = [
        "track",
        str(clip["video"]),
        "--mask",
        str(clip["mask"]),
        "-o",
        str(clip["tmp"] / "o"),
        "--overlay",
        str(theirs),
        *clip["model"],
    ]
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert theirs.read_bytes() == b"someone's video"
    assert not (clip["tmp"] / "o").exists()
    assert main([*args, "--overwrite"]) == 0
    assert main(args) == 0  # now it is the overlay of the run in o/: ours to replace


def test_corrupt_video_gives_our_line_only(clip: dict) -> None:
    bad = clip["tmp"] / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(3000))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "persam.cli",
            "track",
            str(bad),
            "--mask",
            str(clip["mask"]),
            "-o",
            str(clip["tmp"] / "o"),
            *clip["model"],
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"persam track: error: {bad}: cannot read video (not a video file, corrupt, or without frames)"
    ]


def test_stale_staging_is_removed_but_a_live_run_is_left_alone(clip: dict, capsys) -> None:
    from persam.locks import FileLock

    out = clip["tmp"] / "out"
    dead = out / ".persam-track-k1ll3d"  # a run killed before this version: no lock held
    dead.mkdir(parents=True)
    (dead / "00000.png").write_bytes(b"half")
    live = out / ".persam-track-l1ve"
    live.mkdir()
    lock = FileLock(live / ".lock")
    assert lock.acquire(blocking=False)
    try:
        args = ["track", str(clip["video"]), "--mask", str(clip["mask"]), "-o", str(out), *clip["model"]]
        assert main(args) == 0
        err = capsys.readouterr().err
        assert all(line.startswith("persam track: ") for line in err.strip().splitlines()), err
        assert not dead.exists()
        assert live.is_dir()
    finally:
        lock.release()


def test_davis_annotations_folder_is_never_an_output(clip: dict, capsys) -> None:
    frames, labels = _frames(3)
    seq = clip["tmp"] / "DAVIS" / "JPEGImages" / "480p" / "seq"
    ann = clip["tmp"] / "DAVIS" / "Annotations" / "480p" / "seq"
    seq.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(seq / f"{i:05d}.jpg")
    write_palette_png(ann.parent.mkdir(parents=True) or ann.mkdir() or ann / "00000.png", labels)
    before = (ann / "00000.png").read_bytes()
    assert main(["track", str(seq), "-o", str(ann), "--overwrite", *clip["model"]]) == 2
    assert "holds the input --mask" in capsys.readouterr().err
    assert sorted(p.name for p in ann.iterdir()) == ["00000.png"]
    assert (ann / "00000.png").read_bytes() == before
