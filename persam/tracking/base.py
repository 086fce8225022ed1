"""The shape every video tracker has: initialised from the first frame's masks, then stepped
frame by frame, each step giving a :class:`~persam.tracking.result.FrameResult`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from persam.readers.first_mask import FirstMask
from persam.tracking.result import FrameResult


@runtime_checkable
class Tracker(Protocol):
    """A video object tracker (one image at a time on its backbone)."""

    @property
    def object_ids(self) -> list[int]:
        """The tracked object ids, ascending."""
        ...

    def initialize(self, frame: np.ndarray, first_mask: FirstMask, index: int = 0) -> FrameResult:
        """Learns the objects of ``first_mask`` on ``frame`` (``uint8 [H, W, 3]``, frame ``index``);
        returns the reference frame's result (its label map is the given annotation)."""
        ...

    def step(self, frame: np.ndarray, index: int) -> FrameResult:
        """Segments every tracked object on the next ``frame`` (``uint8 [H, W, 3]``)."""
        ...
