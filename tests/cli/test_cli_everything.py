"""``persam everything``: outputs, exit codes and one-line errors, with a small random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_sam_config
from PIL import Image
from pycocotools.coco import COCO

from persam.cli import main

LENIENT = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture
def model_args(tmp_path: Path) -> list[str]:
    config = tmp_path / "fast.json"
    config.write_text(json.dumps(fast_sam_config()))
    return ["--model", str(config), "--checkpoint", "none", "-q"]


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = np.full((48, 64, 3), 90, np.uint8)
        img[10:30, 15 + 5 * i : 40 + 5 * i] = rng.integers(150, 255, 3)
        paths.append(folder / f"im{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def test_writes_masks_overlays_records_and_coco(tmp_path, model_args, capsys):
    write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(["everything", str(tmp_path / "in"), "-o", str(out), *LENIENT, *model_args]) == 0
    assert "2 image(s)" in capsys.readouterr().out
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 2
    for name in ("im0", "im1"):
        records = json.loads((out / "records" / f"{name}.json").read_text())["masks"]
        pngs = sorted((out / "masks" / name).glob("*.png"))
        assert len(pngs) == len(records) > 0
        first = np.asarray(Image.open(pngs[0]))
        assert first.shape == (48, 64) and set(np.unique(first)) <= {0, 255}
        assert records[0]["area"] == int((first == 255).sum())
        assert Image.open(out / "overlays" / f"{name}.jpg").size == (64, 48)
    # COCO results leave out empty masks (which lenient thresholds let through).
    nonempty = [
        p
        for n in ("im0", "im1")
        for p in (out / "masks" / n).glob("*.png")
        if np.asarray(Image.open(p)).any()
    ]
    assert len(coco.getAnnIds()) == len(nonempty)


def test_an_unreadable_image_fails_alone(tmp_path, model_args, capsys):
    write_images(tmp_path / "in", 1)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["everything", str(tmp_path / "in"), "-o", str(out), *LENIENT, *model_args]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "broken.png" in line]
    assert len(err) == 1
    assert (out / "overlays" / "im0.jpg").is_file() and not (out / "overlays" / "broken.jpg").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box-nms-thresh", "3"], "--box-nms-thresh"),
        (["--points-per-side", "0"], "--points-per-side"),
        (["--ref", "r.png"], "--ref-mask"),
        (["--max-instances", "0"], "--max-instances"),
    ],
)
def test_bad_arguments_exit_2_and_create_nothing(tmp_path, model_args, capsys, extra, message):
    write_images(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["everything", str(tmp_path / "in"), "-o", str(out), *extra, *model_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_no_images_exits_2(tmp_path, model_args, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["everything", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), *model_args]) == 2
    assert "no images" in capsys.readouterr().err


def test_with_a_reference_only_matches_are_written(tmp_path, model_args):
    paths = write_images(tmp_path / "in", 2)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 15:40] = 255
    Image.fromarray(mask).save(tmp_path / "ref_mask.png")
    out = tmp_path / "out"
    argv = ["everything", str(paths[1]), "-o", str(out), "--ref", str(paths[0]), "--ref-mask"]
    assert main([*argv, str(tmp_path / "ref_mask.png"), "--max-instances", "2", *LENIENT, *model_args]) == 0
    records = json.loads((out / "records" / "im1.json").read_text())["masks"]
    assert len(records) <= 2 and len(list((out / "masks" / "im1").glob("*.png"))) == len(records)
