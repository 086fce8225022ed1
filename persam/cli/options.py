"""Options and helpers shared by the sub-commands: model selection and loading, devices, reference
prompts, and reporting errors as one line."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from persam import methods
from persam.devices import DEVICE_CHOICES, DTYPE_CHOICES, EmulatedPrecisionWarning
from persam.errors import InputError, first_line

if TYPE_CHECKING:
    import torch

    from persam.backbones.base import Backbone

DEVICES = DEVICE_CHOICES
DTYPES = DTYPE_CHOICES
DEFAULT_MODEL = "sam_vit_h"

# Exit codes: 0 success; 1 some images failed; 2 nothing done (bad arguments or input).
EXIT_PARTIAL = 1
EXIT_ERROR = 2


class CommandError(Exception):
    """A fatal, user-facing problem; the message is one line naming the file or option at fault."""


def fail(prog: str, message: str) -> int:
    """Prints ``"<prog>: error: <message>"`` on stderr and returns :data:`EXIT_ERROR`."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return EXIT_ERROR


one_line = first_line


# ------------------------------------------------------------------------------------------ model
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--model``, ``--checkpoint``, ``--device`` and ``--dtype``."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME|CONFIG.json",
        help=f"registry name (see 'persam weights list') or a model config JSON (default {DEFAULT_MODEL})",
    )
    g.add_argument(
        "--checkpoint",
        default="auto",
        metavar="PATH|auto|none",
        help="weights file; 'auto' uses (and downloads into) the cache; 'none' keeps random weights, "
        "for testing only (default auto)",
    )
    g.add_argument("--device", default="auto", choices=DEVICES, help="where to run (default auto)")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="image-encoder precision: auto = bfloat16 where the hardware computes in it natively, "
        "else float32; int8 = quantized linear layers, CPU only (default auto)",
    )


def resolve_device(device: str) -> str:
    """``--device``: ``auto`` -> ``cuda`` / ``mps`` / ``cpu`` by availability; a requested
    accelerator must exist (:func:`persam.devices.resolve_device`), else a :class:`CommandError`."""
    from persam.devices import resolve_device as resolve

    try:
        return str(resolve(device, option="--device"))
    except InputError as e:
        raise CommandError(one_line(e)) from None


def positive_int(text: str) -> int:
    """argparse ``type`` of a count: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def load_model(args: argparse.Namespace, prog: str = "persam") -> Backbone:
    """Builds the backbone chosen by :func:`add_model_arguments`; every failure is a :class:`CommandError`.

    ``--checkpoint none`` gives random weights seeded from the config (see ``build_model``), so
    that two runs (e.g. ``persam learn`` then ``persam segment --concept``) use the same model; it
    warns on stderr, as such a model is useless for real images.
    """
    device = resolve_device(args.device)
    model = args.model or DEFAULT_MODEL
    if model.lower().endswith(".json") and not Path(model).is_file():
        raise CommandError(f"{model}: model config file not found")
    if model.lower().endswith(".json") and str(args.checkpoint).lower() == "auto":
        raise CommandError(
            f"--checkpoint auto: only a registry model (see 'persam weights list') has an official "
            f"checkpoint; with --model {model} pass --checkpoint PATH (or none for random weights)"
        )
    dtype = resolve_dtype(getattr(args, "dtype", "auto"), device, prog)
    random_weights = args.checkpoint is None or str(args.checkpoint).lower() == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmulatedPrecisionWarning)  # reported once, just above
        backbone = _build(args, model, device, dtype, random_weights)
    if random_weights:
        print(
            f"{prog}: warning: --checkpoint none: random weights ({backbone.checkpoint_id}), "
            "for testing only",
            file=sys.stderr,
        )
    return backbone


def resolve_dtype(dtype: str, device: str, prog: str = "persam") -> torch.dtype:
    """``--dtype`` on ``device`` (:func:`persam.devices.resolve_dtype`): a 16-bit precision that
    this CPU emulates is a one-line warning on stderr; ``int8`` off the CPU a :class:`CommandError`."""
    from persam.devices import resolve_dtype as resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmulatedPrecisionWarning)
        try:
            resolved = resolve(dtype, device, option="--dtype")
        except InputError as e:
            raise CommandError(one_line(e)) from None
    for w in caught:
        if issubclass(w.category, EmulatedPrecisionWarning):
            print(f"{prog}: warning: {one_line(w.message)}", file=sys.stderr)
        else:  # not ours to reword: hand it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return resolved


def _build(
    args: argparse.Namespace, model: str, device: str, dtype: torch.dtype, random_weights: bool
) -> Backbone:
    from persam.registry import build_model
    from persam.weights import WeightsError

    try:
        checkpoint = "none" if random_weights else args.checkpoint
        return build_model(model, checkpoint=checkpoint, device=device, dtype=dtype)
    except (WeightsError, InputError, ValueError, KeyError, OSError) as e:
        message = one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
        if model.lower().endswith(".json") and model not in message and "config" in message:
            message = f"{model}: {message}"  # which config file is meant
        raise CommandError(message) from None
    except RuntimeError as e:  # e.g. out of memory, unsupported dtype on a device
        raise CommandError(f"--model {model}: cannot load on {device} ({one_line(e)})") from None
    except Exception as e:  # a damaged checkpoint can fail deep inside the unpickler
        if model.lower().endswith(".json") and random_weights:  # no checkpoint read: the config is at fault
            raise CommandError(
                f"{model}: cannot build the model ({type(e).__name__}: {one_line(e)})"
            ) from None
        raise CommandError(
            f"--checkpoint {args.checkpoint}: cannot load ({type(e).__name__}: {one_line(e)})"
        ) from None


def add_image_limit_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--max-image-pixels`` (see :mod:`persam.pixels`)."""
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images with more pixels (JPEGs are read at reduced size instead); 0 for no limit "
        "(default: $PERSAM_MAX_IMAGE_PIXELS or 100000000)",
    )


