"""``persam segment``: find and segment your object in a set of images.

    persam segment --ref dog.jpg --ref-mask dog.png photos/ -o out/
    persam segment --ref dog.jpg --ref-points 310,220 photos/*.jpg -o out/ --method persam-f
    persam segment --concept my_dog.persam photos/ -o out/ --save mask,coco
    persam segment --ref dog.jpg --ref-mask dog.png photos/ -o out/ --method candidates --max-instances 3

Exit status: 0 all images segmented (or skipped because their outputs exist), 1 some images
failed (the others are written), 2 nothing done (bad arguments, reference, model or output folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from persam.cli.candidates import (
    add_source_arguments,
    apply_decoder_checkpoint,
    check_source_arguments,
    given_source_flags,
    method_options,
)
from persam.cli.engine import add_engine_arguments, check_engine, list_targets, ray_segmenter
from persam.cli.options import (
    EXIT_ERROR,
    EXIT_PARTIAL,
    CommandError,
    add_image_limit_argument,
    add_model_arguments,
    add_reference_arguments,
    apply_image_limit,
    fail,
    learn_concept,
    load_model,
    one_line,
    positive_int,
    read_references,
    split_points,
)

_PROG = "persam segment"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment your object in a set of images",
        description="Learn your object from one reference (image + mask, clicks or box) or load a saved "
        "concept, then segment it in every target image. Re-running skips images whose outputs exist "
        "and come from the same concept and settings (recorded in OUT/.persam-state.json), so an "
        "interrupted run resumes.",
        epilog="Outputs: OUT/masks/NAME.png (0/255), OUT/overlays/NAME.jpg, OUT/coco.json, "
        "OUT/CONCEPT/NAME.png (PerSeg format). Exit status 0 done, 1 some images failed, 2 nothing "
        "done (bad argument, reference, model or output folder).",
    )
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (ray: or URI)")
    add_reference_arguments(parser)
    parser.add_argument(
        "--concept",
        type=Path,
        metavar="FILE.persam",
        help="apply a concept saved by 'persam learn' instead of --ref",
    )
    parser.add_argument(
        "--save",
        default="mask,overlay",
        metavar="KINDS",
        help="comma-separated outputs among mask, overlay, coco, perseg (default mask,overlay)",
    )
    parser.add_argument(
        "--concept-name",
        metavar="NAME",
        help="PerSeg sub-folder and COCO category (default: the reference image's folder name, "
        "or the concept file's name)",
    )
    parser.add_argument(
        "--max-instances",
        type=positive_int,
        default=1,
        metavar="N",
        help="find up to N objects per image (default 1)",
    )
    parser.add_argument(
        "--overlay-format", choices=("jpg", "png"), default="jpg", help="overlay file type (default jpg)"
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    add_image_limit_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_source_arguments(
        parser, title="method candidates (where the candidate masks come from)", defaults=False
    )
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="X",
        help="method candidates: minimum similarity of a kept mask, instead of the one calibrated on "
        "the reference",
    )
    parser.add_argument(
        "--no-refine", action="store_true", help="method candidates: keep the masks unrefined by PerSAM"
    )
    add_model_arguments(parser)
    add_engine_arguments(parser, what="images")
    parser.set_defaults(func=run)


def default_concept_name(args: argparse.Namespace) -> str:
    """``--concept-name``, else the concept file's stem, else the reference image's folder name."""
    if args.concept_name:
        return args.concept_name
    if args.concept is not None:
        return args.concept.stem
    name = Path(args.ref[0]).resolve().parent.name if args.ref else ""
    return name or "object"


def load_concept(path: Path, model=None):
    """Loads a saved concept (bound to ``model`` when given); a missing, corrupt, crafted or foreign
    file is a :class:`CommandError`."""
    from persam.personalize import Concept

    if not path.is_file():
        raise CommandError(f"{path}: concept file not found")
    try:
        return Concept.load(path, model)
    except (ValueError, KeyError, OSError, RuntimeError, EOFError) as e:
        message = one_line(e)
        if str(path) not in message:
            message = f"{path}: {message}"
        raise CommandError(message) from None


def model_of_concept(args: argparse.Namespace, concept) -> None:
    """Without ``--model``, the model is the one recorded in the concept file (and its random
    weights when it was learned with ``--checkpoint none``), not the default."""
    from persam import registry

    if args.model is not None:
        return
    if not registry.is_registered(concept.backbone_name):
        raise CommandError(
            f"{args.concept}: learned with model {concept.backbone_name!r}, which is not a registry "
            "name; pass --model CONFIG.json (and --checkpoint) as when it was learned"
        )
    args.model = concept.backbone_name
    if str(args.checkpoint).lower() == "auto" and concept.checkpoint_id.startswith("random:"):
        args.checkpoint = "none"


def _check_candidate_flags(args: argparse.Namespace) -> None:
    """The options of method candidates are given with it only (with --concept, only the boxes)."""
    given = given_source_flags(args) + [
        flag
        for flag, on in (("--threshold", args.threshold is not None), ("--no-refine", args.no_refine))
        if on
    ]
    if args.concept is not None:
        fixed = [f for f in given if f not in ("--boxes", "--source", "--threshold")]
        if fixed:
            raise CommandError(f"{fixed[0]}: the concept file fixes how candidates are found; drop it")
    elif given and args.method != "candidates":
        raise CommandError(f"{given[0]} applies to --method candidates")
    if args.concept is not None and args.boxes is not None:
        args.source = "boxes"
    check_source_arguments(args)


def _with_detector(concept, args: argparse.Namespace, images: list[Path]):
    """A loaded concept with the box detector it needs (``--boxes``), or as it is."""
    from persam.cli.candidates import box_detector
    from persam.everything.method import use_detector

    settings = concept.options.get("candidates") if concept.method == "candidates" else None
    needs_boxes = isinstance(settings, dict) and settings.get("source") == "boxes"
    if needs_boxes and args.boxes is None:
        raise CommandError(
            f"{args.concept}: finds its candidates among detector boxes; give --boxes FILE.json"
        )
    if args.boxes is not None and not needs_boxes:
        raise CommandError(f"--boxes: {args.concept} does not take its candidates from detector boxes")
    if args.threshold is not None and concept.method != "candidates":
        raise CommandError(f"--threshold: {args.concept} was not learned with method candidates")
    if args.threshold is not None:
        settings = {**settings, "threshold": args.threshold}
        concept = dataclasses.replace(concept, options={**concept.options, "candidates": settings})
    return use_detector(concept, box_detector(args, images)) if needs_boxes else concept


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from persam.io import InputError, check_output_dir, list_images
    from persam.pipelines.image_set import (
        check_concept_name,
        check_output_layout,
        check_outputs_not_inputs,
        output_names,
        parse_save,
        segment_image_set,
    )

    try:
        points, extra_targets = split_points(args.ref_points)
        if args.ref_points:
            args.ref_points = [f"{x},{y}:{lab}" for x, y, lab in points]
        args.targets = list(args.targets) + extra_targets
        if not args.targets:
            raise CommandError("no TARGET given (image files, folders or glob patterns to segment)")
        if args.concept is not None and (args.ref or args.ref_mask or args.ref_points or args.ref_box):
            raise CommandError(
                "--concept cannot be combined with --ref / --ref-mask / --ref-points / --ref-box"
            )
        if args.concept is None and not args.ref:
            raise CommandError(
                "give a reference (--ref with --ref-mask, --ref-points or --ref-box) or --concept"
            )
        _check_candidate_flags(args)
        # Check everything cheap before loading the model.
        apply_image_limit(args)
        save = parse_save(args.save)
        check_engine(args)
        images = list_images(args.targets) if args.engine == "local" else list_targets(args)
        if not images:
            raise CommandError(f"{', '.join(args.targets)}: no images found")
        if "://" not in args.output:
            check_output_dir(args.output)  # created when the first result is written
        concept_name = default_concept_name(args)
        try:
            check_concept_name(concept_name, save)
        except InputError as e:
            raise CommandError(f"--concept-name: {e} (choose another one with --concept-name)") from None
        check_output_layout(args.output, save, concept_name)
        inputs = {"--ref": args.ref, "--ref-mask": args.ref_mask, "--concept": [args.concept or ""]}
        inputs = {k: [p for p in v if p] for k, v in inputs.items()}
        check_outputs_not_inputs(
            args.output,
            output_names(images),
            save,
            concept_name,
            args.overlay_format,
            {"TARGET": images, **inputs},
        )
        refs = read_references(args) if args.concept is None else None
        saved = load_concept(args.concept) if args.concept is not None else None
        if saved is not None:
            model_of_concept(args, saved)

        model = load_model(args, _PROG)
        apply_decoder_checkpoint(model, args)
        if saved is not None:
            concept = _with_detector(load_concept(args.concept, model), args, images)
        else:
            options = (
                method_options(args, [*images, *map(Path, args.ref)]) if args.method == "candidates" else None
            )
            concept = learn_concept(
                model, refs, args.method, name=concept_name, progress=not args.quiet, method_options=options
            )
        segment = segment_image_set if args.engine == "local" else ray_segmenter(args)
        summary = segment(
            concept,
            images,
            args.output,
            save=save,
            concept_name=concept_name,
            overwrite=args.overwrite,
            max_instances=args.max_instances,
            overlay_format=args.overlay_format,
            progress=not args.quiet,
            log=lambda msg: tqdm.write(f"{_PROG}: {msg}", file=sys.stderr),
            inputs=inputs,
        )
    except (CommandError, InputError) as e:
        return fail(_PROG, str(e))
    if summary.failed and not (summary.segmented or summary.skipped):
        print(f"{_PROG}: error: nothing could be done: {summary.line()}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{_PROG}: {summary.line()} -> {args.output}")
    return EXIT_PARTIAL if summary.failed else 0
