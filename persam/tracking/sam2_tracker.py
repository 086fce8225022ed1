"""The SAM 2 memory tracker behind the :class:`~persam.tracking.base.Tracker` protocol (``"sam2"``).

Frames are handed to a :class:`~persam.tracking.sam2.VideoSession` one at a time as a forward-only
stream, so the session keeps its bounded state (no history) and the caller's frame loop stays in
charge of decoding. Session frame numbers count the frames given to the tracker (0 = the frame of
the first mask); results carry the caller's frame indices.

Scores are the objects' presence probabilities, ``sigmoid(object score logit)``: SAM 2 has no
predicted IoU for tracked frames, and its object score is what decides presence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.readers.first_mask import FirstMask
from persam.tracking.result import FrameResult
from persam.tracking.sam2.frames import FrameReader
from persam.tracking.sam2.redetect import Redetector
from persam.tracking.sam2.session import FrameMasks, VideoSession
from persam.tracking.sam2.stream import TrackedFrame


def is_sam2_model(model: object) -> bool:
    """Whether ``model`` is a SAM 2 backbone (imported here so that importing the trackers does not
    import the SAM 2 backbone)."""
    from persam.backbones.sam2 import Sam2Backbone

    return isinstance(model, Sam2Backbone)


class _PushedFrames:
    """An iterator over frames handed in one by one (the session reads each right after it is
    pushed, so the queue never runs dry while the session is reading)."""

    def __init__(self) -> None:
        self.queue: deque[np.ndarray] = deque()

    def __iter__(self) -> _PushedFrames:
        return self

    def __next__(self) -> np.ndarray:
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()


class Sam2Tracker:
    """SAM 2 memory tracking of the objects of a first-frame mask.

    Args:
        model: a SAM 2 backbone (``persam.build_model("sam2_...")``).
        redetect: search for objects lost for a while with their PerSAM feature: True (default
            settings), a :class:`~persam.tracking.sam2.redetect.Redetector`, or False / None (off,
            the official behaviour).
        num_frames: the number of frames that will be tracked, when known (SAM 2 normalises its
            pointer time encoding by it; unknown counts as at least 16 frames).
        fill_hole_area: fill background holes up to this area in the low-res masks (0 = off).

    Raises:
        InputError: ``model`` is not a SAM 2 model.
    """

    name = "sam2"

    def __init__(
        self,
        model: Backbone,
        *,
        redetect: bool | Redetector | None = False,
        num_frames: int | None = None,
        fill_hole_area: int = 0,
    ) -> None:
        if not is_sam2_model(model):
            raise InputError(
                f"tracker 'sam2' needs a SAM 2 model (sam2_* / sam2.1_*), got "
                f"{getattr(model, 'name', type(model).__name__)!r}; use tracker 'persam' or 'auto'"
            )
        if redetect is True:
            redetect = Redetector()
        self.model = model
        self.redetect: Redetector | None = redetect or None
        self.num_frames = num_frames
        self.fill_hole_area = int(fill_hole_area)
        self._ids: list[int] = []
        self._frames: _PushedFrames | None = None
        self._session: VideoSession | None = None
        self._stream: Iterator[FrameMasks] | None = None
        self._size: tuple[int, int] | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(self._ids)

    def initialize(self, frame: np.ndarray, first_mask: FirstMask, index: int = 0) -> FrameResult:
        """Gives SAM 2 the objects' masks on ``frame`` and encodes their first memories."""
        h, w = frame.shape[:2]
        if first_mask.size != (h, w):
            raise InputError(
                f"{first_mask.source}: mask is {first_mask.size[1]}x{first_mask.size[0]} but the video "
                f"frames are {w}x{h}"
            )
        self._size = (h, w)
        self._frames = _PushedFrames()
        reader = FrameReader(self._frames, num_frames=self.num_frames)
        self._session = VideoSession(self.model, reader, keep_history=False)
        self._session.fill_hole_area = self.fill_hole_area
        self._session.redetect = self.redetect
        self._frames.queue.append(frame)
        for oid, mask in zip(first_mask.object_ids, first_mask.masks, strict=True):
            self._session.add_mask(0, int(oid), mask)
        self._ids = sorted(int(i) for i in first_mask.object_ids)
        self._stream = self._session.propagate(start_frame_idx=0)
        with torch.no_grad():
            next(self._stream)  # the prompted frame: encodes its memory
        scores: dict[int, float | None] = {o: 1.0 for o in self._ids}
        return FrameResult.from_label_map(
            index, first_mask.label_map.copy(), self._ids, scores, is_reference=True, image=frame
        )

    def step(self, frame: np.ndarray, index: int) -> FrameResult:
        """Tracks every object onto ``frame`` (``uint8 [H, W, 3]``) from the memory of earlier frames."""
        if self._stream is None or self._session is None or self._frames is None:
            raise RuntimeError("call initialize(first_frame, first_mask) first")
        h, w = frame.shape[:2]
        if (h, w) != self._size:
            raise InputError(f"frame {index} is {w}x{h}, the first frame is {self._size[1]}x{self._size[0]}")
        self._frames.queue.append(frame)
        with torch.no_grad():
            local, obj_ids, logits = next(self._stream)
        objects = self._session.objects
        obj_scores = torch.stack(
            [objects[i].output_on(local).object_score_logits.reshape(()).float().cpu() for i in obj_ids]
        )
        tracked = TrackedFrame(local, obj_ids, logits, obj_scores)
        prob = torch.sigmoid(obj_scores).tolist()
        scores: dict[int, float | None] = {int(i): float(p) for i, p in zip(obj_ids, prob, strict=True)}
        return FrameResult.from_label_map(index, tracked.label_map(), self._ids, scores, image=frame)

    def state_size(self) -> dict[str, int]:
        """What the session holds, summed over objects (see
        :meth:`~persam.tracking.sam2.VideoSession.state_size`); empty before :meth:`initialize`."""
        return {} if self._session is None else self._session.state_size()

    def close(self) -> None:
        """Releases the session's state."""
        if self._session is not None:
            self._session.close()
        self._session = self._stream = self._frames = None
