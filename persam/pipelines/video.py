"""Tracking objects through a video: the frame loop (:func:`track`) and the one track-and-write
path (:func:`track_to_folder`) used by ``persam track``, the DAVIS evaluation and the demo.

The trackers themselves live in :mod:`persam.tracking` (``tracker="persam"``:
:class:`~persam.tracking.PerSAMTracker`; ``"sam2"``: :class:`~persam.tracking.Sam2Tracker`;
``"auto"``: the SAM 2 one for SAM 2 models). Tracking from a photo (``concepts=``) finds the
objects first (:mod:`persam.pipelines.find`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.personalize import Concept
from persam.personalize.boxes import expand_box
from persam.pipelines.find import FIND_THRESHOLD, check_concepts, empty_result, find_objects
from persam.readers import (
    FirstMask,
    FrameSource,
    Prefetcher,
    load_first_mask,
    open_video,
)
from persam.tracking import FrameResult, PerSAMTracker, Redetector, Tracker, make_tracker, resolve_tracker

__all__ = [
    "FrameResult",
    "VideoTracker",
    "expand_box",
    "track",
]

#: The PerSAM tracker under the name it had before trackers were pluggable.
VideoTracker = PerSAMTracker

FramesLike = Iterable[np.ndarray] | np.ndarray | str | os.PathLike | FrameSource
FirstMaskLike = np.ndarray | str | os.PathLike | Sequence[np.ndarray | str | os.PathLike] | FirstMask


def track(
    model: Backbone,
    frames: FramesLike,
    first_mask: FirstMaskLike | None = None,
    *,
    concepts: Sequence[Concept] | None = None,
    find_threshold: float = FIND_THRESHOLD,
    tracker: str | Tracker = "auto",
    method: str = "persam",
    compat: str = "fixed",
    start: int = 0,
    stride: int = 1,
    topk: int = 2,
    box_margin: int = 10,
    batch_objects: bool = True,
    redetect: bool | Redetector | None = False,
    prefetch: int = 4,
    keep_images: bool = False,
    finetune_kwargs: dict[str, Any] | None = None,
    diagnostics: bool = False,
) -> Iterator[FrameResult]:
    """Tracks objects through a video, yielding each frame as it is done.

    The objects come from ``first_mask`` (the annotation of frame ``start``) or, to track from a
    photo, from ``concepts`` (:func:`persam.learn` on the photo): PerSAM searches the frames from
    ``start`` on until every concept is found on one frame, whose masks become the first mask
    (object ``k`` of ``concepts`` has id ``k + 1``); the frames before it are yielded with no object
    (see :mod:`persam.pipelines.find`).

    Args:
        model: the backbone.
        frames: a video file, a folder of frames, an array ``[T, H, W, 3]``, an iterable of
            ``uint8 [H, W, 3]`` frames or an open :class:`~persam.readers.FrameSource`.
        first_mask: the annotation of frame ``start``: a label map ``uint8 [H, W]`` (0 =
            background, else object ids), a mask PNG (palette PNG with ids, or binary), or a list
            of per-object masks (ids 1, 2, ...). Not with ``concepts``.
        concepts: :class:`~persam.personalize.Concept` s to find and track instead of a first mask.
        find_threshold: minimum PerSAM predicted IoU for a concept to count as found.
        tracker: ``"auto"`` (``"sam2"`` for a SAM 2 model, else ``"persam"``), ``"persam"``
            (:class:`~persam.tracking.PerSAMTracker`), ``"sam2"`` (the SAM 2 memory tracker,
            :class:`~persam.tracking.Sam2Tracker`), or a tracker object (then the tracker options
            below are not used).
        method: ``"persam"`` or ``"persam_f"``. compat: ``"fixed"`` or ``"official"`` (persam).
        start: index of the annotated frame (of the first searched frame with ``concepts``);
            earlier frames are skipped.
        stride: track every ``stride``-th frame after ``start``.
        topk: similarity points per object. box_margin: growth of the previous box in pixels.
        batch_objects: one decoder batch for all objects per step (False: one call per object).
        redetect: sam2: search objects lost for a while with their PerSAM feature (True, or a
            :class:`~persam.tracking.Redetector` with its settings); off by default.
        prefetch: frames decoded ahead by a background thread (0: decode in this thread).
        keep_images: attach each RGB frame to its result (``FrameResult.image``).
        finetune_kwargs: options for fitting the PerSAM-F weights.
        diagnostics: attach per-object, per-call diagnostics (``FrameResult.diagnostics``; persam).

    Yields:
        :class:`~persam.tracking.FrameResult` for frame ``start`` and every tracked frame.

    Raises:
        InputError: an unknown tracker, ``"sam2"`` with a model that is not SAM 2, neither or both
            of ``first_mask`` and ``concepts``, unreadable video or mask, no object in the mask, a
            mask of another size than the frames, ``start`` beyond the end.
    """
    if (first_mask is None) == (concepts is None):
        raise InputError("give either first_mask or concepts (the objects to track)")
    if concepts is not None:
        concepts = check_concepts(model, concepts, find_threshold)
    source = frames if isinstance(frames, FrameSource) else open_video(frames)
    try:
        first = None
        if first_mask is not None:
            first = first_mask if isinstance(first_mask, FirstMask) else load_first_mask(first_mask)
        if isinstance(tracker, str):
            n = source.info.num_frames
            tracker = _make_tracker(
                tracker,
                model,
                method=method,
                compat=compat,
                topk=topk,
                box_margin=box_margin,
                batch_objects=batch_objects,
                finetune_kwargs=finetune_kwargs,
                diagnostics=diagnostics,
                redetect=redetect,
                num_frames=len(range(start, n, stride)) if n is not None and first is not None else None,
            )
    except BaseException:
        if not isinstance(frames, FrameSource):
            source.close()
        raise
    find = None if concepts is None else (model, concepts, find_threshold)
    return _frames(
        tracker, source, first, find, start, stride, prefetch, keep_images, own=source is not frames
    )


def _make_tracker(
    name: str, model: Backbone, *, redetect: Any, num_frames: int | None, **persam: Any
) -> Tracker:
    """The tracker ``name`` with the options it takes (the others belong to the other trackers)."""
    name = resolve_tracker(name, model)
    if name == "sam2":
        return make_tracker(name, model, redetect=redetect, num_frames=num_frames)
    return make_tracker(name, model, **persam)


def _frames(
    tracker: Tracker,
    source: FrameSource,
    first: FirstMask | None,
    find: tuple[Backbone, list[Concept], float] | None,
    start: int,
    stride: int,
    prefetch: int,
    keep_images: bool,
    own: bool,
) -> Iterator[FrameResult]:
    """The frame loop of :func:`track` (closes ``source`` at the end when it ``own``s it)."""
    it: Iterator[tuple[int, np.ndarray]] = source.frames(start, stride)
    reader = Prefetcher(it, prefetch) if prefetch > 0 else None
    stream = iter(reader) if reader is not None else it
    try:
        first_item = next(stream, None)
        if first_item is None:
            raise InputError(f"{source.info.source}: start frame {start} is beyond the end")
        index, frame = first_item
        if find is not None:
            # Frames without every object yet are background; the first frame with all of them
            # starts the tracker.
            model, concepts, threshold = find
            ids = list(range(1, len(concepts) + 1))
            while (first := find_objects(model, frame, concepts, threshold)) is None:
                empty = empty_result(index, frame, ids)
                if not keep_images:
                    empty.image = None
                yield empty
                item = next(stream, None)
                if item is None:
                    return
                index, frame = item
        result = tracker.initialize(frame, first, index)
        if not keep_images:
            result.image = None
        yield result
        for index, frame in stream:
            with torch.no_grad():
                result = tracker.step(frame, index)
            if not keep_images:
                result.image = None
            yield result
    finally:
        if reader is not None:
            reader.close()
        if stream is not it:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if own:
            source.close()