def apply_image_limit(args: argparse.Namespace) -> None:
    """Puts ``--max-image-pixels`` in force and checks ``$PERSAM_MAX_IMAGE_PIXELS``."""
    from persam.pixels import max_image_pixels, set_max_image_pixels

    limit = getattr(args, "max_image_pixels", None)
    if limit is not None and limit < 0:
        raise CommandError(f"--max-image-pixels {limit}: expected 0 (no limit) or a positive number")
    set_max_image_pixels(limit)
    try:
        max_image_pixels()
    except InputError as e:
        raise CommandError(one_line(e)) from None


# ---------------------------------------------------------------------------------------- prompts
def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` or ``"x,y:label"`` (label 1 foreground, 0 background) -> ``(x, y, label)``."""
    coords, _, label = text.partition(":")
    try:
        xs = [float(v) for v in coords.split(",")]
        lab = int(label) if label else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected x,y or x,y:label") from None
    if len(xs) != 2 or lab not in (0, 1):
        raise argparse.ArgumentTypeError(f"{text!r}: expected x,y or x,y:label with label 0 or 1")
    return xs[0], xs[1], lab


def split_points(tokens: list[str] | None) -> tuple[list[tuple[float, float, int]], list[str]]:
    """Leading ``x,y[:label]`` tokens as points, and the tokens after them.

    ``--ref-points`` takes several values, so argparse also hands it the target paths that follow
    it on the command line; those are returned as the second list.
    """
    points: list[tuple[float, float, int]] = []
    tokens = list(tokens or [])
    for i, t in enumerate(tokens):
        try:
            points.append(parse_point(t))
        except argparse.ArgumentTypeError:
            if not points:
                raise CommandError(f"--ref-points: {t!r} is not a point x,y or x,y:label") from None
            return points, tokens[i:]
    return points, []


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` -> a box in pixels (``x1 > x0``, ``y1 > y0``)."""
    try:
        v = [float(s) for s in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 4 or v[2] <= v[0] or v[3] <= v[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    return v[0], v[1], v[2], v[3]


def normalize_method(method: str) -> str:
    """``--method`` type of the PerSAM cascades: ``persam-f`` / ``persam_f`` / ``PerSAM-F`` ->
    ``persam_f`` (:func:`persam.methods.normalize_method`)."""
    canonical = str(method).strip().lower().replace("-", "_")
    if canonical not in methods.CASCADE_METHODS:
        raise argparse.ArgumentTypeError(f"{method!r}: expected persam or persam-f")
    return canonical


def normalize_any_method(method: str) -> str:
    """``--method`` type of learning and segmenting images: a cascade or ``candidates``."""
    try:
        return methods.normalize_method(method)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{method!r}: expected persam, persam-f or candidates") from None


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--ref``, ``--ref-mask``, ``--ref-points``, ``--ref-box`` and ``--method``."""
    g = parser.add_argument_group("reference (the object to learn)")
    g.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference image (repeatable)")
    g.add_argument(
        "--ref-mask",
        action="append",
        default=[],
        metavar="MASK",
        help="mask of the object in --ref (repeatable)",
    )
    g.add_argument(
        "--ref-points",
        nargs="+",
        action="extend",
        metavar="X,Y[:LABEL]",
        help="clicks on the object instead of a mask (label 1 object, 0 background)",
    )
    g.add_argument(
        "--ref-box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box around the object instead of a mask"
    )
    g.add_argument(
        "--method",
        type=normalize_any_method,
        default="persam",
        metavar="persam|persam-f|candidates",
        help="PerSAM (training-free), PerSAM-F (first fits 2 mask weights on the reference) or "
        "candidates (segments everything, keeps the masks like the reference); default persam",
    )


