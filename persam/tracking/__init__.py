"""Video object trackers: initialised from the first frame's masks, stepped frame by frame.

* :class:`Tracker` — the protocol every tracker follows; :class:`FrameResult` — one frame's result.
* :class:`PerSAMTracker` (``"persam"``) — PerSAM / PerSAM-F per frame, each object a
  :class:`~persam.personalize.Concept`.
* :class:`Sam2Tracker` (``"sam2"``) — the SAM 2 memory tracker (:mod:`persam.tracking.sam2`), for
  SAM 2 models, with optional PerSAM re-detection (:class:`Redetector`).

:func:`make_tracker` builds a tracker by name (:data:`TRACKERS`); :func:`resolve_tracker` turns
``"auto"`` into ``"sam2"`` for SAM 2 models and ``"persam"`` for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.tracking.base import Tracker
from persam.tracking.merge import merge_object_logits
from persam.tracking.persam_tracker import PerSAMTracker, TrackedObject
from persam.tracking.result import CallRecord, FrameResult, ObjectStep
from persam.tracking.sam2.redetect import Redetector
from persam.tracking.sam2_tracker import Sam2Tracker, is_sam2_model

#: Tracker name -> constructor ``(model, **options) -> Tracker``.
TRACKERS: dict[str, Callable[..., Tracker]] = {"persam": PerSAMTracker, "sam2": Sam2Tracker}

#: What ``tracker=`` accepts: a name of :data:`TRACKERS` or ``"auto"``.
TRACKER_CHOICES = ("auto", "persam", "sam2")


def resolve_tracker(name: str, model: Backbone) -> str:
    """The tracker name for ``model``: ``"auto"`` is ``"sam2"`` for a SAM 2 model, else ``"persam"``.

    Raises:
        InputError: an unknown tracker name.
    """
    if name == "auto":
        return "sam2" if is_sam2_model(model) else "persam"
    if name not in TRACKERS:
        raise InputError(f"tracker must be one of auto, {', '.join(sorted(TRACKERS))}, got {name!r}")
    return name


def make_tracker(name: str, model: Backbone, **options: Any) -> Tracker:
    """The tracker called ``name`` (one of :data:`TRACKERS`, or ``"auto"``) on ``model``, with its
    ``options``.

    Raises:
        InputError: an unknown tracker name.
    """
    return TRACKERS[resolve_tracker(name, model)](model, **options)


__all__ = [
    "TRACKERS",
    "CallRecord",
    "FrameResult",
    "ObjectStep",
    "PerSAMTracker",
    "Redetector",
    "Sam2Tracker",
    "TRACKER_CHOICES",
    "TrackedObject",
    "Tracker",
    "is_sam2_model",
    "make_tracker",
    "resolve_tracker",
    "merge_object_logits",
]
