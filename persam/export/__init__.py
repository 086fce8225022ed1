"""Exports of persam models to other runtimes: :func:`export_decoder_onnx` writes the SAM /
MobileSAM prompt encoder + mask decoder as ONNX (interface in :mod:`persam.export.decoder`)."""

from __future__ import annotations

from persam.export.decoder import SamOnnxDecoder
from persam.export.onnx import MISSING_ONNX, ExportError, export_decoder_onnx

__all__ = ["MISSING_ONNX", "ExportError", "SamOnnxDecoder", "export_decoder_onnx"]
