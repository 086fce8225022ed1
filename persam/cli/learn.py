"""``persam learn``: learn your object from a reference and save it as a concept file.

persam learn --ref dog.jpg --ref-mask dog.png --method persam-f -o my_dog.persam
persam segment --concept my_dog.persam photos/ -o out/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.options import (
    CommandError,
    add_image_limit_argument,
    add_model_arguments,
    add_reference_arguments,
    apply_image_limit,
    fail,
    learn_concept,
    load_model,
    one_line,
    read_references,
)

_PROG = "persam learn"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="learn your object from a reference and save it",
        description="Learn an object from one or more references (image + mask, or clicks / a box) and save "
        "it as a concept file for 'persam segment --concept'. The file is tied to the model it was "
        "learned with.",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="FILE.persam", help="concept file"
    )
    add_reference_arguments(parser)
    parser.add_argument(
        "--name", metavar="NAME", help="label stored with the concept (default: the file name)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing file that is not a concept file"
    )
    add_image_limit_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar (PerSAM-F fitting)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import InputError, check_output_dir
    from persam.paths import check_not_input
    from persam.personalize.concept import is_concept_file

    try:
        if args.output.is_dir():
            raise CommandError(f"{args.output}: is a folder, expected a concept file name")
        check_not_input(args.output, {"--ref": args.ref, "--ref-mask": args.ref_mask}, "-o")
        if args.output.exists() and not args.overwrite and not is_concept_file(args.output):
            raise CommandError(
                f"-o {args.output}: exists and is not a persam concept file; pass --overwrite to replace it"
            )
        check_output_dir(args.output.parent)  # created by the save
        apply_image_limit(args)
        refs = read_references(args)
        model = load_model(args, _PROG)
        concept = learn_concept(
            model, refs, args.method, name=args.name or args.output.stem, progress=not args.quiet
        )
        try:
            concept.save(args.output)  # atomic
        except OSError as e:
            raise CommandError(f"{args.output}: cannot write ({one_line(e)})") from None
    except (CommandError, InputError) as e:
        return fail(_PROG, str(e))
    print(f"{_PROG}: saved {args.method} concept to {args.output}")
    return 0
