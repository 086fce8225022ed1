"""``persam eval``: score predictions on the PerSeg and DAVIS 2017 benchmarks."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from persam.cli.options import fail, one_line, positive_int

_PROG = "persam eval"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions on PerSeg (mIoU, mAcc, bIoU) or DAVIS 2017 (J&F)",
        description="Evaluate segmentation results against benchmark annotations.",
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")

    p = sub.add_parser(
        "perseg",
        help="PerSeg mIoU / mAcc / Boundary IoU",
        description="Score PerSeg predictions (<PRED>/<concept>/NN.png, as 'persam segment --save perseg' "
        "writes them) against the annotations; the reference image of every concept is excluded.",
    )
    p.add_argument(
        "--data", required=True, type=Path, metavar="ROOT", help="PerSeg root or its Annotations folder"
    )
    p.add_argument("--pred", required=True, type=Path, metavar="PRED", help="prediction folder")
    p.add_argument("--ref-idx", default="00", metavar="NN", help="stem of the reference image (default 00)")
    p.add_argument(
        "--csv", type=Path, default=None, metavar="FILE", help="also write per-concept results to FILE"
    )
    p.add_argument(
        "--missing-concepts",
        choices=("error", "zero"),
        default="error",
        help="a concept without prediction folder is an error (default) or scores 0",
    )
    p.add_argument(
        "--official-output",
        action="store_true",
        help="print exactly what the reference eval_miou.py prints (after its Args line)",
    )
    p.set_defaults(func=_perseg)

    p = sub.add_parser(
        "davis",
        help="DAVIS 2017 semi-supervised J / F / J&F",
        description="Score semi-supervised DAVIS 2017 results (<RES>/<sequence>/NNNNN.png, indexed PNGs) "
        "and write global_results-<set>.csv and per-sequence_results-<set>.csv.",
    )
    p.add_argument("--davis-root", required=True, type=Path, metavar="DAVIS", help="DAVIS 2017 root folder")
    p.add_argument("--results", required=True, type=Path, metavar="RES", help="results folder")
    p.add_argument("--set", default="val", dest="gt_set", metavar="SET", help="sequence list (default val)")
    p.add_argument(
        "--sequences", nargs="+", default=None, metavar="SEQ", help="evaluate only these sequences"
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, metavar="N", help="processes (default: all CPUs)"
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the CSVs go (default: the results folder)",
    )
    p.add_argument(
        "--full-precision",
        action="store_true",
        help="also write global_results.csv, per-sequence_results.csv and per-object_statistics.csv "
        "with full float precision",
    )
    p.set_defaults(func=_davis)

    parser.set_defaults(func=lambda args: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        print(f"{_PROG}: warning: {one_line(w.message)}", file=sys.stderr)


def check_csv_not_input(csv: Path, *roots: Path) -> None:
    """Refuses a ``--csv`` that is one of the masks being scored (an image under ``--data`` or
    ``--pred``): writing the table there would destroy it."""
    from persam.io import IMAGE_EXTENSIONS, InputError
    from persam.paths import is_within

    if csv.suffix.lower() in IMAGE_EXTENSIONS and any(is_within(csv, r) for r in roots if r.is_dir()):
        raise InputError(
            f"--csv {csv}: would overwrite an input image under --data / --pred; choose a .csv name"
        )


def _perseg(args: argparse.Namespace) -> int:
    from persam.evaluation.perseg import evaluate_perseg, format_official, format_table, write_csv
    from persam.io import InputError, check_output_dir

    try:
        if args.csv is not None:  # checked before the (slow) evaluation
            if args.csv.is_dir():
                raise InputError(f"--csv {args.csv}: is a folder, expected a file name")
            check_csv_not_input(args.csv, args.data, args.pred)
            try:
                check_output_dir(args.csv.parent)
            except InputError as e:
                raise InputError(f"--csv {args.csv}: cannot be written ({e})") from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate_perseg(
                args.data, args.pred, args.ref_idx, missing_concepts=args.missing_concepts
            )
        _report_warnings(caught)
        if args.official_output:
            print(format_official(result), end="")
        else:
            print(format_table(result))
        if args.csv is not None:
            write_csv(result, args.csv)
            print(f"Per-concept results saved in {args.csv}")
    except (InputError, OSError) as e:
        return fail(_PROG, str(e))
    return 0


def _davis(args: argparse.Namespace) -> int:
    from persam.evaluation.davis import (
        evaluate_davis,
        format_tables,
        save_full_precision_csvs,
        save_official_csvs,
    )
    from persam.io import InputError, check_output_dir

    try:
        out_dir = args.output_dir if args.output_dir is not None else args.results
        # Checked before the (slow) evaluation, the results folder too: it may be read-only.
        try:
            if args.output_dir is not None or args.results.is_dir():
                check_output_dir(out_dir)
        except InputError as e:
            option = "--output-dir" if args.output_dir is not None else "--results (pass --output-dir)"
            raise InputError(f"{option} {e}") from None
        result = evaluate_davis(
            args.davis_root, args.results, gt_set=args.gt_set, workers=args.workers, sequences=args.sequences
        )
    except (InputError, OSError) as e:
        return fail(_PROG, str(e))
    written, error = [], None
    try:
        written = save_official_csvs(result, out_dir)
        if args.full_precision:
            written += save_full_precision_csvs(result, out_dir)
    except (InputError, OSError) as e:  # the numbers are printed all the same
        error = str(e)
    if math.isnan(result.global_results["J&F-Mean"]):
        print(f"{_PROG}: warning: no sequence has objects; every global number is NaN", file=sys.stderr)
    for path in written:
        print(f"Results saved in {path}")
    print(format_tables(result))
    return fail(_PROG, f"the results were not saved: {error}") if error is not None else 0
