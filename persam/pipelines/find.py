"""Tracking from a photo: PerSAM finds the objects of personalised concepts on a video's frames,
and the first frame where every object is found gives the tracker its first mask.

A concept counts as found on a frame when its predicted IoU reaches ``find_threshold`` and its
PerSAM mask covers part of an embedding cell (a mask of a few pixels whose drawing vanishes at
the embedding's resolution gives the tracker nothing to learn the object from). Tracking needs
all objects at once (a tracker is initialised with every object on one frame), so frames are
searched in order until all concepts are found on the same frame; the frames before it have no
object.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.personalize import Concept, segment_concepts
from persam.personalize.reference import best_covered_cells
from persam.readers import FirstMask, load_first_mask
from persam.tracking import FrameResult

#: Default minimum predicted IoU of a PerSAM mask for a concept to count as found on a frame.
FIND_THRESHOLD = 0.7


def check_concepts(model: Backbone, concepts: Sequence[Concept], find_threshold: float) -> list[Concept]:
    """The concepts bound to ``model`` (checked for compatibility).

    Raises:
        InputError: no concept, or a threshold outside ``[0, 1]``.
        ConceptMismatchError: a concept learned with another model.
    """
    concepts = list(concepts)
    if not concepts:
        raise InputError("concepts: give at least one concept to find")
    if len(concepts) > 255:
        raise InputError(f"concepts: at most 255 objects can be tracked, got {len(concepts)}")
    if not 0.0 <= float(find_threshold) <= 1.0:
        raise InputError(f"find_threshold must be in [0, 1], got {find_threshold}")
    return [c.bind(model) for c in concepts]


def find_objects(
    model: Backbone, frame: np.ndarray, concepts: Sequence[Concept], find_threshold: float
) -> FirstMask | None:
    """The concepts' masks on ``frame`` as a first mask (object ``k`` of ``concepts`` has id
    ``k + 1``), or None unless every concept is found there."""
    with torch.no_grad():
        results = segment_concepts(model, frame, list(concepts), score_threshold=find_threshold)
    masks = [np.asarray(r.mask, bool) for r in results]
    # An empty mask covers no cell either.
    usable = [
        r.found and bool(best_covered_cells(model, m).any()) for r, m in zip(results, masks, strict=True)
    ]
    if not all(usable):
        return None
    return load_first_mask(masks)


def empty_result(index: int, frame: np.ndarray, object_ids: list[int]) -> FrameResult:
    """The result of a frame before the objects were found: background only, every object absent."""
    label_map = np.zeros(frame.shape[:2], np.uint8)
    return FrameResult.from_label_map(index, label_map, object_ids, dict.fromkeys(object_ids), image=frame)
