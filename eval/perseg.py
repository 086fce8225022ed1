"""Segment a PerSeg-layout dataset with a chosen model and method, then score it (mIoU, mAcc, bIoU).

    python eval/perseg.py --data data/PerSeg --pred runs/perseg_vit_h --model sam_vit_h --method persam

For every concept ``<root>/Images/<concept>/``, the object is learned from image ``<ref-idx>`` and
its mask ``<root>/Annotations/<concept>/<ref-idx>.png``, every image of the concept (the reference
included, as the PerSeg reference code does) is segmented, and the predictions are written as
``<out>/<concept>/<name>.png`` in the PerSeg prediction format. The predictions are then scored
against ``<root>/Annotations`` with :func:`persam.evaluation.perseg.evaluate_perseg`. Re-running
skips concepts and images already predicted (``--overwrite`` recomputes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from persam.cli.options import CommandError, add_model_arguments, load_model, normalize_method, one_line
from persam.io import IMAGE_EXTENSIONS, InputError
from persam.pipelines.image_set import segment_image_set


def find_reference(images_dir: Path, ref_idx: str) -> Path:
    """The reference image ``<images_dir>/<ref_idx>.<ext>``."""
    for ext in IMAGE_EXTENSIONS:
        for p in (images_dir / f"{ref_idx}{ext}", images_dir / f"{ref_idx}{ext.upper()}"):
            if p.is_file():
                return p
    raise InputError(f"{images_dir}: no reference image named {ref_idx}.*")


def predict_perseg(
    model,
    root: Path,
    out: Path,
    method: str,
    ref_idx: str = "00",
    concepts: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, dict]:
    """Writes PerSeg-format predictions for every concept; returns per-concept counts and timing."""
    from persam.personalize import learn

    names = sorted(p.name for p in (root / "Images").iterdir() if p.is_dir())
    if concepts:
        unknown = sorted(set(concepts) - set(names))
        if unknown:
            raise InputError(f"{root / 'Images'}: no concept {unknown[0]!r}")
        names = [n for n in names if n in concepts]
    report: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        ref = find_reference(root / "Images" / name, ref_idx)
        concept = learn(model, ref, root / "Annotations" / name / f"{ref_idx}.png", method=method)
        summary = segment_image_set(
            concept,
            root / "Images" / name,
            out,
            save=("perseg",),
            concept_name=name,
            overwrite=overwrite,
            progress=progress,
        )
        report[name] = {
            "segmented": len(summary.segmented),
            "skipped": len(summary.skipped),
            "failed": [f.message for f in summary.failed],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        print(f"{name}: {summary.line()}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The names of 'persam eval perseg' (--data, --pred); --root and --out still work.
    parser.add_argument(
        "--data",
        "--root",
        dest="root",
        type=Path,
        required=True,
        help="PerSeg root holding Images/ and Annotations/",
    )
    parser.add_argument(
        "--pred",
        "--out",
        dest="out",
        type=Path,
        required=True,
        help="prediction folder (<pred>/<concept>/*.png)",
    )
    parser.add_argument("--method", type=normalize_method, default="persam", help="persam or persam-f")
    parser.add_argument("--ref-idx", default="00", help="reference image name (default 00)")
    parser.add_argument("--concepts", help="comma-separated subset of concepts")
    parser.add_argument("--overwrite", action="store_true", help="recompute existing predictions")
    parser.add_argument("--json", type=Path, help="also write the scores and timings to this JSON file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_model_arguments(parser)
    args = parser.parse_args(argv)

    try:
        for sub in ("Images", "Annotations"):
            if not (args.root / sub).is_dir():
                raise InputError(f"{args.root}: not a PerSeg root (no {sub}/ folder)")
        model = load_model(args)
        concepts = [c for c in args.concepts.split(",") if c] if args.concepts else None
        t0 = time.perf_counter()
        report = predict_perseg(
            model, args.root, args.out, args.method, args.ref_idx, concepts, args.overwrite, not args.quiet
        )
        seconds = time.perf_counter() - t0
    except (CommandError, InputError) as e:
        print(f"perseg: error: {one_line(e)}", file=sys.stderr)
        return 2

    from persam.evaluation.perseg import PersegEvaluationError, evaluate_perseg, format_table

    try:
        result = evaluate_perseg(args.root, args.out, args.ref_idx)
    except PersegEvaluationError as e:
        print(f"perseg: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"model {model.name}, method {args.method}, {len(report)} concepts, {seconds:.1f} s")
    print(format_table(result))
    if args.json:
        scores = {k: getattr(result, k) for k in ("mIoU", "mAcc", "bIoU", "bIoU_pooled", "bIoU_api_min")}
        per_concept = {c.name: {"IoU": c.IoU, "Acc": c.Acc, "bIoU": c.bIoU} for c in result.concepts}
        doc = {"model": model.name, "method": args.method, "ref_idx": args.ref_idx, "seconds": seconds}
        doc.update(scores=scores, concepts=per_concept, runs=report)
        args.json.write_text(json.dumps(doc, indent=2))
    return 1 if any(r["failed"] for r in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
