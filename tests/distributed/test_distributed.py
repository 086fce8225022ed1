"""``--engine ray``: the same files as the local engine, from a pool of Ray actors, through faults
(unreadable images, a lost actor, an interruption), for image sets and for videos.

All tests share one small local cluster (2 CPUs); they skip when Ray is not installed. Starting
Ray's worker processes takes minutes on a small machine, so they run when ``PERSAM_RAY_TESTS=1``
(CI sets it in a step of its own, before the default suite).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if not os.environ.get("PERSAM_RAY_TESTS"):
    pytest.skip("Ray engine tests take minutes: set PERSAM_RAY_TESTS=1", allow_module_level=True)
ray = pytest.importorskip("ray", reason="the ray extra is not installed")

import persam  # noqa: E402
from persam.cli import main  # noqa: E402
from persam.distributed import segment_dataset, track_dataset  # noqa: E402
from persam.distributed.segment import EXIT_AFTER_ENV  # noqa: E402
from persam.distributed.track import video_jobs  # noqa: E402
from persam.pipelines.image_set import segment_image_set  # noqa: E402
from persam.pipelines.video_folder import track_to_folder  # noqa: E402

RAY = {"actors": 2, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _one_thread():
    # The actors run one thread each (half a CPU); the local runs compared with them do the same.
    torch.set_num_threads(1)


def _scene(seed: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with two red discs (two instances of one object)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for cy, cx in ((14 + seed % 5, 16), (32, 44 - seed % 7)):
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 49
    img[m] = (220, 30, 30)
    return img, m


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(6):
        Image.fromarray(_scene(i)[0]).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _concept(model_name: str, method: str) -> persam.Concept:
    model = persam.build_model(model_name, checkpoint="none")
    ref, mask = _scene(0)
    return persam.learn(model, ref, mask, method=method, name="disc")


def _local(concept, photos: Path, out: Path, **kw):
    return segment_image_set(concept, photos, out, progress=False, log=lambda _: None, **kw)


def _ray(concept, target, out, model: str, **kw):
    return segment_dataset(
        concept, target, out, model=model, checkpoint="none", device="cpu", log=lambda _: None, **RAY, **kw
    )


@pytest.mark.parametrize(
    ("model", "method", "uri"),
    [("tiny_random_sam", "persam", False), ("tiny_random_efficient_sam", "persam_f", True)],
)
def test_same_files_as_local_engine(photos, tmp_path, monkeypatch, model, method, uri):
    concept = _concept(model, method)
    kw = {"save": "mask,overlay,coco,perseg", "concept_name": "disc", "max_instances": 2}
    local = _local(concept, photos, tmp_path / "local", **kw)
    # A URI input and output go through pyarrow's filesystem and the staging copy.
    src, dst = (f"file://{photos}", f"file://{tmp_path / 'ray'}") if uri else (photos, tmp_path / "ray")
    marker = tmp_path / "actor-exited"
    if not uri:  # one actor exits abruptly after its second image: replaced, its batch redone
        monkeypatch.setenv(EXIT_AFTER_ENV, f"2:{marker}")
    summary = _ray(concept, src, dst, model, **kw)
    assert marker.exists() != uri
    # Same bytes, the COCO file included; no duplicate, partial or temporary file.
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    coco = json.loads((tmp_path / "ray" / "coco.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) >= 6
    assert len(summary.segmented) == 6 and len(summary.failed) == 1 and summary.seconds > 0
    expected = local.failed[0].message
    assert summary.failed[0].message == (expected.replace(str(photos), src) if uri else expected)
    assert "6 segmented, 1 failed" in summary.line() and "images/s" in summary.line()


def test_interrupted_run_resumes_without_recomputing(photos, tmp_path):
    concept = _concept("tiny_random_sam", "persam")
    out = tmp_path / "ray"
    seen: list[str] = []

    def stop_after_three(label: str, status: str) -> None:
        seen.append(label)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _ray(concept, photos, out, "tiny_random_sam", save="mask,coco", on_image=stop_after_three)
    state = json.loads((out / ".persam-state.json").read_text())["images"]
    assert len(state) >= 2  # what was recorded before the interrupt is kept
    stamps = {n: (out / "masks" / f"{n}.png").stat().st_mtime_ns for n in state}
    again = _ray(concept, photos, out, "tiny_random_sam", save="mask,coco")
    assert sorted(p.stem for p in again.skipped) == sorted(state)
    assert len(again.segmented) == 6 - len(state) and len(again.failed) == 1
    assert all((out / "masks" / f"{n}.png").stat().st_mtime_ns == t for n, t in stamps.items())
    _local(concept, photos, tmp_path / "local", save="mask,coco")
    local = _files(tmp_path / "local")
    assert {k: v for k, v in _files(out).items() if k.startswith("masks/")} == {
        k: v for k, v in local.items() if k.startswith("masks/")
    }


def test_cli_engine_ray_exit_status_and_errors(photos, tmp_path, capsys):
    ref, mask = _scene(0)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    base = ["segment", "--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]
    base += ["--model", "tiny_random_sam", "--checkpoint", "none", "--device", "cpu", "-q"]
    code = main([*base, str(photos), "-o", str(tmp_path / "out"), "--engine", "ray", "--actors", "2"])
    err = capsys.readouterr()
    assert code == 1 and "broken.png: cannot read image" in err.err  # as the local engine
    assert "6 segmented, 1 failed" in err.out and len(list((tmp_path / "out" / "masks").glob("*.png"))) == 6
    assert main([*base, str(photos), "-o", str(tmp_path / "o3"), "--actors", "2"]) == 2
    assert "need --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


# ------------------------------------------------------------------------------------------ videos
def _video(folder: Path, seed: int, frames: int = 4) -> Path:
    """A folder of frames with a red disc moving right, and its first-frame mask."""
    (folder / "frames").mkdir(parents=True)
    for t in range(frames):
        img, _ = _scene(seed)
        img = np.roll(img, 2 * t, axis=1)
        Image.fromarray(img).save(folder / "frames" / f"{t:05d}.jpg", quality=95)
    Image.fromarray(_scene(seed)[1].astype(np.uint8)).save(folder / "first.png")
    return folder


def test_track_videos_same_label_maps_as_local_then_resume_by_cli(tmp_path, capsys):
    videos = [_video(tmp_path / "in" / f"clip{i}", i) for i in range(3)]
    model = persam.build_model("tiny_random_sam", checkpoint="none")
    for v in videos:
        track_to_folder(model, v / "frames", v / "first.png", tmp_path / "local" / v.name)
    jobs = video_jobs([v / "frames" for v in videos], [v / "first.png" for v in videos], tmp_path / "ray")
    assert [j.out for j in jobs] == [str(tmp_path / "ray" / v.name / "frames") for v in videos]
    summary = track_dataset(jobs, model="tiny_random_sam", checkpoint="none", device="cpu", **RAY)
    assert len(summary.tracked) == 3 and summary.frames == 12 and not summary.failed
    for v in videos:
        ray_out, local_out = tmp_path / "ray" / v.name / "frames", tmp_path / "local" / v.name
        pngs = sorted(p.name for p in local_out.glob("*.png"))
        assert pngs == sorted(p.name for p in ray_out.glob("*.png")) and len(pngs) == 4
        assert all((ray_out / n).read_bytes() == (local_out / n).read_bytes() for n in pngs)
        frames = json.loads((ray_out / "scores.json").read_text())["frames"]
        assert frames == json.loads((local_out / "scores.json").read_text())["frames"]
        assert not [p for p in ray_out.iterdir() if p.name.startswith(".")]

    # The command line over the same videos plus a missing one: finished folders are skipped.
    cli = ["track", *[str(v / "frames") for v in videos], str(tmp_path / "in" / "nowhere" / "frames")]
    cli += [f"--mask={m}" for m in [*(v / "first.png" for v in videos), videos[0] / "first.png"]]
    cli += ["-o", str(tmp_path / "cli"), "--model", "tiny_random_sam", "--checkpoint", "none", "-q"]
    for v in videos[::2]:
        shutil.copytree(tmp_path / "ray" / v.name, tmp_path / "cli" / v.name)
    code = main([*cli, "--device", "cpu", "--engine", "ray", "--actors", "2"])
    out = capsys.readouterr()
    assert code == 1 and "nowhere" in out.err  # one video failed, the others are written
    assert "1 video(s) tracked, 2 skipped (finished before), 1 failed" in out.out
    assert main([*cli, "--device", "cpu"]) == 2 and "need --engine ray" in capsys.readouterr().err


def test_track_from_a_photo_with_overlay_same_as_local(tmp_path, capsys):
    """``--ref``/``--ref-mask`` (learned once, shipped as a concept file) and ``--overlay`` on Ray:
    the label maps and scores of the local engine, an overlay video beside them."""
    video = _video(tmp_path / "in" / "clip", 3, frames=5)
    ref = tmp_path / "in" / "ref.png"
    Image.fromarray(_scene(3)[0]).save(ref)
    cli = ["track", str(video / "frames"), "--ref", str(ref), "--ref-mask", str(video / "first.png")]
    cli += ["--model", "tiny_random_sam2", "--checkpoint", "none", "--device", "cpu", "-q"]
    cli += ["--find-threshold", "0"]
    assert main([*cli, "-o", str(tmp_path / "local"), "--overlay", str(tmp_path / "local.mp4")]) == 0
    ray_run = [*cli, "-o", str(tmp_path / "ray"), "--overlay", str(tmp_path / "ray.mp4")]
    assert main([*ray_run, "--engine", "ray", "--actors", "2"]) == 0, capsys.readouterr().err
    assert "1 video(s) tracked" in capsys.readouterr().out
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len([n for n in local if n.endswith(".png")]) == 5
    assert all(local[n] == remote[n] for n in local if n.endswith(".png"))
    scores = [json.loads(d["scores.json"])["frames"] for d in (local, remote)]
    assert scores[0] == scores[1]
    assert (tmp_path / "ray.mp4").stat().st_size > 0
    # Several videos: --overlay is a folder that gets one <video name>.mp4 each.
    bad = [*cli, "-o", str(tmp_path / "o2"), "--overlay", str(tmp_path / "x.mp4"), "--engine", "ray"]
    assert main([*bad[:1], str(video / "frames"), *bad[1:]]) == 2
    assert "give a folder" in capsys.readouterr().err and not (tmp_path / "o2").exists()
