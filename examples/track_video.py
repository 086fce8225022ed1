"""Track your object through a video from a mask of its first frame.

    python examples/track_video.py video.mp4 first_frame_mask.png -o tracked/

Writes one palette PNG per frame (``<out>/<frame>.png``, 0 = background, 1.. = object ids) and
prints, per frame, which objects were found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import persam
from persam.io import save_png
from persam.video_io import DAVIS_PALETTE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file or a folder of frames")
    parser.add_argument("first_mask", help="mask of the object(s) in the first frame")
    parser.add_argument("-o", "--out", type=Path, default=Path("tracked"), help="output folder")
    parser.add_argument("--method", default="persam", choices=("persam", "persam_f"))
    parser.add_argument("--model", default="sam_vit_h", help="model name or config JSON")
    parser.add_argument("--checkpoint", default="auto", help="weights file, 'auto' or 'none'")
    args = parser.parse_args(argv)

    model = persam.build_model(args.model, checkpoint=args.checkpoint)
    for frame in persam.track(model, args.video, args.first_mask, method=args.method):
        save_png(args.out / f"{frame.index:05d}.png", frame.label_map, palette=DAVIS_PALETTE)
        found = [i for i in frame.object_ids if frame.present[i]]
        print(f"frame {frame.index}: objects {found or 'none'} found")


if __name__ == "__main__":
    main()
