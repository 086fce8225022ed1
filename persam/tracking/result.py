"""What a tracker returns for one frame: :class:`FrameResult` (its masks as
:class:`~persam.results.Masks`), and the per-object, per-call diagnostics a tracker may attach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from persam.results import Masks


@dataclass(kw_only=True)
class CallRecord:
    """One decoder call for one object on one frame.

    Attributes:
        scores: ``[3]`` predicted IoU of the call's masks (PerSAM-F's first call: the raw masks).
        low_res: ``[3, 256, 256]`` low-res logits of those masks.
        areas: int64 ``[3]`` pixel areas (the call whose largest mask is chosen), else None.
        box: int64 ``[4]`` box prompt of the call (the last call), else None.
        auto_choice: the mask the tracker chose by its rule, or None (a blend, no choice).
        choice: the mask used (:meth:`PerSAMTracker.choose` may impose another one), or None.
    """

    scores: torch.Tensor
    low_res: torch.Tensor
    areas: torch.Tensor | None = None
    box: torch.Tensor | None = None
    auto_choice: int | None = None
    choice: int | None = None


@dataclass(kw_only=True)
class ObjectStep:
    """Everything the tracker did for one object on one frame (``diagnostics=True``).

    Attributes:
        slot: the object's position among the tracked objects. object_id: its id.
        points: int64 ``[N, 2]`` (x, y) similarity points; labels int64 ``[N]``.
        box_prompt: ``(box int64 [4], centre int64 [2])`` from the previous frame, or None.
        calls: ``"call1"``, ``"call2"``, ``"call3"`` -> :class:`CallRecord` (the calls that ran).
        logits: float32 ``[H, W]`` final logits that entered the label map, or None.
    """

    slot: int
    object_id: int
    points: np.ndarray
    labels: np.ndarray
    box_prompt: tuple[np.ndarray, np.ndarray] | None
    calls: dict[str, CallRecord] = field(default_factory=dict)
    logits: torch.Tensor | None = None


@dataclass
class FrameResult:
    """The segmentation of one frame.

    Attributes:
        index: frame index in the source video (0-based, counting every frame of the source).
        label_map: ``uint8 [H, W]``, 0 = background, else the object id.
        object_ids: the tracked object ids, ascending.
        scores: per object id, the predicted IoU of its final mask (the SAM 2 tracker: the
            probability that the object is there), or None where the object was not segmented on
            this frame (1.0 on the reference frame).
        present: per object id, whether the object has any pixel in ``label_map``.
        boxes: per object id, the ``XYXY`` box (inclusive pixel indices) of its pixels in
            ``label_map``, or None when absent.
        is_reference: True for the frame whose mask was given.
        image: the ``uint8 [H, W, 3]`` RGB frame (for drawing overlays), or None.
        diagnostics: per processed object, its :class:`ObjectStep` (trackers made with
            ``diagnostics=True``), else None.
    """

    index: int
    label_map: np.ndarray
    object_ids: list[int]
    scores: dict[int, float | None]
    present: dict[int, bool]
    boxes: dict[int, tuple[int, int, int, int] | None]
    is_reference: bool = False
    image: np.ndarray | None = field(default=None, repr=False)
    diagnostics: list[ObjectStep] | None = field(default=None, repr=False)

    @property
    def masks(self) -> Masks:
        """One mask per tracked object (empty where absent) as :class:`~persam.results.Masks`."""
        masks = Masks.from_label_map(
            self.label_map, self.object_ids, [self.scores.get(i) for i in self.object_ids]
        )
        masks.found = np.array([bool(self.present[i]) for i in self.object_ids], bool)
        return masks

    @classmethod
    def from_label_map(
        cls,
        index: int,
        label_map: np.ndarray,
        object_ids: list[int],
        scores: dict[int, float | None],
        *,
        is_reference: bool = False,
        image: np.ndarray | None = None,
    ) -> FrameResult:
        """The result of a frame with presence and boxes read from its ``label_map``."""
        boxes = Masks.from_label_map(label_map, object_ids).boxes
        present = {oid: bool(b[0] >= 0) for oid, b in zip(object_ids, boxes, strict=True)}
        box = {
            oid: (tuple(int(v) for v in b) if b[0] >= 0 else None)
            for oid, b in zip(object_ids, boxes, strict=True)
        }
        return cls(index, label_map, list(object_ids), scores, present, box, is_reference, image)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays)."""
        return {
            "index": self.index,
            "reference": self.is_reference,
            "objects": {
                str(i): {
                    "present": bool(self.present[i]),
                    "score": None if self.scores[i] is None else float(self.scores[i]),
                    "box": None if self.boxes[i] is None else [int(v) for v in self.boxes[i]],
                }
                for i in self.object_ids
            },
        }
