"""``--engine ray`` of ``persam segment`` and ``persam track``: the options and the hand-over to
:mod:`persam.distributed`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from persam.cli.options import EXIT_ERROR, EXIT_PARTIAL, CommandError, fail, one_line
from persam.errors import InputError


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Adds ``--engine``, ``--ray-address``, ``--actors`` and ``--gpus-per-actor``."""
    from persam.cli.options import positive_int

    g = parser.add_argument_group("engine")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help=f"'ray' spreads the {what} over a Ray cluster (pip install \"persam[ray]\"); default local",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster to use ('auto' inside 'ray job submit'); default: start a local one",
    )
    g.add_argument(
        "--actors",
        type=positive_int,
        default=1,
        metavar="N",
        help="model replicas on the cluster (default 1)",
    )
    g.add_argument(
        "--gpus-per-actor",
        type=_non_negative_float,
        default=0.0,
        metavar="F",
        help="GPU share of each replica, e.g. 1 or 0.5 (default 0: CPU)",
    )


def check_engine(args: argparse.Namespace) -> None:
    """Ray options without ``--engine ray`` are a mistake worth naming."""
    if args.engine != "ray" and (args.ray_address or args.actors != 1 or args.gpus_per_actor):
        raise CommandError("--ray-address / --actors / --gpus-per-actor need --engine ray")


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ray_address": args.ray_address,
        "actors": args.actors,
        "gpus_per_actor": args.gpus_per_actor,
        "progress": not args.quiet,
    }


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "checkpoint": args.checkpoint, "device": args.device, "dtype": args.dtype}


def list_targets(args: argparse.Namespace) -> list[str]:
    """The images of ``args.targets`` (paths or URIs) for the Ray engine."""
    from persam.distributed.storage import list_sources

    return [s.label for s in list_sources(args.targets)]


def ray_segmenter(args: argparse.Namespace) -> Any:
    """A stand-in for :func:`~persam.pipelines.image_set.segment_image_set` (same arguments) that
    runs on Ray with the model and cluster options of ``args``."""
    from persam.distributed import segment_dataset

    def segment(
        concept: Any, targets: Any, out_dir: Any, *, progress: bool, inputs: Any = None, **kw: Any
    ) -> Any:
        _check_local_outputs(targets, out_dir, inputs, kw)
        return segment_dataset(concept, targets, out_dir, **kw, **model_options(args), **ray_options(args))

    return segment


def _check_local_outputs(targets: Any, out_dir: Any, inputs: Any, kw: dict[str, Any]) -> None:
    """The local engine's check that no output replaces an input, for a local output folder and
    the local targets (URIs cannot be the same file as a local output)."""
    if "://" in str(out_dir):
        return
    from persam.io import list_images
    from persam.outputs import DEFAULT_SAVE, check_outputs_not_inputs, parse_save
    from persam.pipelines.image_set import output_names

    local = list_images([t for t in targets if "://" not in str(t)]) if targets else []
    check_outputs_not_inputs(
        out_dir,
        output_names(local),
        parse_save(kw.get("save", DEFAULT_SAVE)),
        kw.get("concept_name", "object"),
        kw.get("overlay_format", "jpg"),
        {"TARGET": local, **(inputs or {})},
    )


def track_with_ray(args: argparse.Namespace, prog: str) -> int:
    """``persam track --engine ray VIDEO...``: one video per task; ``OUT/<video name>/`` for
    several videos, ``OUT/`` for one (as the local engine). ``--overlay`` names the overlay file of
    one video, or for several the folder that gets ``<video name>.mp4`` each; ``--ref`` /
    ``--concept`` objects are learned here once and shipped to the actors as concept files."""
    from persam.cli.track import OVERLAY_SUFFIXES, default_mask
    from persam.cli.track_objects import learn_photo_objects, read_photo_objects
    from persam.distributed.track import VideoJob, track_dataset, video_jobs

    try:
        videos = [str(v) for v in args.video]
        photos = read_photo_objects(args)
        if args.mask and len(args.mask) != len(videos) and len(videos) > 1:
            raise CommandError(
                f"--mask: give one first-frame mask per video ({len(videos)}) or none for DAVIS folders"
            )
        overlay = None if args.overlay is None else str(args.overlay)
        if overlay is not None:
            suffix = args.overlay.suffix.lower()
            if len(videos) == 1 and suffix not in OVERLAY_SUFFIXES:
                raise CommandError(f"--overlay {overlay}: use a .mp4 or .avi file name")
            if len(videos) > 1 and suffix in OVERLAY_SUFFIXES:
                raise CommandError(
                    f"--overlay {overlay}: with several videos give a folder (each video's overlay "
                    "is written there as <video name>.mp4)"
                )
            if "://" not in overlay:
                from pathlib import Path

                from persam.paths import check_not_input

                local = [Path(v) for v in videos if "://" not in v]
                masks_in = [Path(m) for m in args.mask if "://" not in str(m)]
                check_not_input(Path(overlay), {"VIDEO": local, "--mask": masks_in}, "--overlay")
        if len(videos) == 1:
            masks = (
                []
                if photos is not None
                else [str(m) for m in args.mask] or [str(_default(default_mask, videos[0]))]
            )
            jobs = [VideoJob(video=videos[0], masks=tuple(masks), out=str(args.output), overlay=overlay)]
        else:
            masks = (
                None
                if photos is not None
                else [str(m) for m in args.mask] or [str(_default(default_mask, v)) for v in videos]
            )
            jobs = video_jobs(videos, masks, args.output, overlay_dir=overlay)
        concepts = None
        if photos is not None:
            from persam.cli.options import load_model

            concepts = learn_photo_objects(load_model(args, prog), photos, args.method)
        summary = track_dataset(
            jobs,
            method=args.method,
            compat=args.compat,
            start=args.start,
            stride=args.stride,
            topk=args.topk,
            box_margin=args.box_margin,
            tracker=args.tracker,
            redetect_after=args.redetect_after,
            concepts=concepts,
            find_threshold=args.find_threshold,
            overwrite=args.overwrite,
            log=lambda msg: print(f"{prog}: {msg}", file=sys.stderr, flush=True),
            **model_options(args),
            **ray_options(args),
        )
    except (CommandError, InputError) as e:
        return fail(prog, one_line(e))
    print(f"{prog}: {summary.line()} -> {args.output}")
    if summary.failed:
        return EXIT_PARTIAL if summary.tracked or summary.skipped else EXIT_ERROR
    return 0


def _default(default_mask: Any, video: str) -> Any:
    from pathlib import Path

    from persam.distributed.storage import is_uri

    if is_uri(video):
        raise CommandError(f"{video}: give its first-frame mask with --mask")
    return default_mask(Path(video))
