"""A CVAT auto-annotation function module: a learned concept segmented in every image of a task.

Annotate a CVAT task with a concept file (``persam learn ... -o my_dog.persam``)::

    cvat-cli task auto-annotate TASK_ID --function-module persam.integrations.cvat \\
        -p concept=str:my_dog.persam -p label=str:dog

or straight from a reference photo and its mask::

    cvat-cli task auto-annotate TASK_ID --function-module persam.integrations.cvat \\
        -p ref=str:my_dog.jpg -p ref_mask=str:my_dog_mask.png -p model=str:sam_vit_b

The task needs a label of the same name (``label``, default ``"object"``) of type mask or any. CVAT
calls :func:`create` with the ``-p`` parameters. ``mode=str:interactive`` gives CVAT's interactive
protocol instead (clicks and/or a box -> a mask, any object), and ``mode=str:tracking`` its tracking
protocol (a mask, rectangle or polygon drawn on one frame, followed through the next ones); both
are for CVAT's AI tools through ``cvat-cli function create-native`` / ``run-agent``.

CVAT shapes are encoded with the SDK's own ``cvat_sdk.masks.encode_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.integrations.common import require
from persam.personalize import Concept, learn, mask_from_prompts
from persam.readers import FirstMask
from persam.registry import build_model
from persam.tracking import PerSAMTracker

cvataa = require("cvat_sdk.auto_annotation", "cvat")
cvat_models = require("cvat_sdk.models", "cvat")
cvat_masks = require("cvat_sdk.masks", "cvat")

__all__ = [
    "ConceptDetectionFunction",
    "InteractiveFunction",
    "TrackingFunction",
    "create",
    "mask_to_polygons",
]

MODES = ("detect", "interactive", "tracking")
#: The label id in our specs (CVAT maps it to the task's label of the same name).
LABEL_ID = 0


def _rgb(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """The outer contours of ``mask`` (bool ``[H, W]``) as CVAT polygon points ``[x0, y0, x1, ...]``,
    one per connected region of at least 3 points."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(float).ravel().tolist() for c in contours if len(c) >= 3]


def _polygon_mask(points: list[float], size: tuple[int, int]) -> np.ndarray:
    out = np.zeros(size, np.uint8)
    xy = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int32)
    cv2.fillPoly(out, [xy], 1)
    return out.astype(bool)


# ------------------------------------------------------------------------------- detection
@dataclass
class ConceptDetectionFunction:
    """CVAT detection function: every instance of ``concept`` in an image, as a mask shape (or
    polygons when CVAT asks for them) of the one label ``label``.

    Args:
        concept: a concept bound to its model.
        label: the CVAT label name.
        max_instances: look for up to this many instances per image.
    """

    concept: Concept
    label: str = "object"
    max_instances: int = 1

    @property
    def spec(self) -> Any:
        return cvataa.DetectionFunctionSpec(labels=[cvataa.label_spec(self.label, LABEL_ID, type="mask")])

    def detect(self, context: Any, image: PIL.Image.Image) -> list[Any]:
        """The concept's masks on ``image``, those found and scoring at least CVAT's confidence
        threshold (when it gives one)."""
        masks = self.concept.segment(_rgb(image), max_instances=self.max_instances).masks
        threshold = context.conf_threshold
        keep = masks.found & masks.masks.any(axis=(1, 2))
        if threshold is not None:
            # An unknown score (NaN) never passes an explicit threshold.
            keep &= np.nan_to_num(masks.scores, nan=-1.0) >= threshold
        shapes = []
        for mask in masks.masks[keep]:
            if context.conv_mask_to_poly:
                shapes.extend(cvataa.polygon(LABEL_ID, pts) for pts in mask_to_polygons(mask))
            else:
                shapes.append(cvataa.mask(LABEL_ID, cvat_masks.encode_mask(mask)))
        return shapes


# ----------------------------------------------------------------------------- interactive
@dataclass
class InteractiveFunction:
    """CVAT interaction function: clicks (and/or a box) -> SAM's best mask (any object; no concept)."""

    model: Backbone

    @property
    def spec(self) -> Any:
        return cvataa.InteractionFunctionSpec(min_pos_points=1, min_neg_points=0, min_bounding_boxes=0)

    def preprocess_image(self, context: Any, image: PIL.Image.Image) -> np.ndarray:
        # Encodes once; the prompts of every later click reuse the embedding.
        rgb = _rgb(image)
        self.model.set_image(rgb)
        return rgb

    def detect(self, context: Any, pp_image: np.ndarray, prompts: Any) -> list[Any]:
        pos, neg = list(prompts.pos_points), list(prompts.neg_points or [])
        points = np.asarray(pos + neg, np.float64).reshape(-1, 2) if pos or neg else None
        labels = [1] * len(pos) + [0] * len(neg) if points is not None else None
        box = prompts.bounding_box
        box = None if box is None else [box[0][0], box[0][1], box[1][0], box[1][1]]
        mask = mask_from_prompts(self.model, pp_image, points=points, labels=labels, box=box)
        if not mask.any():
            return []
        return [cvataa.InteractionResultShape(type="mask", points=cvat_masks.encode_mask(mask))]


