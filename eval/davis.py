"""Track every sequence of a DAVIS 2017 set from its first-frame annotation, then score J & F.

    python eval/davis.py --davis-root data/DAVIS --out runs/davis_vit_h --model sam_vit_h
    python eval/davis.py --davis-root data/DAVIS --out runs/davis_official --compat official --workers 4
    python eval/davis.py --davis-root data/DAVIS --out runs/davis_sam2 --model sam2.1_hiera_b+ --tracker sam2

For every sequence of ``<davis-root>/ImageSets/2017/<set>.txt``, the objects of
``Annotations/<res>/<seq>/00000.png`` are tracked through ``JPEGImages/<res>/<seq>/`` and written as
``<out>/<seq>/NNNNN.png`` (palette PNGs with the annotation's palette; frame 0 is the given mask,
as the semi-supervised protocol expects). The predictions are then evaluated with
:func:`persam.evaluation.davis.evaluate_davis`; the tables are printed and the CSVs written to
``<out>``. A sequence whose folder holds a finished run is skipped (``--overwrite`` recomputes), so
an interrupted run can be resumed; a sequence's files appear only once it is complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from persam.cli.options import CommandError, add_model_arguments, load_model, normalize_method, one_line
from persam.io import InputError
from persam.pipelines.video_folder import track_to_folder
from persam.readers import davis_sequence, open_video


def predict_davis(
    model,
    davis_root: Path,
    out: Path,
    sequences: list[str],
    *,
    tracker: str = "auto",
    method: str = "persam",
    compat: str = "fixed",
    resolution: str = "480p",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, dict]:
    """Writes the predictions of every sequence; returns per-sequence frame counts and timing."""
    report: dict[str, dict] = {}
    for seq in sequences:
        frames_dir, mask_path = davis_sequence(davis_root, seq, resolution)
        with open_video(frames_dir) as source:
            bar = tqdm(
                total=source.info.num_frames, unit="frame", desc=seq, disable=not progress, file=sys.stderr
            )
            try:
                summary = track_to_folder(
                    model,
                    source,
                    mask_path,
                    out / seq,
                    skip_done=not overwrite,
                    tracker=tracker,
                    method=method,
                    compat=compat,
                    on_frame=lambda _, bar=bar: bar.update(1),
                )
            finally:
                bar.close()
        if summary.skipped:
            report[seq] = {"skipped": True}
            continue
        n, seconds = summary.frames, summary.seconds
        report[seq] = {
            "frames": n,
            "objects": len(summary.object_ids),
            "seconds": seconds,
            "fps": n / seconds,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--davis-root", required=True, type=Path, help="DAVIS 2017 root (Annotations, JPEGImages, ImageSets)"
    )
    p.add_argument("--out", required=True, type=Path, help="results folder (<out>/<seq>/NNNNN.png)")
    p.add_argument("--set", default="val", help="sequence list ImageSets/2017/<set>.txt (default val)")
    p.add_argument("--sequences", nargs="+", help="only these sequences")
    p.add_argument("--resolution", default="480p")
    p.add_argument("--method", type=normalize_method, default="persam", metavar="persam|persam-f")
    p.add_argument("--compat", choices=("fixed", "official"), default="fixed")
    p.add_argument(
        "--tracker",
        choices=("auto", "persam", "sam2"),
        default="auto",
        help="sam2: SAM 2 memory tracker; persam: PerSAM per frame; auto (default): sam2 for SAM 2 models",
    )
    p.add_argument("--workers", type=int, default=None, help="evaluation processes (default: all CPUs)")
    p.add_argument("--overwrite", action="store_true", help="recompute sequences already predicted")
    p.add_argument("--eval-only", action="store_true", help="only evaluate existing predictions")
    p.add_argument("-q", "--quiet", action="store_true")
    add_model_arguments(p)
    args = p.parse_args(argv)

    from persam.evaluation.davis import evaluate_davis, format_tables, read_sequence_list, save_official_csvs

    try:
        sequences = args.sequences or read_sequence_list(args.davis_root, args.set)
        report: dict[str, dict] = {}
        if not args.eval_only:
            model = load_model(args)
            args.out.mkdir(parents=True, exist_ok=True)
            report = predict_davis(
                model,
                args.davis_root,
                args.out,
                sequences,
                tracker=args.tracker,
                method=args.method,
                compat=args.compat,
                resolution=args.resolution,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
        result = evaluate_davis(
            args.davis_root,
            args.out,
            gt_set=args.set,
            workers=args.workers,
            sequences=args.sequences,
            resolution=args.resolution,
        )
    except (CommandError, InputError) as e:
        print(f"davis: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(format_tables(result))
    save_official_csvs(result, args.out)
    if report:
        (args.out / "tracking_report.json").write_text(json.dumps(report, indent=1))
        done = [r for r in report.values() if not r.get("skipped")]
        if done:
            frames = sum(r["frames"] for r in done)
            seconds = sum(r["seconds"] for r in done)
            rate = frames / seconds
            print(f"tracked {frames} frames in {len(done)} sequence(s): {seconds:.1f} s, {rate:.2f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
