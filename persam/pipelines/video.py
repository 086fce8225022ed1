"""Tracking objects through a video from a first-frame mask with PerSAM.

Every object of the first-frame annotation becomes a target feature (mean/max of the image
embedding under its mask, as in PerSAM-F). On each later frame, per object:

1. the cosine similarity between the target feature and the frame's embedding gives the ``topk``
   most similar pixels as positive points;
2. the object's box in the previous frame, expanded by ``box_margin`` pixels, is the box prompt,
   and its centre one more positive point;
3. decoder call 1 (points + box, 3 masks): the largest mask (PerSAM-F: the masks blended with the
   object's two learned weights) becomes the mask input of
4. decoder call 2 (points + mask input, 3 masks): the best-scoring mask gives a refined box for
5. decoder call 3 (points + refined box + mask input, 3 masks): the best-scoring mask's logits.

The objects are merged by a per-pixel argmax of their logits against a zero background, so a
pixel belongs to the object with the highest positive logit. An object whose mask comes out empty
is reported absent; on the next frame it is searched with its similarity points alone (no box)
until it is found again.

Cost per frame: one image-encoder pass, whatever the number of objects, one similarity product
and up-sampling for all objects, and one batched decoder call per step for all objects (``B`` =
number of objects).

``compat="official"`` reproduces the reference PerSAM video script number for number, including
two of its accidents: mask areas compared as ``uint8`` (modulo 256) when choosing the largest mask,
and box prompts assigned by position (the ``j``-th object takes the box of the ``j``-th label still
present in the previous prediction). ``compat="fixed"`` (default) compares true areas and gives
each object the box of its own label. Both write each object's own id into the label maps (the
reference writes positions ``1..K``, which are the ids of DAVIS annotations).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.io import InputError
from persam.methods import normalize_method
from persam.personalize.core import (
    MaskTooSmallError,
    decode_stage,
    location_prior,
    mask_areas,
    mask_box,
    reference_coverage_grid,
    reference_grid_mask,
    refine,
    similarity_maps,
    target_embedding,
    unit_embedding,
)
from persam.personalize.finetune import fit_mask_weights, reference_training_logits
from persam.video_io import FirstMask, FrameSource, Prefetcher, load_first_mask, open_video

__all__ = ["FrameResult", "VideoTracker", "track", "expand_box"]

COMPAT_MODES = ("fixed", "official")

# The reference script multiplies its 0/1 object masks by this value before the mask goes through
# the image normalisation; a grid location is part of the object where the resampled value
# exceeds the red-channel pixel mean (123.675), i.e. where the mask covers more than ~57.5 %.
VIDEO_MASK_VALUE = 215

Hook = Callable[[str, int, int, Any], Any]


@dataclass
class FrameResult:
    """The segmentation of one frame.

    Attributes:
        index: frame index in the source video (0-based, counting every frame of the source).
        label_map: ``uint8 [H, W]``, 0 = background, else the object id.
        object_ids: the tracked object ids, ascending.
        scores: per object id, the predicted IoU of its final mask, or None where the object was
            not segmented on this frame (1.0 on the reference frame).
        present: per object id, whether the object has any pixel in ``label_map``.
        boxes: per object id, the ``XYXY`` box (inclusive pixel indices) of its pixels in
            ``label_map``, or None when absent.
        is_reference: True for the frame whose mask was given.
        image: the ``uint8 [H, W, 3]`` RGB frame (for drawing overlays), or None.
    """

    index: int
    label_map: np.ndarray
    object_ids: list[int]
    scores: dict[int, float | None]
    present: dict[int, bool]
    boxes: dict[int, tuple[int, int, int, int] | None]
    is_reference: bool = False
    image: np.ndarray | None = field(default=None, repr=False)

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


@dataclass
class _Object:
    """Per-object tracking state."""

    object_id: int
    target_feat: torch.Tensor  # [1, C], L2-normalised
    weights: torch.Tensor | None = None  # [3] PerSAM-F mask weights, or None


@dataclass
class _Prompt:
    """Prompts of one object on one frame (original-image pixels)."""

    slot: int  # position in the merged logits / object list
    points: np.ndarray  # int64 [N, 2] (x, y)
    labels: np.ndarray  # int64 [N]
    box: np.ndarray | None  # int64 [4] XYXY, or None


# ------------------------------------------------------------------------------------ helpers
def expand_box(box: np.ndarray, margin: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The box prompt and its centre point from the previous frame's box.

    The box grows by ``margin`` pixels on each side; the low sides stop at 0 and the high sides at
    ``W`` / ``H`` (one past the last pixel, as the reference does). The centre is the integer
    centre of the grown box.

    Args:
        box: int64 [4] ``XYXY`` inclusive. size: ``(H, W)``.

    Returns:
        ``(box int64 [4], centre int64 [2] (x, y))``.
    """
    h, w = size
    x0, y0, x1, y1 = (int(v) for v in box)
    x0 = 0 if x0 - margin <= 0 else x0 - margin
    y0 = 0 if y0 - margin <= 0 else y0 - margin
    x1 = w if x1 + margin >= w else x1 + margin
    y1 = h if y1 + margin >= h else y1 + margin
    out = np.array([x0, y0, x1, y1], dtype=np.int64)
    return out, np.array([(x0 + x1) // 2, (y0 + y1) // 2], dtype=np.int64)


def _largest(areas: torch.Tensor, compat: str) -> int:
    """Index of the largest of 3 masks; ``official`` compares the areas modulo 256 (as uint8)."""
    a = areas.to(torch.int64)
    if compat == "official":
        a = torch.remainder(a, 256)
    return int(torch.argmax(a))


# ------------------------------------------------------------------------------------ tracker
class VideoTracker:
    """Frame-by-frame PerSAM tracking of the objects of a first-frame mask.

    Args:
        model: the backbone (one image at a time).
        method: ``"persam"`` (training-free) or ``"persam_f"`` (two mask weights per object, fitted
            on the first frame).
        compat: ``"fixed"`` or ``"official"`` (see the module docstring).
        topk: similarity points per object and frame.
        box_margin: pixels added on each side of the previous box.
        batch_objects: run all objects' prompts as one decoder batch per step (default); False
            runs every object separately, as the reference script does (same results, slower).
        hook: optional ``hook(event, frame_index, slot, value) -> value`` called at every step of
            every object with the value about to be used; its return value is used instead. Events:
            ``"points"`` ((xy int64 [N, 2], labels int64 [N]) similarity points), ``"box_prompt"``
            ((box, centre) or None), ``"call1"`` / ``"call2"`` / ``"call3"`` (dict of ``scores``
            [3], ``low_res`` [3, 256, 256], for call 1 ``areas`` [3], for call 3 the refined
            ``box`` [4]; return ignored), ``"choice1"`` / ``"choice2"`` / ``"choice3"`` (int),
            ``"logits"`` (float32 [H, W]; return ignored). For tests and diagnostics.
    """

    def __init__(
        self,
        model: Backbone,
        *,
        method: str = "persam",
        compat: str = "fixed",
        topk: int = 2,
        box_margin: int = 10,
        batch_objects: bool = True,
        finetune_kwargs: dict[str, Any] | None = None,
        hook: Hook | None = None,
    ) -> None:
        method = normalize_method(method)
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.model = model
        self.method = method
        self.compat = compat
        self.topk = int(topk)
        self.box_margin = int(box_margin)
        self.batch_objects = batch_objects
        self.finetune_kwargs = dict(finetune_kwargs or {})
        self.hook = hook
        self.objects: list[_Object] = []
        # Where each object's box prompt comes from on the next frame. fixed: one entry per object
        # (its box, or None when absent). official: the boxes of the labels present in the
        # previous prediction, in label order, assigned to objects by position.
        self._boxes: list[np.ndarray | None] = []
        self._size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ setup
    @property
    def object_ids(self) -> list[int]:
        return [o.object_id for o in self.objects]

    def _emit(self, event: str, frame: int, slot: int, value: Any) -> Any:
        if self.hook is None:
            return value
        out = self.hook(event, frame, slot, value)
        return value if out is None else out

    def initialize(self, frame: np.ndarray, first_mask: FirstMask, index: int = 0) -> FrameResult:
        """Encodes the reference frame once and computes every object's target feature.

        Returns the reference frame's result (its label map is the given annotation).
        """
        h, w = frame.shape[:2]
        if first_mask.size != (h, w):
            raise InputError(
                f"{first_mask.source}: mask is {first_mask.size[1]}x{first_mask.size[0]} but the video "
                f"frames are {w}x{h}"
            )
        self._size = (h, w)
        self.model.set_image(frame)
        features = self.model.features
        self.objects = []
        for oid, mask in zip(first_mask.object_ids, first_mask.masks, strict=True):
            try:
                grid = reference_grid_mask(self.model, mask, mask_value=VIDEO_MASK_VALUE)
            except MaskTooSmallError:
                grid = self._small_object_grid(mask)
            feat, _ = target_embedding(features, grid, reduce="mean_max")
            self.objects.append(_Object(oid, feat.reshape(1, -1)))
        if self.method == "persam_f":
            self._fit_weights(first_mask)
        self._boxes = [mask_box(m) for m in first_mask.masks]
        return self._result(
            index, first_mask.label_map.copy(), {o: 1.0 for o in self.object_ids}, True, frame
        )

    def _small_object_grid(self, mask: np.ndarray) -> torch.Tensor:
        """Grid locations of an object too small to cover any embedding cell by more than half:
        the cells it covers most (the reference would average an empty set)."""
        cover = reference_coverage_grid(self.model, mask, mask_value=255)
        return (cover >= cover.max()) & (cover > 0)

    def _fit_weights(self, first_mask: FirstMask) -> None:
        """PerSAM-F: each object's two mask weights, fitted on the reference frame (already set)."""
        for obj, mask in zip(self.objects, first_mask.masks, strict=True):
            prompt = reference_training_logits(self.model, obj.target_feat)
            fit = fit_mask_weights([prompt.high_res_logits], [torch.as_tensor(mask)], **self.finetune_kwargs)
            obj.weights = fit.weights.reshape(3)

    # ------------------------------------------------------------------- step
    def step(self, frame: np.ndarray, index: int) -> FrameResult:
        """Segments every object on ``frame`` (``uint8 [H, W, 3]``)."""
        if not self.objects:
            raise RuntimeError("call initialize(first_frame, first_mask) first")
        h, w = frame.shape[:2]
        if (h, w) != self._size:
            raise InputError(f"frame {index} is {w}x{h}, the first frame is {self._size[1]}x{self._size[0]}")
        self.model.set_image(frame)
        prompts = self._prompts(index)
        logits = self._segment(prompts, index)  # slot -> (score, logits [H, W])
        label_map = self._merge(logits)
        scores: dict[int, float | None] = {o.object_id: None for o in self.objects}
        for slot, (score, _) in logits.items():
            scores[self.objects[slot].object_id] = score
        result = self._result(index, label_map, scores, False, frame)
        self._update_boxes(result)
        return result

    def _prompts(self, index: int) -> list[_Prompt]:
        """Similarity points and box prompt of every object processed on this frame."""
        if self.compat == "official":
            # Only as many objects as there are box sources, each taking the box at its position.
            slots = range(min(len(self.objects), len(self._boxes)))
        else:
            slots = range(len(self.objects))
        out = []
        for slot, sim in zip(slots, self._similarity_maps(slots), strict=True):
            xy, labels = location_prior(sim, self.topk, negative=False)
            xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            xy, labels = self._emit("points", index, slot, (xy, labels))
            prev = self._boxes[slot]
            prompt_box = None if prev is None else expand_box(prev, self.box_margin, self._size)
            prompt_box = self._emit("box_prompt", index, slot, prompt_box)
            if prompt_box is not None:
                box, centre = prompt_box
                xy = np.concatenate([xy, np.asarray(centre, np.int64).reshape(1, 2)], axis=0)
                labels = np.concatenate([labels, np.ones(1, np.int64)])
                out.append(_Prompt(slot, xy, labels, np.asarray(box, np.int64)))
            else:
                out.append(_Prompt(slot, xy, labels, None))
        return out

    def _similarity_maps(self, slots: Sequence[int]) -> torch.Tensor:
        """``[K, H, W]`` similarity maps of the objects in ``slots`` on the current frame (one
        matrix product and one batched up-sampling for all)."""
        if not slots:
            h, w = self._size
            return torch.zeros(0, h, w)
        dev = self.model.device
        feats = torch.cat([self.objects[slot].target_feat.reshape(1, -1).to(dev) for slot in slots])
        return similarity_maps(self.model, feats, unit=unit_embedding(self.model.features))[1]

    def _groups(self, prompts: Sequence[_Prompt]) -> list[list[int]]:
        """Prompt sets that can share one decoder batch (same number of points, box or not)."""
        if not self.batch_objects:
            return [[i] for i in range(len(prompts))]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault((len(p.points), p.box is not None), []).append(i)
        return list(groups.values())

    def _segment(self, prompts: list[_Prompt], index: int) -> dict[int, tuple[float, torch.Tensor]]:
        """The three decoder calls for every prompted object; returns ``slot -> (score, logits
        [H, W])`` for the objects that reached call 3."""
        out: dict[int, tuple[float, torch.Tensor]] = {}
        for group in self._groups(prompts):
            out.update(self._segment_group([prompts[i] for i in group], index))
        return out

    def _choose(self, event: str, index: int, prompts: Sequence[_Prompt], auto: torch.Tensor) -> torch.Tensor:
        """The automatic choices ``[B]``, passed through the hook (which may impose others)."""
        picks = [
            int(self._emit(event, index, p.slot, int(c))) for p, c in zip(prompts, auto.tolist(), strict=True)
        ]
        return torch.tensor(picks, dtype=torch.int64)

    def _segment_group(self, prompts: Sequence[_Prompt], index: int) -> dict[int, tuple[float, torch.Tensor]]:
        """One batch of objects with prompts of the same structure through the three calls."""
        dev = self.model.device
        b = len(prompts)
        points = torch.as_tensor(np.stack([p.points for p in prompts]), dtype=torch.float32, device=dev)
        labels = torch.as_tensor(np.stack([p.labels for p in prompts]), dtype=torch.int64, device=dev)
        boxes = None
        if prompts[0].box is not None:
            boxes = torch.as_tensor(np.stack([p.box for p in prompts]), dtype=torch.float32, device=dev)

        # Call 1: points + box, 3 masks -> the mask input of call 2.
        out1 = self.model.decode(points, labels, boxes=boxes, multimask_output=True)
        low1 = out1.low_res_logits
        if self.method == "persam_f":
            weights = torch.stack([self.objects[p.slot].weights.reshape(3) for p in prompts]).to(low1)
            mask_in = (weights[:, :, None, None] * low1).sum(dim=1, keepdim=True)
            for k, p in enumerate(prompts):
                self._emit("call1", index, p.slot, {"scores": out1.iou_predictions[k], "low_res": low1[k]})
        else:
            areas = mask_areas(self.model, low1)  # [B, 3]
            for k, p in enumerate(prompts):
                info = {"scores": out1.iou_predictions[k], "low_res": low1[k], "areas": areas[k]}
                self._emit("call1", index, p.slot, info)
            auto = torch.tensor([_largest(a, self.compat) for a in areas], dtype=torch.int64)
            choice1 = self._choose("choice1", index, prompts, auto)
            mask_in = low1[torch.arange(b, device=dev), choice1.to(dev)][:, None]

        # Call 2: points + mask input, 3 masks -> the best one's box.
        s2 = decode_stage(self.model, "call2", points, labels, mask_input=mask_in)
        choice2 = self._choose("choice2", index, prompts, s2.best_idx)
        if not torch.equal(choice2, s2.best_idx):
            s2 = decode_stage(self.model, "call2", points, labels, mask_input=mask_in, best_idx=choice2)
        for k, p in enumerate(prompts):
            self._emit("call2", index, p.slot, {"scores": s2.scores[k], "low_res": s2.low_res_logits[k]})

        # Call 3: points + that box + its low-res logits -> the final logits (skipped where empty).
        s3 = refine(self.model, "call3", points, labels, s2, with_box=True)
        choice3 = self._choose("choice3", index, prompts, s3.best_idx)
        if not torch.equal(choice3[s3.active], s3.best_idx[s3.active]):
            s3 = refine(self.model, "call3", points, labels, s2, with_box=True, best_idx=choice3)
        out: dict[int, tuple[float, torch.Tensor]] = {}
        for k, p in enumerate(prompts):
            if not bool(s3.active[k]):  # call 2 gave an empty mask: the object is not on this frame
                continue
            info = {"scores": s3.scores[k], "low_res": s3.low_res_logits[k], "box": s3.box_prompt[k].cpu()}
            self._emit("call3", index, p.slot, info)
            self._emit("logits", index, p.slot, s3.logits[k])
            out[p.slot] = (float(s3.best_score[k]), s3.logits[k])
        return out

    def _merge(self, logits: dict[int, tuple[float, torch.Tensor]]) -> np.ndarray:
        """Label map ``uint8 [H, W]``: per-pixel argmax over a zero background and the objects'
        logits (ties go to the lower object)."""
        h, w = self._size
        if not logits:
            return np.zeros((h, w), np.uint8)
        slots = sorted(logits)
        # A running maximum equals argmax over [zeros, logits...] with ties to the lower index
        # (only a strictly larger logit takes a pixel over) and is much cheaper than an argmax
        # across a stacked [K + 1, H, W] tensor.
        first = logits[slots[0]][1].float()
        label = torch.zeros(first.shape, dtype=torch.uint8, device=first.device)
        label.masked_fill_(first > 0, self.objects[slots[0]].object_id)
        best = first.clamp_min(0)
        for s in slots[1:]:
            x = logits[s][1].float()
            label.masked_fill_(x > best, self.objects[s].object_id)
            torch.maximum(best, x, out=best)
        return label.cpu().numpy()

    def _update_boxes(self, result: FrameResult) -> None:
        """Box sources for the next frame from this frame's label map."""
        boxes = [
            None if result.boxes[i] is None else np.asarray(result.boxes[i], np.int64)
            for i in self.object_ids
        ]
        if self.compat == "official":
            # The boxes of the labels present, in label order; object j takes the j-th (by position).
            self._boxes = [b for b in boxes if b is not None]
        else:
            self._boxes = boxes

    def _result(
        self,
        index: int,
        label_map: np.ndarray,
        scores: dict[int, float | None],
        is_reference: bool,
        frame: np.ndarray,
    ) -> FrameResult:
        present, boxes = {}, {}
        for oid in self.object_ids:
            b = mask_box(label_map == oid)
            present[oid] = b is not None
            boxes[oid] = None if b is None else tuple(int(v) for v in b)
        return FrameResult(index, label_map, self.object_ids, scores, present, boxes, is_reference, frame)


# ------------------------------------------------------------------------------------- driver
def track(
    model: Backbone,
    frames: Iterable[np.ndarray] | np.ndarray | str | os.PathLike | FrameSource,
    first_mask: np.ndarray | str | os.PathLike | Sequence[np.ndarray | str | os.PathLike] | FirstMask,
    *,
    method: str = "persam",
    compat: str = "fixed",
    start: int = 0,
    stride: int = 1,
    topk: int = 2,
    box_margin: int = 10,
    batch_objects: bool = True,
    prefetch: int = 4,
    keep_images: bool = False,
    finetune_kwargs: dict[str, Any] | None = None,
    hook: Hook | None = None,
) -> Iterator[FrameResult]:
    """Tracks the objects of ``first_mask`` through a video, yielding each frame as it is done.

    Args:
        model: the backbone.
        frames: a video file, a folder of frames, an array ``[T, H, W, 3]``, an iterable of
            ``uint8 [H, W, 3]`` frames or an open :class:`~persam.video_io.FrameSource`.
        first_mask: the annotation of frame ``start``: a label map ``uint8 [H, W]`` (0 =
            background, else object ids), a mask PNG (palette PNG with ids, or binary), or a list
            of per-object masks (ids 1, 2, ...).
        method: ``"persam"`` or ``"persam_f"``. compat: ``"fixed"`` or ``"official"``.
        start: index of the annotated frame; earlier frames are skipped.
        stride: track every ``stride``-th frame after ``start``.
        topk: similarity points per object. box_margin: growth of the previous box in pixels.
        batch_objects: one decoder batch for all objects per step (False: one call per object).
        prefetch: frames decoded ahead by a background thread (0: decode in this thread).
        keep_images: attach each RGB frame to its result (``FrameResult.image``).
        finetune_kwargs: options for fitting the PerSAM-F weights.
        hook: see :class:`VideoTracker`.

    Yields:
        :class:`FrameResult` for frame ``start`` (the given mask) and every tracked frame.

    Raises:
        InputError: unreadable video or mask, no object in the mask, a mask of another size than
            the frames, ``start`` beyond the end.
    """
    source = frames if isinstance(frames, FrameSource) else open_video(frames)
    first = first_mask if isinstance(first_mask, FirstMask) else load_first_mask(first_mask)
    tracker = VideoTracker(
        model,
        method=method,
        compat=compat,
        topk=topk,
        box_margin=box_margin,
        batch_objects=batch_objects,
        finetune_kwargs=finetune_kwargs,
        hook=hook,
    )
    it: Iterator[tuple[int, np.ndarray]] = source.frames(start, stride)
    reader = Prefetcher(it, prefetch) if prefetch > 0 else None
    stream = iter(reader) if reader is not None else it
    try:
        first_item = next(stream, None)
        if first_item is None:
            raise InputError(f"{source.info.source}: start frame {start} is beyond the end")
        index, frame = first_item
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
        if not isinstance(frames, FrameSource):
            source.close()
