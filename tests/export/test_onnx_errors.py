"""Failures of the ONNX decoder export (``persam.export``, ``persam export-onnx``): one-line errors,
no output file left behind, never an input overwritten; and the command's successful path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from persam.cli import main
from persam.errors import InputError
from persam.export import MISSING_ONNX, ExportError, export_decoder_onnx
from persam.export.decoder import INPUT_NAMES
from persam.registry import build_model

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx / onnxruntime are not installed (pip install 'persam[onnx]')",
)


@pytest.fixture(scope="module")
def tiny_sam():
    return build_model("tiny_random_sam", checkpoint="none", dtype="float32")


def test_missing_onnx_is_one_line(monkeypatch, tmp_path, tiny_sam):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError) as info:
        export_decoder_onnx(tiny_sam, tmp_path / "d.onnx")
    assert str(info.value) == MISSING_ONNX
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_onnx(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "d.onnx"
    rc = main(["export-onnx", "--model", "tiny_random_sam", "--checkpoint", "none", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"persam export-onnx: error: {MISSING_ONNX}"
    assert not out.exists()


@needs_ort
def test_other_families_are_refused(tmp_path):
    model = build_model("tiny_random_efficient_sam", checkpoint="none", dtype="float32")
    with pytest.raises(ExportError, match="SAM family"):
        export_decoder_onnx(model, tmp_path / "d.onnx")
    assert list(tmp_path.iterdir()) == []


@needs_ort
def test_no_partial_file_when_the_export_fails(monkeypatch, tmp_path, tiny_sam):
    from persam.export import onnx as onnx_export

    def broken(wrapper, args, path, opset, names):
        Path(path).write_bytes(b"half an onnx file")
        raise RuntimeError("exporter crashed\nwith a traceback")

    monkeypatch.setattr(onnx_export, "_export_torchscript", broken)
    out = tmp_path / "d.onnx"
    with pytest.raises(ExportError) as info:
        export_decoder_onnx(tiny_sam, out, exporter="torchscript")
    assert "\n" not in str(info.value) and "exporter crashed" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@needs_ort
def test_bad_output_paths(tmp_path, tiny_sam):
    with pytest.raises(ExportError, match="is a folder"):
        export_decoder_onnx(tiny_sam, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        export_decoder_onnx(tiny_sam, blocker / "d.onnx")
    assert "\n" not in str(info.value) and str(blocker) in str(info.value)
    with pytest.raises(ExportError, match="opset 16"):
        export_decoder_onnx(tiny_sam, tmp_path / "d.onnx", opset=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@needs_ort
def test_cli_exports_and_reports_errors(tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "out" / "decoder.onnx"
    args = ["export-onnx", "--model", "tiny_random_mobile_sam", "--checkpoint", "none"]
    assert main([*args, "-o", str(out), "--return-single-mask"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]

    bad = [
        (["--model", "tiny_random_efficient_sam", "--checkpoint", "none"], "SAM family"),
        (["--model", "sam_vit_b", "--checkpoint", str(tmp_path / "missing.pth")], "missing.pth"),
        (["--model", "tiny_random_sam", "--checkpoint", "none", "--opset", "11"], "--opset 11"),
    ]
    for extra, expected in bad:
        target = tmp_path / "bad.onnx"
        assert main(["export-onnx", *extra, "-o", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("persam export-onnx: error: ") and expected in err[-1], err
        assert not target.exists()

    checkpoint = tmp_path / "weights.pth"
    checkpoint.write_bytes(b"not touched")
    same = ["--checkpoint", str(checkpoint), "-o", str(checkpoint)]
    assert main(["export-onnx", "--model", "sam_vit_b", *same]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert checkpoint.read_bytes() == b"not touched"
