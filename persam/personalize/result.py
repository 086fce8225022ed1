"""What segmenting a concept in one image returns: :class:`SegmentationResult` (and per-stage
:class:`StageInfo`); its masks as the shared :class:`~persam.results.Masks` type."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from persam.results import Masks, Prompts


@dataclass
class StageInfo:
    """Diagnostics of one decoder stage for one prompt set.

    Attributes:
        name: ``"step1"`` / ``"weighted"``, ``"refine1"``, ``"refine2"``.
        scores: float32 ``[C]`` predicted IoU of the stage's masks.
        best_idx: index of the chosen mask.
        score: score of the chosen mask.
        mask: bool ``[H, W]`` chosen mask.
        box_prompt: int64 ``[4]`` XYXY box given to the stage, or None.
    """

    name: str
    scores: np.ndarray
    best_idx: int
    score: float
    mask: np.ndarray
    box_prompt: np.ndarray | None


@dataclass
class SegmentationResult:
    """A concept segmented in one image.

    Attributes:
        mask: bool ``[H, W]``; with ``max_instances > 1``, the union of the first mask and the
            accepted further instances.
        score: predicted IoU of the (first) mask.
        found: the first mask is non-empty and reaches ``score_threshold`` (if one is given).
        points: int64 ``[N, 2]`` (x, y) point prompts of the first mask; point_labels int64 ``[N]``
            (1 positive, 0 negative).
        box: int64 ``[4]`` XYXY box prompt of the step that produced the mask, or None.
        final_stage: name of that step (``"refine2"`` normally; an earlier one when a later step
            gave an empty mask).
        instances: with ``max_instances > 1``, one result per accepted instance (the first one
            included when found), else empty.
        stages: per-stage diagnostics (``return_stages=True``), else None.
        similarity: float32 ``[H, W]`` similarity map (``return_similarity=True``), else None.
        concept: name of the concept, if it has one.
    """

    mask: np.ndarray
    score: float
    found: bool
    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None
    final_stage: str
    instances: list[SegmentationResult] = field(default_factory=list)
    stages: list[StageInfo] | None = None
    similarity: np.ndarray | None = None
    concept: str | None = None

    @property
    def masks(self) -> Masks:
        """The masks as :class:`~persam.results.Masks`: the accepted instances (``max_instances >
        1``), else the one mask, flagged ``found`` or not; ``object_ids`` ``1..N`` in search order."""
        rows = self.instances or [self]
        return Masks(
            masks=np.stack([np.asarray(r.mask, bool) for r in rows]),
            scores=[r.score for r in rows],
            found=[r.found for r in rows],
            prompts=[Prompts(points=r.points, labels=r.point_labels, box=r.box) for r in rows],
        )

    def label_map(self) -> np.ndarray:
        """uint8 ``[H, W]``: 0 background, ``k`` for the ``k``-th instance found."""
        return self.masks[self.masks.found].label_map()