@dataclass
class References:
    """Reference images read and checked before any model is loaded.

    Attributes:
        images: ``uint8 [H, W, 3]`` RGB reference images.
        masks: one bool ``[H, W]`` mask per image, or None when the object is given by prompts.
        points: ``[N, 2]`` (x, y) clicks on ``images[0]``, or None; labels ``[N]`` 1 / 0.
        box: ``[4]`` XYXY box on ``images[0]``, or None.
        source: the reference file name, for messages.
        mask_source: the reference mask's file name (empty when prompts gave the object).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    source: str = ""
    mask_source: str = ""


def read_references(args: argparse.Namespace) -> References:
    """Reads ``--ref`` / ``--ref-mask`` / ``--ref-points`` / ``--ref-box``; bad input is a
    :class:`CommandError` naming the file or option."""
    from persam.io import as_image, load_reference
    from persam.personalize.prompts import box_misses_image, points_outside

    refs, masks = list(args.ref), list(args.ref_mask)
    ref_points, rest = split_points(args.ref_points)
    if rest:
        raise CommandError(f"--ref-points: {rest[0]!r} is not a point x,y or x,y:label")
    prompts = bool(ref_points or args.ref_box)
    if not refs:
        raise CommandError("--ref: a reference image is required")
    if prompts:
        if masks:
            raise CommandError("--ref-mask cannot be combined with --ref-points / --ref-box")
        if len(refs) != 1:
            raise CommandError(
                "--ref-points / --ref-box describe one reference image; give exactly one --ref"
            )
    elif not masks:
        raise CommandError("--ref-mask (or --ref-points / --ref-box) is required with --ref")
    elif len(masks) != len(refs):
        raise CommandError(f"--ref-mask: got {len(masks)} mask(s) for {len(refs)} --ref image(s)")
    try:
        if not prompts:
            pairs = [load_reference(r, m) for r, m in zip(refs, masks, strict=True)]
            images, bool_masks = [p[0] for p in pairs], [p[1] for p in pairs]
            return References(images, bool_masks, source=str(refs[0]), mask_source=str(masks[0]))
        image = as_image(refs[0])
    except InputError as e:
        raise CommandError(one_line(e)) from None
    h, w = image.shape[:2]
    out = References([image], None, source=str(refs[0]))
    if ref_points:
        out.points = np.array([[x, y] for x, y, _ in ref_points], np.float64)
        out.labels = np.array([lab for _, _, lab in ref_points], np.int64)
        if not out.labels.any() and not args.ref_box:
            raise CommandError(
                "--ref-points: every point is a background click (label 0); click the object at least once"
            )
        outside = points_outside(out.points, (h, w))
        if outside.any():
            x, y = out.points[int(np.argmax(outside))]
            raise CommandError(f"--ref-points: point {x:g},{y:g} lies outside {refs[0]} ({w}×{h} pixels)")
    if args.ref_box:
        out.box = np.array(args.ref_box, np.float64)
        if box_misses_image(out.box, (h, w)):
            raise CommandError(f"--ref-box: box lies outside {refs[0]} ({w}×{h} pixels)")
    return out


def learn_concept(
    model: Backbone,
    refs: References,
    method: str,
    name: str | None = None,
    progress: bool = False,
    method_options: dict | None = None,
):
    """Learns a :class:`~persam.personalize.Concept` (a mask is first made from prompts, if given;
    ``method_options`` go to :func:`persam.learn`)."""
    from persam.personalize import learn, mask_from_prompts

    try:
        masks = refs.masks
        if masks is None:
            mask = np.asarray(
                mask_from_prompts(model, refs.images[0], refs.points, refs.labels, refs.box), bool
            )
            if not mask.any():
                raise CommandError(
                    f"{refs.source}: the reference points/box gave an empty mask; add or move clicks"
                )
            masks = [mask]
        ref, ref_mask = (refs.images, masks) if len(refs.images) > 1 else (refs.images[0], masks[0])
        options = {"name": name, "progress": progress, "method_options": method_options}
        return learn(model, ref, ref_mask, method=method, **options)
    except InputError as e:
        message = one_line(e)
        # The API names arrays "ref_mask" / "ref_image"; here they have file names.
        label = re.match(r"ref_(mask|image)(\[\d+\])?: ", message)
        message = message[label.end() :] if label else message
        # A problem of the mask (too small, say) names the mask file, not the photo.
        mask_fault = label.group(1) == "mask" if label else "mask" in message
        at_fault = refs.mask_source if refs.mask_source and mask_fault else refs.source
        if refs.source not in message and (not refs.mask_source or refs.mask_source not in message):
            message = f"{at_fault}: {message}"
        raise CommandError(message) from None
