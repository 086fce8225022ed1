"""``persam export-onnx``: write the prompt encoder + mask decoder of a SAM-family model as ONNX.

Exit codes: 0 success; 2 error (missing ``onnx`` extra, unknown model, unreadable checkpoint, a
model of another family, unwritable output). A failed export leaves no output file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.options import DEFAULT_MODEL, CommandError, fail, load_model
from persam.errors import PersamError, first_line

_PROG = "persam export-onnx"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the prompt encoder + mask decoder as ONNX (SAM, MobileSAM)",
        description="Write the prompt encoder and mask decoder of a SAM-family model (SAM ViT-B/L/H, "
        "MobileSAM) as one ONNX graph with the interface of the official SAM decoder export: inputs "
        "image_embeddings, point_coords (resized 1024 frame), point_labels (-1 padding, 0..3), "
        "mask_input, has_mask_input, orig_im_size; outputs masks, iou_predictions, low_res_masks.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|CONFIG.json",
        help=f"registry name (see 'persam weights list') or a model config JSON (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--checkpoint",
        default="auto",
        metavar="PATH|auto|none",
        help="weights file; 'auto' uses (and downloads into) the cache; 'none' keeps random weights, "
        "for testing only (default auto)",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.onnx", help="file to write")
    parser.add_argument(
        "--return-single-mask",
        action="store_true",
        help="output one mask (mask 0 for more than two points, else the best of the other three)",
    )
    parser.add_argument(
        "--use-stability-score", action="store_true", help="report stability scores instead of predicted IoU"
    )
    parser.add_argument(
        "--return-extra-metrics",
        action="store_true",
        help="also output stability_scores and areas (before low_res_masks)",
    )
    parser.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    parser.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "torchscript", "dynamo"),
        help="torch exporter: torchscript (fast) while torch has it, else dynamo (default auto)",
    )
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    out: Path = args.output
    checkpoint = args.checkpoint
    if checkpoint not in ("auto", "none") and Path(checkpoint).resolve() == out.resolve():
        return fail(_PROG, f"{out}: the output would overwrite the checkpoint")
    if str(args.model).lower().endswith(".json") and Path(args.model).resolve() == out.resolve():
        return fail(_PROG, f"{out}: the output would overwrite the model config")
    from persam.export.onnx import MIN_OPSET, check_exportable, export_decoder_onnx, require_onnx

    if args.opset < MIN_OPSET:
        return fail(_PROG, f"--opset {args.opset}: the decoder needs opset {MIN_OPSET} or newer")
    try:
        require_onnx(dynamo=args.exporter == "dynamo")
        check_exportable(args.model)
        # The decoder runs in float32 on any runtime; the model is loaded as every command does.
        args.device, args.dtype = "cpu", "float32"
        backbone = load_model(args, _PROG)
        path = export_decoder_onnx(
            backbone,
            out,
            return_single_mask=args.return_single_mask,
            use_stability_score=args.use_stability_score,
            return_extra_metrics=args.return_extra_metrics,
            opset=args.opset,
            exporter=args.exporter,
        )
    except CommandError as e:
        return fail(_PROG, str(e))
    except (PersamError, ValueError, OSError) as e:
        return fail(_PROG, first_line(e))
    print(path)
    return 0
