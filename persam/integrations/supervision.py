"""persam results as `supervision <https://supervision.roboflow.com>`_ ``Detections`` and back.

>>> from persam.integrations.supervision import to_detections, from_detections
>>> detections = to_detections(concept.segment("park.jpg"), class_names="my dog")    # doctest: +SKIP
>>> annotated = supervision.MaskAnnotator().annotate(image.copy(), detections)      # doctest: +SKIP
>>> masks = from_detections(detections)                                             # doctest: +SKIP

Each mask becomes one detection: ``mask``, ``xyxy`` (inclusive pixel box, as
``supervision.mask_to_xyxy`` gives it; zeros for an empty mask), ``confidence`` (predicted IoU),
``class_id``, ``tracker_id`` (the object id) and ``data["class_name"]``. What supervision has no field
for travels in ``data`` (``"persam_found"``, ``"persam_prompts"``), so that :func:`from_detections`
gives back the same :class:`~persam.results.Masks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from persam.errors import InputError
from persam.integrations.common import as_masks, require
from persam.results import Masks

if TYPE_CHECKING:
    import supervision

__all__ = ["FOUND_KEY", "PROMPTS_KEY", "from_detections", "to_detections"]

#: ``Detections.data`` keys of what supervision has no field for.
FOUND_KEY = "persam_found"
PROMPTS_KEY = "persam_prompts"
#: supervision's own key for class names (its annotators' labels read it).
CLASS_NAME_KEY = "class_name"


def _class_ids(class_id: int | Sequence[int], n: int) -> np.ndarray:
    ids = np.asarray(class_id, np.int64).reshape(-1)
    if ids.size == 1:
        return np.full(n, int(ids[0]), np.int64)
    if ids.size != n:
        raise InputError(f"class_id: expected 1 or {n} values (one per mask), got {ids.size}")
    return ids


def _class_names(
    class_names: str | Sequence[str] | Mapping[int, str] | None, class_ids: np.ndarray
) -> np.ndarray | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        return np.array([class_names] * len(class_ids), dtype=object).astype(str)
    if isinstance(class_names, Mapping):
        missing = sorted({int(c) for c in class_ids} - set(class_names))
        if missing:
            raise InputError(f"class_names has no name for class id(s) {missing}")
        return np.array([class_names[int(c)] for c in class_ids], dtype=str)
    names = list(class_names)
    # A list is indexed by class id, as supervision's own model connectors do.
    if len(class_ids) and (class_ids.min() < 0 or class_ids.max() >= len(names)):
        raise InputError(f"class_names has {len(names)} names, class ids are {class_ids.tolist()}")
    return np.array([names[int(c)] for c in class_ids], dtype=str)


def to_detections(
    masks: Any,
    *,
    class_id: int | Sequence[int] = 0,
    class_names: str | Sequence[str] | Mapping[int, str] | None = None,
    found_only: bool = False,
) -> supervision.Detections:
    """``masks`` as ``supervision.Detections``.

    Args:
        masks: :class:`~persam.results.Masks`, or a result with ``.masks`` (a segmentation result,
            a tracked frame).
        class_id: one class id for every mask, or one per mask.
        class_names: the class name of every mask (a string), or names by class id (a list indexed
            by id, or a mapping); stored as ``data["class_name"]``.
        found_only: keep only the masks flagged ``found`` (by default every mask is kept, so that the
            round trip through :func:`from_detections` is exact).
    """
    sv = require("supervision", "supervision")
    m = as_masks(masks)
    if found_only:
        m = m[m.found]
    n = len(m)
    ids = _class_ids(class_id, n)
    xyxy = m.boxes.astype(np.float32)
    xyxy[m.boxes[:, 0] < 0] = 0  # supervision's box for an empty mask
    prompts = np.empty(n, dtype=object)
    prompts[:] = list(m.prompts)
    data: dict[str, Any] = {FOUND_KEY: m.found.copy(), PROMPTS_KEY: prompts}
    names = _class_names(class_names, ids)
    if names is not None:
        data[CLASS_NAME_KEY] = names
    return sv.Detections(
        xyxy=xyxy.reshape(n, 4),
        mask=m.masks.copy(),
        confidence=m.scores.copy(),
        class_id=ids,
        tracker_id=m.object_ids.copy(),
        data=data,
    )


def from_detections(detections: supervision.Detections) -> Masks:
    """``supervision.Detections`` with masks as :class:`~persam.results.Masks`: ``confidence`` as
    scores, ``tracker_id`` as object ids (``1..N`` without), and ``found`` / prompts from ``data``
    when :func:`to_detections` put them there (else ``found`` = non-empty)."""
    if detections.mask is None:
        raise InputError("these detections have no masks (only boxes); persam results are masks")
    mask = detections.mask
    dense = np.asarray(mask.to_dense() if hasattr(mask, "to_dense") else mask, bool)
    n = len(detections)
    if dense.ndim != 3 or dense.shape[0] != n:
        raise InputError(f"detections masks must be [N, H, W] with N = {n}, got {dense.shape}")
    data = detections.data or {}
    prompts = data.get(PROMPTS_KEY)
    return Masks(
        masks=dense,
        scores=None if detections.confidence is None else np.asarray(detections.confidence, np.float64),
        object_ids=None if detections.tracker_id is None else np.asarray(detections.tracker_id, np.int64),
        found=None if data.get(FOUND_KEY) is None else np.asarray(data[FOUND_KEY], bool),
        prompts=None if prompts is None else list(prompts),
    )
