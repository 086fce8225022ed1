"""Pipelines over many images: a learned concept over an image set, and objects tracked through a video.

* :func:`persam.pipelines.image_set.segment_image_set` — segment a concept in every image of a set
  and write masks / overlays / COCO results.
* :func:`persam.pipelines.video.track` — track the objects of a first-frame mask through a video
  (one image-encoder pass per frame, one batched decoder call per step for all objects);
  :func:`persam.pipelines.video.track_to_folder` — the same, written as DAVIS label maps (and an
  overlay video), atomically.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "segment_image_set": "persam.pipelines.image_set",
    "ImageSetSummary": "persam.pipelines.image_set",
    "track": "persam.pipelines.video",
    "track_to_folder": "persam.pipelines.video_folder",
    "TrackSummary": "persam.pipelines.video_folder",
    "VideoTracker": "persam.pipelines.video",
    "FrameResult": "persam.pipelines.video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Imported on first use so that importing one pipeline does not load the other's dependencies.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
