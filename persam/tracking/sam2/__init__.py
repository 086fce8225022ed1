"""SAM 2 memory tracker: interactive video sessions and streaming tracking with bounded memory.

* :func:`open_session` / :class:`VideoSession`: prompts (clicks, boxes, masks) on any frame, then
  forward or reverse propagation, as the official ``SAM2VideoPredictor``.
* :func:`track`: the whole-video case, reading frames as it goes with a state whose size does not
  grow with the video length.
"""

from __future__ import annotations

from persam.tracking.sam2.engine import NO_OBJ_SCORE, FrameFeatures, MemoryEngine
from persam.tracking.sam2.frames import FrameReader, preprocess_frame
from persam.tracking.sam2.session import VideoSession, open_session
from persam.tracking.sam2.state import FrameOutput, ObjectState
from persam.tracking.sam2.stream import TrackedFrame, track

__all__ = [
    "NO_OBJ_SCORE",
    "FrameFeatures",
    "FrameOutput",
    "FrameReader",
    "MemoryEngine",
    "ObjectState",
    "TrackedFrame",
    "VideoSession",
    "open_session",
    "preprocess_frame",
    "track",
]
