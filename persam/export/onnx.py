"""ONNX export of the SAM / MobileSAM prompt encoder + mask decoder (see
:mod:`persam.export.decoder` for the interface), so that prompts can be decoded in a browser or any
other ONNX runtime from image embeddings computed once.

>>> from persam.export import export_decoder_onnx
>>> export_decoder_onnx("mobile_sam_vit_t", "decoder.onnx", checkpoint="auto")  # doctest: +SKIP

Needs the ``onnx`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` to run the result), imported
only here, so the rest of persam works without it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.export.decoder import INPUT_NAMES, SamOnnxDecoder, output_names
from persam.io import atomic_path
from persam.models.sam import Sam

MISSING_ONNX = "ONNX export needs the 'onnx' extra: pip install 'persam[onnx]'"
#: The opset of the official SAM decoder export; the oldest with every operator the decoder uses.
DEFAULT_OPSET = 17
MIN_OPSET = 17
#: ``"torchscript"``: torch's tracing exporter (seconds); ``"dynamo"``: the ``torch.export``-based
#: one (a minute or more, needs ``onnxscript``); ``"auto"``: the first while torch still has it.
EXPORTERS = ("auto", "torchscript", "dynamo")


class ExportError(InputError):
    """The model cannot be exported (missing extra, unsupported family, exporter failure)."""


def require_onnx(*, dynamo: bool = False) -> Any:
    """The ``onnx`` module (and ``onnxscript`` for the ``dynamo`` exporter), or an
    :class:`ExportError` naming the extra to install."""
    try:
        onnx = importlib.import_module("onnx")
        if dynamo:
            importlib.import_module("onnxscript")
    except ImportError:
        raise ExportError(MISSING_ONNX) from None
    return onnx


def check_exportable(model: str | Path) -> None:
    """Fails early, before any weights are read, for a model name or config of another family.

    Raises:
        ExportError: the model is not of the SAM family.
        InputError: unknown model or unreadable config.
    """
    from persam.registry import resolve_model

    choice = resolve_model(model)
    if choice.family.name != "sam":
        raise ExportError(
            f"{choice.name}: ONNX export supports the SAM family (SAM ViT-B/L/H, MobileSAM), "
            f"not the {choice.family.name} family"
        )


def _sam_module(model: Backbone | Sam | str | Path, checkpoint: str | Path | None) -> Sam:
    if isinstance(model, Backbone):
        module = model.model
    elif isinstance(model, Sam):
        module = model
    else:
        from persam.registry import build_model

        module = build_model(model, checkpoint=checkpoint, device="cpu", dtype="float32").model
    if not isinstance(module, Sam):
        raise ExportError(
            f"ONNX export supports the SAM family (SAM ViT-B/L/H, MobileSAM), not {type(module).__name__}"
        )
    return module


def example_inputs(module: Sam, num_points: int = 3) -> tuple[torch.Tensor, ...]:
    """Inputs of the decoder's interface for ``module`` (random embedding, ``num_points`` points
    with a padding point last, no mask input, a 480 x 640 original)."""
    c = module.prompt_encoder.embed_dim
    h, w = module.prompt_encoder.image_embedding_size
    mh, mw = module.prompt_encoder.mask_input_size
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(1, num_points, 2, generator=gen) * module.img_size
    labels = torch.ones(1, num_points)
    labels[0, -1] = -1
    return (
        torch.randn(1, c, h, w, generator=gen),
        coords,
        labels,
        torch.zeros(1, 1, mh, mw),
        torch.zeros(1),
        torch.tensor([480.0, 640.0]),
    )


def export_decoder_onnx(
    model: Backbone | Sam | str | Path,
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    return_single_mask: bool = False,
    use_stability_score: bool = False,
    return_extra_metrics: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> Path:
    """Writes the prompt encoder + mask decoder of a SAM-family model as an ONNX file.

    Args:
        model: a SAM / MobileSAM backbone, :class:`~persam.models.sam.Sam` module, registered
            model name or model config (built on the CPU with ``checkpoint``).
        path: the ``.onnx`` file to write; written beside it under a temporary name and renamed,
            so a failed export leaves no file.
        checkpoint: weights when ``model`` is a name or config (``None`` / ``"none"``: random,
            ``"auto"``: the official checkpoint, or a path).
        return_single_mask, use_stability_score, return_extra_metrics: see
            :mod:`persam.export.decoder`.
        opset: ONNX opset version (>= 17).
        exporter: one of :data:`EXPORTERS`. Both give the same interface and outputs.

    Returns:
        ``path``.

    Raises:
        ExportError: no ``onnx`` extra, a model of another family, an opset below 17, or an
            exporter failure (one line).
        InputError / WeightsError: unknown model or unreadable checkpoint.
    """
    if int(opset) < MIN_OPSET:
        raise ExportError(f"opset {opset}: the decoder needs opset {MIN_OPSET} or newer")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if exporter == "auto":
        exporter = "torchscript" if _has_torchscript_exporter() else "dynamo"
    onnx = require_onnx(dynamo=exporter == "dynamo")
    dst = Path(path)
    if dst.is_dir():
        raise ExportError(f"{dst}: is a folder, expected an .onnx file path")
    module = _sam_module(model, checkpoint)
    was_training = module.training
    wrapper = SamOnnxDecoder(
        module.eval(),
        return_single_mask=return_single_mask,
        use_stability_score=use_stability_score,
        return_extra_metrics=return_extra_metrics,
    ).eval()
    # The graph is device-agnostic; the trace runs where the model is.
    device = next(module.parameters()).device
    args = tuple(a.to(device) for a in example_inputs(module))
    names = output_names(return_extra_metrics)
    try:
        with atomic_path(dst) as tmp:
            if exporter == "torchscript":
                _export_torchscript(wrapper, args, tmp, int(opset), names)
            else:
                _export_dynamo(wrapper, args, tmp, int(opset), names)
            onnx.checker.check_model(str(tmp))
    except InputError:  # ours: already one line (an unwritable output path, ...)
        raise
    except Exception as e:  # the exporter and the checker raise many types, with long texts
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the exporter colours its messages
        message = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(f"{dst}: ONNX export failed ({type(e).__name__}: {message})") from None
    finally:
        module.train(was_training)
    return dst


def _has_torchscript_exporter() -> bool:
    params = inspect.signature(torch.onnx.export).parameters
    # Before torch 2.5 the tracing exporter is the only one; later ones keep it behind dynamo=False.
    return "dynamo" not in params or "operator_export_type" in params


def _export_torchscript(
    wrapper: SamOnnxDecoder, args: tuple[torch.Tensor, ...], path: Path, opset: int, names: tuple[str, ...]
) -> None:
    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
        "masks": {2: "orig_height", 3: "orig_width"},
    }
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    # Tracing warns about every tensor-to-number conversion; the sizes are recorded as values.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(names),
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            **kwargs,
        )


def _export_dynamo(
    wrapper: SamOnnxDecoder, args: tuple[torch.Tensor, ...], path: Path, opset: int, names: tuple[str, ...]
) -> None:
    points = torch.export.Dim("num_points", min=1, max=1024)
    dynamic_shapes = (None, {1: points}, {1: points}, None, None, None)
    # The exporter reports its progress on stdout, and its graphs on stderr.
    quiet = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=list(INPUT_NAMES),
            output_names=list(names),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ExportError("the ONNX exporter returned no program")
    program.save(str(path), external_data=False)
