"""Command-line options of the mask sources ("segment everything" and the ``candidates`` method):
the automatic mask generator's options, detector boxes from a JSON file, and MobileSAMv2's decoder
file. Shared by ``persam everything`` and ``persam segment --method candidates``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persam.cli.options import CommandError, one_line

if TYPE_CHECKING:
    from persam.backbones.base import Backbone

SOURCES = ("grid", "boxes")

# (flag, type, default, help) of the generator options; dest is the option's name.
GENERATOR_FLAGS = (
    ("--points-per-side", int, 32, "grid points per image side (default 32)"),
    ("--points-per-batch", int, 64, "point prompts decoded at once (default 64)"),
    ("--pred-iou-thresh", float, 0.88, "minimum predicted IoU of a mask (default 0.88)"),
    ("--stability-score-thresh", float, 0.95, "minimum stability score (default 0.95)"),
    ("--stability-score-offset", float, 1.0, "logit offset of the stability score (default 1.0)"),
    ("--box-nms-thresh", float, 0.7, "box IoU above which a mask duplicates a better one (default 0.7)"),
    ("--crop-n-layers", int, 0, "extra layers of image crops, 2**i x 2**i crops in layer i (default 0)"),
    ("--crop-nms-thresh", float, 0.7, "box IoU for duplicates across crops (default 0.7)"),
    ("--crop-overlap-ratio", float, 512 / 1500, "overlap of neighbouring crops (default 0.341)"),
    ("--crop-n-points-downscale-factor", int, 1, "points per side divided by this per layer (default 1)"),
    ("--min-mask-region-area", int, 0, "remove holes and islands smaller than this, in pixels (default 0)"),
)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def add_source_arguments(parser: argparse.ArgumentParser, *, title: str, defaults: bool = True) -> None:
    """Adds ``--source``, ``--boxes``, ``--box-batch-size``, ``--decoder-checkpoint`` and the
    generator flags; with ``defaults=False`` the generator flags default to None (not given)."""
    g = parser.add_argument_group(title)
    g.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="grid: SAM's automatic mask generator (point grids); boxes: one mask per detector box "
        "from --boxes, MobileSAMv2-style (default grid)",
    )
    g.add_argument(
        "--boxes",
        type=Path,
        metavar="FILE.json",
        help='detector boxes per image, {"IMAGE": [[x0, y0, x1, y1(, score)], ...]} (with --source boxes)',
    )
    g.add_argument(
        "--box-batch-size", type=int, default=None, metavar="N", help="boxes decoded at once (default 320)"
    )
    g.add_argument(
        "--decoder-checkpoint",
        type=Path,
        metavar="FILE.pt",
        help="replace the mask decoder (SAM / MobileSAM) with this one, e.g. MobileSAMv2's "
        "Prompt_guided_Mask_Decoder.pt",
    )
    for flag, kind, default, text in GENERATOR_FLAGS:
        g.add_argument(
            flag,
            type=kind,
            default=default if defaults else None,
            metavar="N" if kind is int else "X",
            help=text,
        )


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~persam.everything.amg.GeneratorOptions` fields given on the command line."""
    values = {_dest(flag): getattr(args, _dest(flag)) for flag, *_ in GENERATOR_FLAGS}
    return {k: v for k, v in values.items() if v is not None}


def given_source_flags(args: argparse.Namespace) -> list[str]:
    """The mask-source flags given (those whose value is not None), as spelled on the command line."""
    flags = ["--source", "--boxes", "--box-batch-size"] + [flag for flag, *_ in GENERATOR_FLAGS]
    return [f for f in flags if getattr(args, _dest(f), None) is not None]


def check_source_arguments(args: argparse.Namespace) -> None:
    """``--source`` / ``--boxes`` / ``--box-batch-size`` and the generator options, checked before
    any model is loaded."""
    from persam.errors import InputError
    from persam.everything.amg import GeneratorOptions

    source = args.source or "grid"
    if source == "boxes" and args.boxes is None:
        raise CommandError("--source boxes needs --boxes FILE.json (the boxes of each image)")
    if args.boxes is not None and source != "boxes":
        raise CommandError("--boxes applies to --source boxes")
    if args.boxes is not None and not args.boxes.is_file():
        raise CommandError(f"{args.boxes}: box file not found")
    if args.box_batch_size is not None and args.box_batch_size < 1:
        raise CommandError(f"--box-batch-size: expected a positive integer, got {args.box_batch_size}")
    if args.decoder_checkpoint is not None and not args.decoder_checkpoint.is_file():
        raise CommandError(f"{args.decoder_checkpoint}: decoder checkpoint not found")
    try:
        GeneratorOptions(**generator_options(args))
    except InputError as e:
        raise CommandError(f"--{one_line(e).replace('_', '-')}") from None


def box_detector(args: argparse.Namespace, images: list[Path]):
    """The :class:`~persam.everything.boxes.BoxFile` of ``--boxes`` for ``images`` (None without)."""
    from persam.errors import InputError
    from persam.everything.boxes import BoxFile

    if args.boxes is None:
        return None
    try:
        return BoxFile(args.boxes, images)
    except InputError as e:
        raise CommandError(one_line(e)) from None


def box_generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--box-batch-size`` as :class:`~persam.everything.boxes.BoxMaskGenerator` options."""
    return {} if args.box_batch_size is None else {"batch_size": args.box_batch_size}


def method_options(args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    """The ``method_options`` of method ``candidates`` from the command line."""
    options: dict[str, Any] = dict(generator_options(args))
    options["source"] = args.source or "grid"
    if options["source"] == "boxes":
        options["detector"] = box_detector(args, images)
        if args.box_batch_size is not None:
            options["box_batch_size"] = args.box_batch_size
    if getattr(args, "threshold", None) is not None:
        options["threshold"] = args.threshold
    if getattr(args, "no_refine", False):
        options["refine"] = False
    return options


def apply_decoder_checkpoint(model: Backbone, args: argparse.Namespace) -> None:
    """Loads ``--decoder-checkpoint`` into ``model`` (nothing without it)."""
    from persam.errors import WeightsError
    from persam.everything.decoder_file import load_decoder_checkpoint

    if args.decoder_checkpoint is None:
        return
    try:
        load_decoder_checkpoint(model, args.decoder_checkpoint)
    except WeightsError as e:
        raise CommandError(one_line(e)) from None
