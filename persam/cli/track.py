"""``persam track``: follow the objects of a first-frame mask through a video.

    persam track clip.mp4 --mask first.png -o out/
    persam track DAVIS/JPEGImages/480p/bear -o out/bear --overlay bear.mp4
    persam track clip.mp4 --mask cat.png --mask dog.png -o out/ --method persam-f --stride 2
    persam track clip.mp4 --ref my_dog.jpg --ref-mask my_dog.png -o out/ --tracker sam2

The tracker (``--tracker``): ``sam2``, the SAM 2 memory tracker (SAM 2 models), or ``persam``,
PerSAM on every frame; ``auto`` (default) picks sam2 for SAM 2 models. Instead of a first-frame
mask, objects can come from photos (``--ref``/``--ref-mask``, ``--concept``; see
:mod:`persam.cli.track_objects`).

Outputs: ``OUT/<frame>.png`` (DAVIS-format palette PNG per frame, the first-frame mask's palette
or the DAVIS palette), ``OUT/scores.json`` (per frame and object: predicted IoU, presence, box)
and, with ``--overlay``, a video of the frames with the objects drawn over them. Nothing is
written unless the whole video was processed. Exit status 0 on success, 2 on any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persam.cli.engine import add_engine_arguments, check_engine, track_with_ray
from persam.cli.options import (
    CommandError,
    add_model_arguments,
    fail,
    load_model,
    normalize_method,
    one_line,
    positive_int,
)
from persam.cli.track_objects import add_tracker_arguments, learn_photo_objects, read_photo_objects

_PROG = "persam track"
OVERLAY_SUFFIXES = (".mp4", ".avi")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track objects through a video from a first-frame mask",
        description="Segment the objects of a first-frame mask in every later frame of a video file "
        "or a folder of frames (PerSAM: one image-encoder pass per frame, all objects together).",
        epilog="Outputs: OUT/NNNNN.png (palette PNG, one per frame; frame folders keep their file "
        "names), OUT/scores.json, and the --overlay video. Nothing is written if the run fails.",
    )
    parser.add_argument(
        "video",
        nargs="+",
        metavar="VIDEO_OR_DIR",
        help="video file or folder of frames (several, one output folder each, with --engine ray)",
    )
    parser.add_argument(
        "--mask",
        action="append",
        type=Path,
        default=[],
        metavar="FIRST.png",
        help="mask of the first tracked frame: a palette PNG with object ids or a binary PNG; repeat "
        "for one binary mask per object (ids 1, 2, ...). Optional for a DAVIS sequence folder",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument(
        "--method",
        type=normalize_method,
        default="persam",
        metavar="persam|persam-f",
        help="PerSAM (training-free) or PerSAM-F (two mask weights per object fitted on the first "
        "frame); default persam",
    )
    parser.add_argument(
        "--overlay", type=Path, metavar="OUT.mp4", help="also write an overlay video (.mp4/.avi)"
    )
    parser.add_argument(
        "--start", type=_non_negative_int, default=0, metavar="N", help="index of the masked frame"
    )
    parser.add_argument("--stride", type=positive_int, default=1, metavar="K", help="track every K-th frame")
    parser.add_argument(
        "--compat",
        choices=("fixed", "official"),
        default="fixed",
        help="'official' reproduces the reference PerSAM video script exactly, including its uint8 "
        "mask-area comparison and positional box assignment (default fixed)",
    )
    parser.add_argument(
        "--topk", type=positive_int, default=2, metavar="K", help="similarity points (default 2)"
    )
    parser.add_argument(
        "--box-margin",
        type=_non_negative_int,
        default=10,
        metavar="PX",
        help="box growth in pixels (default 10)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the frames of another run in OUT (or PNG files no run wrote) and an existing "
        "--overlay file",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_tracker_arguments(parser)
    add_model_arguments(parser)
    add_engine_arguments(parser, what="videos")
    parser.set_defaults(func=run)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        v = low - 1
    if v < low:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {low}")
    return v


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _redetector(after: int | None):
    """The re-detection settings of ``--redetect-after`` (None: off)."""
    if after is None:
        return None
    from persam.tracking import Redetector

    return Redetector(after=after)


def default_mask(video: Path) -> Path:
    """The first annotation of a DAVIS sequence given by its ``JPEGImages/<res>/<seq>`` folder."""
    parts = video.resolve().parts
    if video.is_dir() and len(parts) >= 3 and parts[-3] == "JPEGImages":
        ann = Path(*parts[:-3], "Annotations", parts[-2], parts[-1])
        pngs = sorted(ann.glob("*.png")) if ann.is_dir() else []
        if pngs:
            return pngs[0]
    if video.is_dir():
        raise CommandError(
            "--mask: a first-frame mask is required (found no DAVIS annotation for this folder)"
        )
    raise CommandError("--mask: a first-frame mask is required (the label PNG of the first tracked frame)")


def check_inputs_kept(args: argparse.Namespace, masks: list[Path]) -> None:
    """Refuses outputs that are inputs: the overlay video written over the source video or a
    mask, or label maps written into the frame folder or over the first-frame mask."""
    from persam.paths import check_not_input, is_within, same_file

    if args.overlay is not None:
        check_not_input(args.overlay, {"VIDEO": [args.video], "--mask": masks}, "--overlay")
    if args.video.is_dir() and is_within(args.output, args.video):
        raise CommandError(
            f"-o {args.output}: is inside the frame folder {args.video}; choose another folder"
        )
    if not args.video.is_dir() and same_file(args.output, args.video):
        raise CommandError(f"-o {args.output}: is the input video; choose an output folder")
    for m in masks:
        if m.suffix.lower() == ".png" and same_file(m.parent, args.output):
            raise CommandError(
                f"-o {args.output}: holds the input --mask {m}, which a label map would replace"
            )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from persam.io import InputError, check_output_dir
    from persam.pipelines.video_folder import check_overlay_target, track_to_folder
    from persam.readers import frame_size, load_first_mask, open_video

    if args.engine == "ray":
        return track_with_ray(args, _PROG)
    try:
        check_engine(args)
        if len(args.video) > 1:
            raise CommandError("several videos need --engine ray (or one command per video)")
        args.video = Path(args.video[0])
        if args.overlay is not None and args.overlay.suffix.lower() not in OVERLAY_SUFFIXES:
            raise CommandError(f"--overlay {args.overlay}: use a .mp4 or .avi file name")
        from_photo = bool(args.ref or args.ref_mask or args.concept)
        masks = args.mask or ([] if from_photo else [default_mask(args.video)])
        check_inputs_kept(args, masks)
        check_output_dir(args.output)
        if args.overlay is not None:
            check_output_dir(args.overlay.parent)
            check_overlay_target(args.output, args.overlay, args.overwrite)
        # Everything cheap is checked before the model is loaded.
        source = open_video(args.video)
        info = source.info
        if info.num_frames is not None and args.start >= info.num_frames:
            raise CommandError(
                f"{args.video}: --start {args.start} is beyond the end ({info.num_frames} frames)"
            )
        photos = read_photo_objects(args)
        first, masks = None, [str(m) for m in args.mask]
        if photos is None:
            masks = args.mask or [default_mask(args.video)]
            size = frame_size(source, args.start)
            first = load_first_mask(masks[0] if len(masks) == 1 else masks, size=size)
        model = load_model(args, _PROG)
        concepts = None if photos is None else learn_photo_objects(model, photos, args.method)
        total = None if info.num_frames is None else len(range(args.start, info.num_frames, args.stride))
        meta = {
            "video": str(args.video),
            "mask": [str(m) for m in masks],
            "references": None if photos is None else photos.sources,
            "tracker": args.tracker,
            "method": args.method,
            "compat": args.compat,
            "model": model.name,
        }
        bar = tqdm(total=total, unit="frame", desc=_PROG, disable=args.quiet, file=sys.stderr)
        try:
            summary = track_to_folder(
                model,
                source,
                first,
                args.output,
                concepts=concepts,
                find_threshold=args.find_threshold,
                tracker=args.tracker,
                redetect=_redetector(args.redetect_after),
                overlay=args.overlay,
                method=args.method,
                compat=args.compat,
                start=args.start,
                stride=args.stride,
                topk=args.topk,
                box_margin=args.box_margin,
                metadata=meta,
                overwrite=args.overwrite,
                on_frame=lambda _: bar.update(1),
            )
        finally:
            bar.close()
    except (CommandError, InputError) as e:
        return fail(_PROG, one_line(e))
    finally:
        if "source" in locals():
            source.close()
    where = f"{args.output}" + (f" and {args.overlay}" if args.overlay is not None else "")
    resumed = f" ({summary.resumed} kept from an interrupted run)" if summary.resumed else ""
    print(f"{_PROG}: {summary.frames} frame(s){resumed}, {len(summary.object_ids)} object(s) -> {where}")
    return 0
