"""``persam segment --method candidates`` (and ``persam learn`` of such a concept, ``persam
everything --source boxes``) end to end on synthetic scenes, with the scripted colour backbone
standing in for SAM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ColourBackbone, fast_sam_config, iou, make_scene
from PIL import Image

from persam import registry
from persam.cli import main

RED = 3
GRID = ["--points-per-side", "8"]
MODEL = ["--model", "sam_vit_b", "--checkpoint", "none", "-q"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture
def colour_model(monkeypatch):
    monkeypatch.setattr(registry, "build_model", lambda *a, **k: ColourBackbone())


@pytest.fixture
def scenes(tmp_path: Path) -> dict:
    """ref.png + ref_mask.png (the red square), targets/copies.png (the red square and a pasted
    copy), targets/without.png (no red square)."""
    frames, labels = make_scene(t=3)
    (tmp_path / "targets").mkdir()
    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    Image.fromarray((labels[0] == RED).astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    ys, xs = np.nonzero(labels[2] == RED)
    copies = frames[2].copy()
    copies[ys + 40, xs + 60] = frames[2][ys, xs]
    truth = labels[2] == RED
    truth[ys + 40, xs + 60] = True
    Image.fromarray(copies).save(tmp_path / "targets" / "copies.png")
    without = frames[1].copy()
    without[labels[1] == RED] = 110
    Image.fromarray(without).save(tmp_path / "targets" / "without.png")
    boxes = {}
    for name, lab in (("ref.png", labels[0]), ("copies.png", labels[2])):
        rows = []
        for k in (RED, 7):
            ys, xs = np.nonzero(lab == k)
            rows.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        boxes[name] = rows
    boxes["without.png"] = []
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    return {"dir": tmp_path, "truth": truth, "square": labels[2] == RED}


def ref_args(d: Path) -> list[str]:
    return ["--ref", str(d / "ref.png"), "--ref-mask", str(d / "ref_mask.png")]


def mask_of(out: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(out / "masks" / f"{name}.png")) > 0


def test_segment_finds_the_copies_and_reports_not_found(colour_model, scenes, capsys):
    d = scenes["dir"]
    out = d / "out"
    argv = ["segment", *ref_args(d), str(d / "targets"), "-o", str(out), "--method", "candidates"]
    assert main([*argv, "--max-instances", "3", *GRID, *MODEL]) == 0
    assert "object not found in 1" in capsys.readouterr().out
    assert iou(mask_of(out, "copies"), scenes["truth"]) > 0.8
    assert not mask_of(out, "without").any()


def test_learn_then_segment_with_the_concept_file(colour_model, scenes, capsys):
    d = scenes["dir"]
    concept = d / "red.persam"
    assert main(["learn", *ref_args(d), "-o", str(concept), "--method", "candidates", *MODEL]) == 0
    out = d / "out"
    argv = ["segment", "--concept", str(concept), str(d / "targets"), "-o", str(out), "--max-instances", "3"]
    assert main([*argv, *MODEL]) == 0
    assert iou(mask_of(out, "copies"), scenes["truth"]) > 0.8 and not mask_of(out, "without").any()


def test_box_source_from_a_json_file(colour_model, scenes, capsys):
    d = scenes["dir"]
    out = d / "out"
    argv = ["segment", *ref_args(d), str(d / "targets"), "-o", str(out), "--method", "candidates"]
    assert main([*argv, "--source", "boxes", "--boxes", str(d / "boxes.json"), *MODEL]) == 0
    found = mask_of(out, "copies")
    # The file boxes the red square, not its copy: only the boxed one is a candidate.
    assert iou(found, scenes["square"]) > 0.8
    assert not mask_of(out, "without").any()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--points-per-side", "8"], "--points-per-side applies to --method candidates"),
        (["--method", "candidates", "--source", "boxes"], "needs --boxes"),
        (["--method", "candidates", "--points-per-side", "0"], "--points-per-side"),
        (["--method", "colour"], "expected persam, persam-f or candidates"),
    ],
)
def test_bad_candidate_options_exit_2(colour_model, scenes, capsys, extra, message):
    d = scenes["dir"]
    out = d / "out"
    try:
        rc = main(["segment", *ref_args(d), str(d / "targets"), "-o", str(out), *extra, *MODEL])
    except SystemExit as e:  # argparse rejects a bad --method value itself
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_everything_with_boxes_and_a_decoder_file(scenes, tmp_path, capsys):
    """A tiny random SAM (mechanics only): one mask per box of the file, after loading a decoder
    file in MobileSAMv2's layout."""
    d = scenes["dir"]
    config = tmp_path / "fast.json"
    config.write_text(json.dumps(fast_sam_config()))
    model = registry.build_model(str(config))
    state = {
        "PromtEncoder": model.model.prompt_encoder.state_dict(),
        "MaskDecoder": {k: torch.randn(v.shape) for k, v in model.model.mask_decoder.state_dict().items()},
    }
    torch.save(state, tmp_path / "decoder.pt")
    out = tmp_path / "every"
    argv = ["everything", str(d / "targets" / "copies.png"), "-o", str(out), "--source", "boxes"]
    argv += ["--boxes", str(d / "boxes.json"), "--decoder-checkpoint", str(tmp_path / "decoder.pt")]
    assert main([*argv, "--model", str(config), "--checkpoint", "none", "-q"]) == 0
    records = json.loads((out / "records" / "copies.json").read_text())["masks"]
    assert len(records) == 2 and all("box_prompt" in r for r in records)
