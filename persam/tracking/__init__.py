"""Video object trackers: initialised from the first frame's masks, stepped frame by frame.

* :class:`Tracker` — the protocol every tracker follows; :class:`FrameResult` — one frame's result.
* :class:`PerSAMTracker` (``"persam"``) — PerSAM / PerSAM-F per frame, each object a
  :class:`~persam.personalize.Concept`.

:func:`make_tracker` builds a tracker by name (:data:`TRACKERS`).
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

#: Tracker name -> constructor ``(model, **options) -> Tracker``.
TRACKERS: dict[str, Callable[..., Tracker]] = {"persam": PerSAMTracker}


def make_tracker(name: str, model: Backbone, **options: Any) -> Tracker:
    """The tracker called ``name`` (one of :data:`TRACKERS`) on ``model``, with its ``options``.

    Raises:
        InputError: an unknown tracker name.
    """
    if name not in TRACKERS:
        raise InputError(f"tracker must be one of {', '.join(sorted(TRACKERS))}, got {name!r}")
    return TRACKERS[name](model, **options)


__all__ = [
    "TRACKERS",
    "CallRecord",
    "FrameResult",
    "ObjectStep",
    "PerSAMTracker",
    "TrackedObject",
    "Tracker",
    "make_tracker",
    "merge_object_logits",
]
