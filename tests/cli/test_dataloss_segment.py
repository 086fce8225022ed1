"""No lost data in image sets: concurrent runs into one folder, outputs that are inputs, huge images."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

# A run of the image-set pipeline with a stand-in concept that waits, after its first image, until
# the other run has started too: both have then read the shared files before either writes them.
_RUN = r"""
import sys, time
from pathlib import Path
import numpy as np
from persam.pipelines.image_set import segment_image_set
from persam.results import Masks

me, other, out, *targets = sys.argv[1:]
def concept(image):
    Path(me).touch()
    while not Path(other).exists():
        time.sleep(0.02)
    m = image[..., 0] > 100
    return Masks(masks=m[None], scores=np.array([0.5]))
s = segment_image_set(concept, targets, out, save="mask,coco", progress=False)
print(s.line())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for n in names:
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / n)
        out.append(folder / n)
    return out


def test_two_concurrent_runs_into_one_folder_keep_every_image(tmp_path: Path) -> None:
    a = _images(tmp_path / "in", ["a1.png", "a2.png"])
    b = _images(tmp_path / "in", ["b1.png", "b2.png", "b3.png"])
    out = tmp_path / "out"
    fa, fb = tmp_path / "started-a", tmp_path / "started-b"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RUN, str(me), str(other), str(out), *map(str, targets)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other, targets in ((fa, fb, a), (fb, fa, b))
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
    coco = json.loads((out / "coco.json").read_text())
    # Both runs name their images relative to the same folder ("in"), so the names are the files'.
    assert sorted(im["file_name"] for im in coco["images"]) == [
        "a1.png",
        "a2.png",
        "b1.png",
        "b2.png",
        "b3.png",
    ]
    ids = [im["id"] for im in coco["images"]]
    assert len(set(ids)) == len(ids)
    assert {ann["image_id"] for ann in coco["annotations"]} <= set(ids)
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "a1.png",
        "a2.png",
        "b1.png",
        "b2.png",
        "b3.png",
    ]


# ------------------------------------------------------------------------ command line, tiny model
def _tiny_model(tmp: Path) -> list[str]:
    from helpers import fast_sam_config

    config = tmp / "tiny.json"
    config.write_text(json.dumps(fast_sam_config()))
    return ["--model", str(config), "--checkpoint", "none", "--device", "cpu", "-q"]


def _reference(tmp: Path) -> list[str]:
    img = np.random.default_rng(1).integers(0, 90, (40, 48, 3), dtype=np.uint8)
    img[10:30, 12:30] = (220, 30, 30)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:30] = 255
    (tmp / "ref").mkdir(exist_ok=True)
    Image.fromarray(img).save(tmp / "ref" / "dog.png")
    Image.fromarray(mask).save(tmp / "ref" / "dog_mask.png")
    return ["--ref", str(tmp / "ref" / "dog.png"), "--ref-mask", str(tmp / "ref" / "dog_mask.png")]


