"""``persam everything``: segment everything in a set of images (SAM's automatic mask generation),
or, with a reference, only the masks that show your object.

    persam everything photos/ -o out/ --model sam_vit_b
    persam everything photos/*.jpg -o out/ --points-per-side 16 --crop-n-layers 1
    persam everything photos/ -o out/ --ref dog.jpg --ref-mask dog.png --max-instances 3
    persam everything photos/ -o out/ --source boxes --boxes boxes.json --model mobile_sam_vit_t

Outputs: ``OUT/masks/NAME/K.png`` (one 0/255 PNG per mask, best first), ``OUT/overlays/NAME.jpg``
(every mask in its own colour), ``OUT/records/NAME.json`` (the generator's records with COCO RLE)
and ``OUT/coco.json`` (COCO results of all images). Exit status: 0 done, 1 some images failed (the
others are written), 2 nothing done (bad argument, reference, model or output folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persam.cli.candidates import (
    add_source_arguments,
    apply_decoder_checkpoint,
    box_detector,
    box_generator_options,
    check_source_arguments,
    generator_options,
)
from persam.cli.options import EXIT_PARTIAL, CommandError, add_model_arguments, fail, load_model

_PROG = "persam everything"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "everything",
        help="segment everything in a set of images (optionally: only your object)",
        description="Generate every mask SAM finds in each image from a grid of point prompts, or one "
        "mask per detector box (--source boxes). With --ref and --ref-mask, keep only the masks that "
        "show the reference object.",
        epilog="Outputs: OUT/masks/NAME/K.png (0/255, best first), OUT/overlays/NAME.jpg, "
        "OUT/records/NAME.json, OUT/coco.json. Exit status 0 done, 1 some images failed, 2 nothing "
        "done (bad argument, reference, model or output folder).",
    )
    parser.add_argument("targets", nargs="*", metavar="IMAGE", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    add_source_arguments(parser, title="mask generator")
    r = parser.add_argument_group("find mine (optional)")
    r.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference image (repeatable)")
    r.add_argument("--ref-mask", action="append", default=[], metavar="MASK", help="its object mask")
    r.add_argument("--max-instances", type=int, default=5, metavar="N", help="instances kept (default 5)")
    r.add_argument("--threshold", type=float, metavar="X", help="similarity threshold instead of calibrating")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.errors import InputError
    from persam.io import check_output_dir, list_images, load_reference
    from persam.pipelines.everything import EverythingWriter

    try:
        if not args.targets:
            raise CommandError("no IMAGE given (image files, folders or glob patterns)")
        check_source_arguments(args)
        options = generator_options(args)
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
        detector = box_detector(args, [*images, *map(Path, args.ref)])
        model = load_model(args, _PROG)
        apply_decoder_checkpoint(model, args)
        segment = _segmenter(model, refs, options, args, detector)
        writer = EverythingWriter(args.output, images)
        summary = writer.run(
            segment, progress=not args.quiet, log=lambda m: print(f"{_PROG}: {m}", file=sys.stderr)
        )
    except (CommandError, InputError) as e:
        return fail(_PROG, str(e))
    print(f"{_PROG}: {summary} -> {args.output}")
    return EXIT_PARTIAL if writer.failed else 0


def _segmenter(model, refs, options: dict, args: argparse.Namespace, detector):
    """``image -> (masks, scores, records)``: every generated mask, or the reference's matches."""
    from persam.everything.amg import MaskGenerator
    from persam.everything.boxes import BoxMaskGenerator
    from persam.everything.candidates import calibrate
    from persam.personalize import learn

    def make(output_mode: str):
        if detector is not None:
            return BoxMaskGenerator(model, detector, output_mode=output_mode, **box_generator_options(args))
        return MaskGenerator(model, output_mode=output_mode, **options)

    if not refs:
        generator = make("coco_rle")

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
    matcher = calibrate(concept, images, masks, threshold=args.threshold, generator=make("binary_mask"))

    def mine(image):
        result = matcher.find(image, max_instances=args.max_instances)
        kept = result.instances
        return [i.mask for i in kept], [i.score for i in kept], [{"score": i.score} for i in kept]

    return mine
