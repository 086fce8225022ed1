"""Track your object through a video from a mask of its first frame.

    python examples/track_video.py video.mp4 first_frame_mask.png -o tracked/

Writes one palette PNG per frame (``<output>/<frame>.png``, 0 = background, 1.. = object ids) and
``<output>/scores.json``, and prints, per frame, which objects were found. ``--overlay out.mp4``
adds a video of the objects drawn over the frames (as ``persam track`` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import persam
from persam.pipelines.video_folder import track_to_folder
from persam.tracking import FrameResult
from persam.weights import WeightsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file or a folder of frames")
    parser.add_argument("first_mask", help="mask of the object(s) in the first frame")
    parser.add_argument("-o", "--output", type=Path, default=Path("tracked"), help="output folder")
    parser.add_argument(
        "--method", default="persam", choices=("persam", "persam-f", "persam_f"), help="default persam"
    )
    parser.add_argument("--overlay", type=Path, help="also write an overlay video (.mp4)")
    parser.add_argument("--model", default="sam_vit_h", help="model name or config JSON")
    parser.add_argument("--checkpoint", default="auto", help="weights file, 'auto' or 'none'")
    args = parser.parse_args(argv)

    try:
        model = persam.build_model(args.model, checkpoint=args.checkpoint)

        def report(frame: FrameResult) -> None:
            masks = frame.masks  # one mask per object: masks, scores, boxes, object_ids, found
            found = masks.object_ids[masks.found].tolist()
            print(f"frame {frame.index}: objects {found or 'none'} found")

        track_to_folder(
            model, args.video, args.first_mask, args.output, overlay=args.overlay, method=args.method,
            on_frame=report,
        )  # fmt: skip
    except (persam.InputError, WeightsError, ValueError, OSError) as e:  # bad video, mask or model
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
