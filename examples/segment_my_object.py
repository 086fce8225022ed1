"""Segment your object in your photos, from one example.

    python examples/segment_my_object.py --ref dog.jpg --ref-mask dog_mask.png photos/ -o masks/

The reference is one photo of the object plus a mask of it (any binary or coloured PNG). Every
target image gets a mask ``<output>/<name>.png`` (0 = background, 255 = object). The first run of
``--checkpoint auto`` downloads the model weights into the cache (see ``persam weights list``).
``persam segment`` does the same with overlays, resuming and more output formats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import persam
from persam.io import list_images
from persam.outputs import save_mask
from persam.pipelines.image_set import output_names
from persam.weights import WeightsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="images, folders or glob patterns to segment")
    parser.add_argument("--ref", required=True, help="a photo of your object")
    parser.add_argument("--ref-mask", required=True, help="the object's mask in --ref")
    parser.add_argument("-o", "--output", type=Path, default=Path("masks"), help="output folder")
    parser.add_argument(
        "--method", default="persam", choices=("persam", "persam-f", "persam_f"), help="default persam"
    )
    parser.add_argument("--model", default="sam_vit_h", help="model name or config JSON")
    parser.add_argument("--checkpoint", default="auto", help="weights file, 'auto' or 'none'")
    args = parser.parse_args(argv)

    try:
        # The whole API: build a model, learn the object once, segment any number of images.
        model = persam.build_model(args.model, checkpoint=args.checkpoint)
        concept = persam.learn(model, args.ref, args.ref_mask, method=args.method)
        paths = list_images(args.targets)
    except (persam.InputError, WeightsError, ValueError) as e:  # bad file, model name or checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Images from different folders may share a name: keep the part of the path that tells them apart.
    for path, name in zip(paths, output_names(paths), strict=True):
        try:
            result = concept.segment(path)
            save_mask(args.output / f"{name}.png", result.mask)
        except (persam.InputError, OSError) as e:  # one unreadable photo does not stop the others
            print(f"{path}: failed: {e}", file=sys.stderr)
            continue
        print(f"{path.name}: {'found' if result.found else 'not found'}, score {result.score:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
