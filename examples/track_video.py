"""Track your object through a video from a mask of its first frame.

    python examples/track_video.py video.mp4 first_frame_mask.png -o tracked/

Writes one palette PNG per frame (``<output>/<frame>.png``, 0 = background, 1.. = object ids) and
prints, per frame, which objects were found. ``persam track`` does the same with an overlay video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import persam
from persam.io import save_png
from persam.readers import DAVIS_PALETTE
from persam.weights import WeightsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file or a folder of frames")
    parser.add_argument("first_mask", help="mask of the object(s) in the first frame")
    parser.add_argument("-o", "--output", type=Path, default=Path("tracked"), help="output folder")
    parser.add_argument(
        "--method", default="persam", choices=("persam", "persam-f", "persam_f"), help="default persam"
    )
    parser.add_argument("--model", default="sam_vit_h", help="model name or config JSON")
    parser.add_argument("--checkpoint", default="auto", help="weights file, 'auto' or 'none'")
    args = parser.parse_args(argv)

    try:
        model = persam.build_model(args.model, checkpoint=args.checkpoint)
        frames = persam.track(model, args.video, args.first_mask, method=args.method)
        for frame in frames:
            save_png(args.output / f"{frame.index:05d}.png", frame.label_map, palette=DAVIS_PALETTE)
            found = [i for i in frame.object_ids if frame.present[i]]
            print(f"frame {frame.index}: objects {found or 'none'} found")
    except (persam.InputError, WeightsError, ValueError, OSError) as e:  # bad video, mask or model
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
