"""Inputs that are damaged, crafted or surprising give one-line errors or warnings, never tracebacks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def _persam(*argv: object, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if home is not None:
        env["PERSAM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "persam.cli", *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _write_concept(
    path: Path, meta: object, feat: np.ndarray | None = None, emb: np.ndarray | None = None
) -> Path:
    feat = np.ones((1, 32), np.float32) if feat is None else feat
    emb = np.ones((1, 1, 32), np.float32) if emb is None else emb
    buf = io.BytesIO()
    np.savez(
        buf,
        target_feat=feat,
        target_embedding=emb,
        metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8),
    )
    path.write_bytes(buf.getvalue())
    return path


_GOOD = {
    "format": "persam-concept",
    "format_version": 1,
    "method": "persam",
    "name": "x",
    "backbone": "tiny_random_sam",
    "checkpoint_id": "random:tiny_random_sam:0",
    "feature_dim": 32,
    "options": {},
}


@pytest.mark.parametrize(
    ("meta", "feat", "needle"),
    [
        ([1, 2], None, "metadata is a JSON list"),
        ({k: v for k, v in _GOOD.items() if k != "backbone"}, None, "missing 'backbone'"),
        ({**_GOOD, "backbone": ["x"]}, None, "'backbone' is not a name"),
        (_GOOD, np.full((1, 32), np.nan, np.float32), "NaN"),
        ({**_GOOD, "feature_dim": 16}, None, "feature widths disagree"),
    ],
)
def test_crafted_concept_files_are_refused_in_one_line(tmp_path: Path, meta, feat, needle) -> None:
    from persam.personalize import Concept

    path = _write_concept(tmp_path / "c.persam", meta, feat)
    with pytest.raises(InputError, match=needle) as info:
        Concept.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_concept_of_another_width_is_refused_before_segmenting(tmp_path: Path) -> None:
    meta = {**_GOOD, "feature_dim": 16}
    path = _write_concept(
        tmp_path / "c.persam", meta, np.ones((1, 16), np.float32), np.ones((1, 1, 16), np.float32)
    )
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "t.png")
    r = _persam(
        "segment", "--concept", path, tmp_path / "t.png", "-o", tmp_path / "out", "--device", "cpu", "-q"
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "features are 16 wide" in r.stderr
    assert not (tmp_path / "out").exists()


def test_concept_without_model_uses_the_recorded_model(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 90, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:30] = 255
    Image.fromarray(img).save(tmp_path / "r.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    home = tmp_path / "home"  # an empty cache: the default sam_vit_h would have to be downloaded
    r = _persam(
        "learn",
        "--ref",
        tmp_path / "r.png",
        "--ref-mask",
        tmp_path / "m.png",
        "-o",
        tmp_path / "c.persam",
        "--model",
        "tiny_random_sam",
        "--checkpoint",
        "none",
        "--device",
        "cpu",
        "-q",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    r = _persam(
        "segment",
        "--concept",
        tmp_path / "c.persam",
        tmp_path / "r.png",
        "-o",
        tmp_path / "out",
        "--device",
        "cpu",
        "-q",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    assert "random:tiny_random_sam" in r.stderr and "sam_vit_h" not in r.stderr + r.stdout
    assert (tmp_path / "out" / "masks" / "r.png").is_file()
    (tmp_path / "bad.persam").write_bytes(b"junk")
    r = _persam(
        "segment", "--concept", tmp_path / "bad.persam", tmp_path / "r.png", "-o", tmp_path / "o2", home=home
    )
    assert r.returncode == 2 and "not a persam concept file" in r.stderr and "warning" not in r.stderr


# --------------------------------------------------------------------------------- images, masks
def test_colour_photo_as_mask_and_nan_arrays_are_refused(tmp_path: Path) -> None:
    from persam.io import as_image, as_mask, load_mask

    photo = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="photo.png: looks like a colour photo, not a mask"):
        load_mask(tmp_path / "photo.png")
    nan = np.full((8, 8), np.nan)
    with pytest.raises(InputError, match="NaN"):
        as_mask(nan)
    with pytest.raises(InputError, match="NaN"):
        as_image(np.dstack([nan] * 3))


def test_background_only_clicks_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "r.png")
    r = _persam(
        "learn",
        "--ref",
        tmp_path / "r.png",
        "--ref-points",
        "5,5:0",
        "10,10:0",
        "-o",
        tmp_path / "c.persam",
        "--model",
        "tiny_random_sam",
        "--checkpoint",
        "none",
    )
    assert r.returncode == 2 and "every point is a background click" in r.stderr, r.stderr


def test_16bit_png_is_scaled_by_its_declared_bit_depth(tmp_path: Path) -> None:
    from persam.io import load_image

    a = np.array([[0, 4095], [2048, 1024]], np.uint16)  # 12-bit samples in a 16-bit file
    im = Image.fromarray(a)
    im.save(tmp_path / "twelve.png")
    data = (tmp_path / "twelve.png").read_bytes()
    # Add the sBIT chunk (12 significant bits) after IHDR, as 12-bit cameras write it.
    import struct
    import zlib

    chunk = (
        struct.pack(">I", 1) + b"sBIT" + bytes([12]) + struct.pack(">I", zlib.crc32(b"sBIT" + bytes([12])))
    )
    (tmp_path / "twelve.png").write_bytes(data[:33] + chunk + data[33:])
    out = load_image(tmp_path / "twelve.png")[..., 0]
    assert out.tolist() == [[0, 255], [128, 64]]


def test_mask_size_error_names_the_mask_in_wxh(tmp_path: Path) -> None:
    from persam.io import load_reference

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((20, 40), 255, np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(InputError) as info:
        load_reference(tmp_path / "img.png", tmp_path / "mask.png")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'mask.png'}: ") and "40×20" in msg and "40×30" in msg and "W×H" in msg


def test_mask_too_small_names_the_mask_not_the_photo(tmp_path: Path, capsys) -> None:
    from persam.cli import main

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[5, 5] = 255
    Image.fromarray(mask).save(tmp_path / "tiny_mask.png")
    rc = main(
        [
            "learn",
            "--ref",
            str(tmp_path / "photo.png"),
            "--ref-mask",
            str(tmp_path / "tiny_mask.png"),
            "-o",
            str(tmp_path / "c.persam"),
            "--model",
            "tiny_random_sam",
            "--checkpoint",
            "none",
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2
    assert err.startswith(f"persam learn: error: {tmp_path / 'tiny_mask.png'}: reference mask too small"), err


@pytest.mark.parametrize("names", [("--data", "--pred"), ("--root", "--out")])
def test_eval_perseg_script_takes_the_cli_option_names(tmp_path: Path, capsys, names) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("perseg_runner", ROOT / "eval" / "perseg.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    rc = runner.main([names[0], str(tmp_path / "nope"), names[1], str(tmp_path / "pred")])
    assert rc == 2 and "not a PerSeg root" in capsys.readouterr().err


def test_eval_perseg_csv_never_replaces_a_scored_mask(tmp_path: Path, capsys) -> None:
    from persam.cli import main

    pred = tmp_path / "pred" / "dog"
    pred.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(pred / "01.png")
    before = (pred / "01.png").read_bytes()
    (tmp_path / "data").mkdir()
    rc = main(
        [
            "eval",
            "perseg",
            "--data",
            str(tmp_path / "data"),
            "--pred",
            str(tmp_path / "pred"),
            "--csv",
            str(pred / "01.png"),
        ]
    )
    assert rc == 2 and "would overwrite an input image" in capsys.readouterr().err
    assert (pred / "01.png").read_bytes() == before


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"family": "sam"}, "SAM config is missing the section 'image_encoder'"),
        (
            {"family": "sam", "image_encoder": {"depth": "x"}, "prompt_encoder": {}, "mask_decoder": {}},
            "TypeError",
        ),
    ],
)
def test_model_config_errors_name_the_file(tmp_path: Path, capsys, config, needle) -> None:
    from persam.cli import main

    (tmp_path / "cfg.json").write_text(json.dumps(config))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "r.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    rc = main(
        [
            "learn",
            "--ref",
            str(tmp_path / "r.png"),
            "--ref-mask",
            str(tmp_path / "m.png"),
            "-o",
            str(tmp_path / "c.persam"),
            "--model",
            str(tmp_path / "cfg.json"),
            "--checkpoint",
            "none",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith(f"persam learn: error: {tmp_path / 'cfg.json'}: ") and needle in err
