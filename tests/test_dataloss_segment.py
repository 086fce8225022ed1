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

ROOT = Path(__file__).resolve().parents[1]

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