# -------------------------------------------------------------------------------- tracking
@dataclass
class _TrackState:
    tracker: PerSAMTracker
    shape_type: str
    index: int = 0


@dataclass
class TrackingFunction:
    """CVAT tracking function: a mask, rectangle or polygon on one frame, followed by PerSAM
    (:class:`~persam.tracking.PerSAMTracker`: the object learned on that frame, found on the next
    ones) and given back as a shape of the same type."""

    model: Backbone
    method: str = "persam"

    @property
    def spec(self) -> Any:
        return cvataa.TrackingFunctionSpec(supported_shape_types={"mask", "rectangle", "polygon"})

    def preprocess_image(self, context: Any, image: PIL.Image.Image) -> np.ndarray:
        return _rgb(image)

    def _shape_mask(self, frame: np.ndarray, shape: Any) -> np.ndarray:
        h, w = frame.shape[:2]
        if shape.type == "mask":
            return cvat_masks.decode_mask(shape.points, image_width=w, image_height=h)
        if shape.type == "rectangle":
            # SAM turns the box into the object's mask, which is what PerSAM learns from.
            return mask_from_prompts(self.model, frame, box=list(shape.points[:4]))
        if shape.type == "polygon":
            return _polygon_mask(list(shape.points), (h, w))
        raise InputError(f"cannot track a shape of type {shape.type!r}")

    def init_tracking_state(self, context: Any, pp_image: np.ndarray, shape: Any) -> _TrackState:
        mask = self._shape_mask(pp_image, shape)
        if not mask.any():
            raise InputError(f"the {shape.type} to track covers no pixel of the image")
        tracker = PerSAMTracker(self.model, method=self.method)
        tracker.initialize(pp_image, FirstMask(label_map=mask.astype(np.uint8), object_ids=[1], masks=[mask]))
        return _TrackState(tracker=tracker, shape_type=shape.type)

    def track(self, context: Any, pp_image: np.ndarray, state: _TrackState) -> Any:
        state.index += 1
        mask = state.tracker.step(pp_image, state.index).masks.masks[0]
        if not mask.any():
            return None
        if state.shape_type == "mask":
            points = cvat_masks.encode_mask(mask)
        elif state.shape_type == "rectangle":
            ys, xs = np.nonzero(mask)
            # CVAT boxes are continuous: the last pixel ends one unit further.
            points = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        else:
            polygons = mask_to_polygons(mask)
            if not polygons:
                return None
            points = max(polygons, key=lambda p: cv2.contourArea(np.asarray(p, np.float32).reshape(-1, 2)))
        return cvataa.TrackableShape(type=state.shape_type, points=points)


# --------------------------------------------------------------------------------- factory
def create(
    *,
    mode: str = "detect",
    concept: str | None = None,
    ref: str | None = None,
    ref_mask: str | None = None,
    model: str | None = None,
    checkpoint: str = "auto",
    method: str = "persam",
    label: str = "object",
    max_instances: int = 1,
    device: str = "auto",
    dtype: str = "float32",
) -> Any:
    """The function CVAT runs, from the ``-p NAME=TYPE:VALUE`` parameters of ``cvat-cli``.

    Args:
        mode: ``"detect"`` (a concept in every image), ``"interactive"`` or ``"tracking"``.
        concept: a concept file (``.persam``); or ``ref`` and ``ref_mask``: a reference photo and
            its mask to learn from (``detect`` only).
        model: model name or JSON config (default: the concept's model, else ``sam_vit_h``);
            ``checkpoint``: path, ``auto`` (official file, downloaded once) or ``none``.
        method: ``persam`` or ``persam_f`` (learning from ``ref``, and tracking).
        label: the CVAT label of the shapes (``detect``).
        max_instances: instances per image (``detect``).
        device, dtype: where and how the model runs.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "interactive" and not hasattr(cvataa, "InteractionFunctionSpec"):
        # The interaction protocol came with cvat-sdk 2.75; detection and tracking are older.
        raise InputError("this cvat-sdk has no interactive protocol: pip install 'cvat-sdk>=2.75'")
    loaded = None
    if mode == "detect":
        if concept is None and (ref is None or ref_mask is None):
            raise InputError("give -p concept=str:FILE.persam, or -p ref=str:PHOTO -p ref_mask=str:MASK")
        if concept is not None and (ref is not None or ref_mask is not None):
            raise InputError("give either concept or ref / ref_mask, not both")
        if concept is not None:
            loaded = Concept.load(Path(concept))
    name = model or (loaded.backbone_name if loaded is not None else "sam_vit_h")
    backbone = build_model(name, checkpoint=checkpoint, device=device, dtype=dtype)
    if mode == "interactive":
        return InteractiveFunction(backbone)
    if mode == "tracking":
        return TrackingFunction(backbone, method=method)
    if loaded is not None:
        bound = loaded.bind(backbone)
    else:
        bound = learn(backbone, ref, ref_mask, method=method, name=label)
    return ConceptDetectionFunction(bound, label=label, max_instances=int(max_instances))
