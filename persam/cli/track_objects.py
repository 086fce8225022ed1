"""``persam track`` options for the tracker and for tracking from a photo (no annotated frame).

    persam track clip.mp4 --ref my_dog.jpg --ref-mask my_dog.png -o out/
    persam track clip.mp4 --concept dog.persam --concept cat.persam -o out/ --tracker sam2

Each ``--ref``/``--ref-mask`` pair or ``--concept`` file is one object (ids 1..N in the order
given, pairs first). PerSAM searches the frames in order until every object is found with a
predicted IoU of at least ``--find-threshold``; tracking starts there and the frames before are
written as background.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from persam.cli.options import CommandError, one_line, positive_int
from persam.errors import InputError

if TYPE_CHECKING:
    from persam.backbones.base import Backbone
    from persam.personalize import Concept

TRACKER_CHOICES = ("auto", "persam", "sam2")
FIND_THRESHOLD = 0.7  # persam.pipelines.find.FIND_THRESHOLD, without importing the pipelines


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1]")
    return v


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--tracker``, ``--redetect-after`` and the track-from-a-photo options."""
    parser.add_argument(
        "--tracker",
        choices=TRACKER_CHOICES,
        default="auto",
        help="sam2: the SAM 2 memory tracker (SAM 2 models only); persam: PerSAM on every frame; "
        "auto (default): sam2 for SAM 2 models, else persam",
    )
    parser.add_argument(
        "--redetect-after",
        type=positive_int,
        metavar="N",
        help="sam2: search an object lost for N frames with its PerSAM feature (default: off)",
    )
    g = parser.add_argument_group("track from a photo (instead of --mask)")
    g.add_argument(
        "--ref",
        action="append",
        type=Path,
        default=[],
        metavar="IMAGE",
        help="photo of an object (repeatable)",
    )
    g.add_argument(
        "--ref-mask",
        action="append",
        type=Path,
        default=[],
        metavar="MASK",
        help="mask of the object in the matching --ref (repeatable)",
    )
    g.add_argument(
        "--concept",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a concept saved by 'persam learn' (repeatable; one object each)",
    )
    g.add_argument(
        "--find-threshold",
        type=_unit_float,
        default=FIND_THRESHOLD,
        metavar="T",
        help="tracking starts on the first frame where PerSAM finds every object with a predicted "
        f"IoU of at least T (default {FIND_THRESHOLD})",
    )


@dataclass
class PhotoObjects:
    """The objects to track from photos, read before the model is loaded."""

    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    concepts: list[Concept] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images) + len(self.concepts)


def read_photo_objects(args: argparse.Namespace) -> PhotoObjects | None:
    """The ``--ref``/``--ref-mask`` pairs and ``--concept`` files, or None when none is given.

    Raises:
        CommandError: unpaired or unreadable references, or these options combined with ``--mask``.
    """
    from persam.io import load_reference
    from persam.personalize import Concept

    refs, masks, files = list(args.ref), list(args.ref_mask), list(args.concept)
    if not (refs or masks or files):
        return None
    if args.mask:
        raise CommandError("--mask cannot be combined with --ref / --concept (a photo replaces the mask)")
    if len(masks) != len(refs):
        raise CommandError(f"--ref-mask: got {len(masks)} mask(s) for {len(refs)} --ref image(s)")
    out = PhotoObjects()
    try:
        for ref, mask in zip(refs, masks, strict=True):
            image, m = load_reference(ref, mask)
            out.images.append(image)
            out.masks.append(np.asarray(m, bool))
            out.sources.append(str(ref))
        for path in files:
            if not path.is_file():
                raise CommandError(f"--concept {path}: no such file")
            out.concepts.append(Concept.load(path))
            out.sources.append(str(path))
    except InputError as e:
        raise CommandError(one_line(e)) from None
    return out


def learn_photo_objects(model: Backbone, objects: PhotoObjects, method: str) -> list[Concept]:
    """One concept per object (the photos learned with ``model``, the files as saved)."""
    from persam.personalize import learn

    concepts = []
    for k, (image, mask) in enumerate(zip(objects.images, objects.masks, strict=True)):
        try:
            concepts.append(learn(model, image, mask, method=method, name=f"object {k + 1}"))
        except InputError as e:
            raise CommandError(f"--ref {objects.sources[k]}: {one_line(e)}") from None
    return concepts + list(objects.concepts)