def _persam(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "persam.cli", *map(str, argv)],
        env={**_env(), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _bomb_png(path: Path, w: int = 20000, h: int = 10000) -> Path:
    """A PNG header claiming ``w``×``h`` pixels (Pillow's decompression-bomb guard trips at open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_huge_image_is_reported_and_skipped_like_an_unreadable_one(tmp_path: Path) -> None:
    targets = _images(tmp_path / "in", ["a.png", "c.png"])
    _bomb_png(tmp_path / "in" / "b.png")
    r = _persam(
        "segment", *_reference(tmp_path), tmp_path / "in", "-o", tmp_path / "out", *_tiny_model(tmp_path)
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "b.png: image has 200.0 megapixels, over the limit of 100 megapixels" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "c.png"]
    assert len(targets) == 2
    r = _persam(
        "learn",
        "--ref",
        tmp_path / "in" / "b.png",
        "--ref-mask",
        tmp_path / "in" / "b.png",
        "-o",
        tmp_path / "x.persam",
        *_tiny_model(tmp_path),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "megapixels" in r.stderr


def test_pixel_limit_reads_large_jpegs_at_reduced_size(tmp_path: Path, monkeypatch) -> None:
    from persam.io import InputError, load_image

    Image.fromarray(np.full((160, 200, 3), 120, np.uint8)).save(tmp_path / "big.jpg")
    Image.fromarray(np.full((160, 200, 3), 120, np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setenv("PERSAM_MAX_IMAGE_PIXELS", "10000")
    assert load_image(tmp_path / "big.jpg").shape == (80, 100, 3)
    with pytest.raises(InputError, match=r"big.png: image is 200×160 pixels .*over the limit"):
        load_image(tmp_path / "big.png")
    monkeypatch.setenv("PERSAM_MAX_IMAGE_PIXELS", "0")
    assert load_image(tmp_path / "big.png").shape == (160, 200, 3)


def test_nothing_done_exits_2_and_leaves_no_folder(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    _bomb_png(tmp_path / "in" / "b.png")
    model = _tiny_model(tmp_path)
    r = _persam("segment", *_reference(tmp_path), tmp_path / "in", "-o", tmp_path / "out", *model)
    assert r.returncode == 2 and "nothing could be done" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    # An output sub-folder blocked by a file is found before the model is loaded.
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "masks").write_text("x")
    _images(tmp_path / "ok", ["a.png"])
    r = _persam("segment", *_reference(tmp_path), tmp_path / "ok", "-o", tmp_path / "blocked", *model)
    assert r.returncode == 2 and "blocked/masks: is a file" in r.stderr, r.stderr
    assert "warning: --checkpoint none" not in r.stderr  # refused before the model was built


def test_outputs_never_replace_inputs(tmp_path: Path) -> None:
    ref = _reference(tmp_path)
    model = _tiny_model(tmp_path)
    photo, mask = Path(ref[1]), Path(ref[3])
    before = photo.read_bytes(), mask.read_bytes()
    for target in (photo, mask):
        r = _persam("learn", *ref, "-o", target, *model)
        assert r.returncode == 2 and "would overwrite the input" in r.stderr, r.stderr
    assert (photo.read_bytes(), mask.read_bytes()) == before
    # An existing file that is not a concept file needs --overwrite; a concept file does not.
    (tmp_path / "notes.txt").write_text("mine")
    r = _persam("learn", *ref, "-o", tmp_path / "notes.txt", *model)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert _persam("learn", *ref, "-o", tmp_path / "c.persam", *model).returncode == 0
    assert _persam("learn", *ref, "-o", tmp_path / "c.persam", *model).returncode == 0
    # Targets taken from the output folder's masks would be replaced by their own masks.
    out = tmp_path / "out"
    _images(out / "masks", ["x.png"])
    before = (out / "masks" / "x.png").read_bytes()
    r = _persam("segment", *ref, out / "masks" / "x.png", "-o", out, *model)
    assert r.returncode == 2 and "would overwrite the input TARGET" in r.stderr, r.stderr
    assert (out / "masks" / "x.png").read_bytes() == before


def test_files_no_run_wrote_need_overwrite(tmp_path: Path) -> None:
    _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    _images(out / "masks", ["a.png"])  # someone's own file where the mask of a.png would go
    before = (out / "masks" / "a.png").read_bytes()
    model = _tiny_model(tmp_path)
    r = _persam("segment", *_reference(tmp_path), tmp_path / "in", "-o", out, *model)
    assert r.returncode == 2 and "was not written by a persam segment run" in r.stderr, r.stderr
    assert (out / "masks" / "a.png").read_bytes() == before
    r = _persam("segment", *_reference(tmp_path), tmp_path / "in", "-o", out, "--overwrite", *model)
    assert r.returncode == 0, r.stderr
    assert (out / "masks" / "a.png").read_bytes() != before
    # The folder is now ours: a run with another reference replaces its own results without asking.
    r = _persam("segment", *_reference(tmp_path), tmp_path / "in", "-o", out, "--max-instances", "2", *model)
    assert r.returncode == 0, r.stderr
