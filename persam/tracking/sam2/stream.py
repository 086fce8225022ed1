"""Whole-video SAM 2 tracking from first-frame masks, streaming with a bounded state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from persam.io import InputError
from persam.readers import FirstMask, load_first_mask
from persam.tracking.sam2.frames import FrameReader, VideoInput
from persam.tracking.sam2.session import VideoSession


@dataclass
class TrackedFrame:
    """The objects on one frame.

    Attributes:
        index: frame index.
        obj_ids: object ids (order of ``logits``).
        logits: ``[N, 1, H, W]`` float32 mask logits at video resolution (``NO_OBJ_SCORE`` = -1024
            everywhere for an object judged absent).
        object_score_logits: ``[N]`` float32; > 0 means the model sees the object (±10 on frames
            whose mask was given).
    """

    index: int
    obj_ids: list[int]
    logits: torch.Tensor
    object_score_logits: torch.Tensor

    @property
    def masks(self) -> np.ndarray:
        """``bool [N, H, W]`` (``logits > 0``)."""
        return (self.logits[:, 0] > 0).cpu().numpy()

    @property
    def present(self) -> dict[int, bool]:
        """Per object id: the object was found on this frame (positive score and some pixel)."""
        masks = self.masks
        return {
            i: bool(self.object_score_logits[k] > 0 and masks[k].any()) for k, i in enumerate(self.obj_ids)
        }

    def label_map(self) -> np.ndarray:
        """``uint8 [H, W]``: 0 = background, else the id of the object with the highest logit."""
        logits = self.logits[:, 0]
        best = torch.argmax(logits, dim=0)
        fg = (logits > 0).any(dim=0)
        ids = torch.tensor(self.obj_ids, dtype=torch.int64, device=logits.device)
        return torch.where(fg, ids[best], 0).to(torch.uint8).cpu().numpy()


def _first_masks(first: Any, size: tuple[int, int]) -> dict[int, np.ndarray]:
    if isinstance(first, Mapping):
        out = {int(k): np.asarray(v) != 0 for k, v in first.items()}
    else:
        fm = first if isinstance(first, FirstMask) else load_first_mask(first, size=size)
        out = {int(i): np.asarray(m, dtype=bool) for i, m in zip(fm.object_ids, fm.masks, strict=True)}
    if not out:
        raise InputError("first-frame annotation holds no object")
    for obj_id, m in out.items():
        if m.shape != size:
            raise InputError(
                f"mask of object {obj_id} is {m.shape[1]}×{m.shape[0]} (W×H), frames are {size[1]}×{size[0]}"
            )
    return out


def track(
    backbone_or_model: Any,
    video: VideoInput,
    first_masks: Any,
    *,
    frame_idx: int = 0,
    num_frames: int | None = None,
    keep_history: bool = False,
    fill_hole_area: int = 0,
    non_overlap_masks: bool = False,
) -> Iterator[TrackedFrame]:
    """Tracks the objects of ``first_masks`` (given on ``frame_idx``) to the end of ``video``.

    Frames are decoded as tracking reaches them and each object keeps only the memories and
    pointers that later frames can read, so memory use does not grow with the video length.

    Args:
        backbone_or_model: a SAM 2 model or backbone.
        video: a video file, a folder of frames, an array, or any iterable of ``uint8 [H, W, 3]``.
        first_masks: ``{obj_id: mask [H, W]}``, a label map / mask PNG / list of masks (see
            :func:`persam.readers.load_first_mask`) or a :class:`~persam.readers.FirstMask`.
        num_frames: the video length when ``video`` is a stream that does not tell it. The official
            model normalises the temporal encoding of object pointers by ``min(num_frames, 16) - 1``;
            an unknown length is taken as at least 16 frames, which gives the official numbers
            for every video of 16 frames or more.
        keep_history: keep every frame's output (official predictor) instead of a bounded state.
        fill_hole_area, non_overlap_masks: see :class:`VideoSession`.

    Yields:
        :class:`TrackedFrame` for ``frame_idx`` and every later frame.
    """
    reader = video if isinstance(video, FrameReader) else FrameReader(video, num_frames=num_frames)
    session = VideoSession(backbone_or_model, reader, keep_history=keep_history)
    session.fill_hole_area = fill_hole_area
    session.non_overlap_masks = non_overlap_masks
    try:
        masks = _first_masks(first_masks, _size_at(reader, frame_idx))
        for obj_id, mask in masks.items():
            session.add_mask(frame_idx, obj_id, mask)
        for idx, obj_ids, logits in session.propagate(start_frame_idx=frame_idx):
            scores = torch.stack(
                [session.objects[i].output_on(idx).object_score_logits.reshape(()) for i in obj_ids]
            )
            yield TrackedFrame(idx, obj_ids, logits, scores.float())
    finally:
        session.close()


def _size_at(reader: FrameReader, frame_idx: int) -> tuple[int, int]:
    frame = reader.get(frame_idx)
    return int(frame.shape[0]), int(frame.shape[1])
