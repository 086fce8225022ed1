"""``persam everything``: segment everything in a set of images (SAM's automatic mask generation),
or, with a reference, only the masks that show your object.

    persam everything photos/ -o out/ --model sam_vit_b
    persam everything photos/*.jpg -o out/ --points-per-side 16 --crop-n-layers 1
    persam everything photos/ -o out/ --ref dog.jpg --ref-mask dog.png --max-instances 3

Outputs: ``OUT/masks/NAME/K.png`` (one 0/255 PNG per mask, best first), ``OUT/overlays/NAME.jpg``
(every mask in its own colour), ``OUT/records/NAME.json`` (the generator's records with COCO RLE)
and ``OUT/coco.json`` (COCO results of all images). Exit status: 0 done, 1 some images failed (the
others are written), 2 nothing done (bad argument, reference, model or output folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persam.cli.options import EXIT_PARTIAL, CommandError, add_model_arguments, fail, load_model, one_line

_PROG = "persam everything"
#: Prompt sources by name: ``None`` is the generator's own point grids. Other sources (e.g. object
#: proposals from a detector) register a factory ``model -> PromptSource`` here.
SOURCES: dict[str, object] = {"grid": None}

# (flag, type, default, help) of the generator options; dest is the option's name.
_GENERATOR_FLAGS = (
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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "everything",
        help="segment everything in a set of images (optionally: only your object)",
        description="Generate every mask SAM finds in each image from a grid of point prompts. With "
        "--ref and --ref-mask, keep only the masks that show the reference object.",
        epilog="Outputs: OUT/masks/NAME/K.png (0/255, best first), OUT/overlays/NAME.jpg, "
        "OUT/records/NAME.json, OUT/coco.json. Exit status 0 done, 1 some images failed, 2 nothing "
        "done (bad argument, reference, model or output folder).",
    )
    parser.add_argument("targets", nargs="*", metavar="IMAGE", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument(
        "--source", choices=sorted(SOURCES), default="grid", help="where to prompt (default grid)"
    )
    g = parser.add_argument_group("mask generator")
    for flag, kind, default, text in _GENERATOR_FLAGS:
        g.add_argument(flag, type=kind, default=default, metavar="N" if kind is int else "X", help=text)
    r = parser.add_argument_group("find mine (optional)")
    r.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference image (repeatable)")
    r.add_argument("--ref-mask", action="append", default=[], metavar="MASK", help="its object mask")
    r.add_argument("--max-instances", type=int, default=5, metavar="N", help="instances kept (default 5)")
    r.add_argument("--threshold", type=float, metavar="X", help="similarity threshold instead of calibrating")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def generator_options(args: argparse.Namespace) -> dict:
    """The :class:`~persam.everything.amg.GeneratorOptions` fields given on the command line."""
    return {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, *_ in _GENERATOR_FLAGS
    }


def run(args: argparse.Namespace) -> int:
    from persam.errors import InputError
    from persam.everything.amg import GeneratorOptions
    from persam.everything.writer import EverythingWriter
    from persam.io import check_output_dir, list_images, load_reference

    try:
        if not args.targets:
            raise CommandError("no IMAGE given (image files, folders or glob patterns)")
        options = generator_options(args)
        try:
            GeneratorOptions(**options)
        except InputError as e:
            raise CommandError(f"--{one_line(e).replace('_', '-')}") from None
        if len(args.ref) != len(args.ref_mask):
            raise CommandError(
                f"--ref-mask: got {len(args.ref_mask)} mask(s) for {len(args.ref)} --ref image(s)"
            )
        if args.max_instances < 1:
            raise CommandError(f"--max-instances: expected a positive integer, got {args.max_instances}")
        images = list_images(args.targets)
        if not images:
            raise CommandError(f"{', '.join(map(str, args.targets))}: no images found")
        check_output_dir(args.output)
        refs = [load_reference(im, m) for im, m in zip(args.ref, args.ref_mask, strict=True)]
        model = load_model(args, _PROG)
        segment = _segmenter(model, refs, options, args)
        writer = EverythingWriter(args.output, images)
        summary = writer.run(
            segment, progress=not args.quiet, log=lambda m: print(f"{_PROG}: {m}", file=sys.stderr)
        )
    except (CommandError, InputError) as e:
        return fail(_PROG, str(e))
    print(f"{_PROG}: {summary} -> {args.output}")
    return EXIT_PARTIAL if writer.failed else 0


def _segmenter(model, refs, options: dict, args: argparse.Namespace):
    """``image -> (masks, scores, records)``: every generated mask, or the reference's matches."""
    from persam.everything.amg import MaskGenerator
    from persam.everything.candidates import calibrate
    from persam.personalize import learn

    factory = SOURCES[args.source]
    source = factory(model) if callable(factory) else None
    if not refs:
        generator = MaskGenerator(model, source=source, output_mode="coco_rle", **options)

        def everything(image):
            records = generator.generate(image)
            return (
                [r.mask for r in records],
                [r.predicted_iou for r in records],
                [r.as_dict() for r in records],
            )

        return everything
    images, masks = [im for im, _ in refs], [m for _, m in refs]
    concept = learn(model, images if len(images) > 1 else images[0], masks if len(masks) > 1 else masks[0])
    matcher = calibrate(concept, images, masks, threshold=args.threshold, source=source, **options)

    def mine(image):
        result = matcher.find(image, max_instances=args.max_instances)
        kept = result.instances
        return [i.mask for i in kept], [i.score for i in kept], [{"score": i.score} for i in kept]

    return mine
