"""Segment your object in your photos, from one example.

    python examples/segment_my_object.py --ref dog.jpg --ref-mask dog_mask.png photos/ -o masks/

The reference is one photo of the object plus a mask of it (any binary or coloured PNG). Every
target image gets a mask ``<out>/<name>.png`` (0 = background, 255 = object). The first run of
``--checkpoint auto`` downloads the model weights into the cache (see ``persam weights list``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import persam
from persam.io import list_images
from persam.outputs import save_mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="images, folders or glob patterns to segment")
    parser.add_argument("--ref", required=True, help="a photo of your object")
    parser.add_argument("--ref-mask", required=True, help="the object's mask in --ref")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"), help="output folder")
    parser.add_argument("--method", default="persam", choices=("persam", "persam_f"))
    parser.add_argument("--model", default="sam_vit_h", help="model name or config JSON")
    parser.add_argument("--checkpoint", default="auto", help="weights file, 'auto' or 'none'")
    args = parser.parse_args(argv)

    # The whole API: build a model, learn the object once, segment any number of images.
    model = persam.build_model(args.model, checkpoint=args.checkpoint)
    concept = persam.learn(model, args.ref, args.ref_mask, method=args.method)
    for path in list_images(args.targets):
        result = concept.segment(str(path))
        save_mask(args.out / f"{path.stem}.png", result.mask)
        print(f"{path.name}: {'found' if result.found else 'not found'}, score {result.score:.3f}")


if __name__ == "__main__":
    main()
