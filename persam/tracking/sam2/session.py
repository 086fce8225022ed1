"""Interactive SAM 2 video session: prompts on any frame, then propagation (official predictor API).

Objects are tracked one by one with their own memory (the December 2024 per-object predictor);
the backbone features of a frame are computed once and shared by all objects (only the most
recent frame's features are cached). Prompts (:meth:`VideoSession.add_points`,
:meth:`VideoSession.add_mask`) are decoded at once but their memory is encoded when
:meth:`VideoSession.propagate` starts, as in the official predictor.

Memory: with ``keep_history=False`` each object keeps only what tracking onwards can read (its
conditioning frames, the last ``num_maskmem - 1`` memories and the last
``max_obj_ptrs_in_encoder - 1`` pointers in tracking direction), so the state does not grow with
the video length. ``keep_history=True`` keeps every frame's output like the official predictor,
which is what re-prompting an arbitrary earlier frame (or tracking back over it) needs to give the
official numbers. The default keeps history for seekable videos of known length and not for
streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from persam.io import InputError
from persam.tracking.sam2.engine import NO_OBJ_SCORE, FrameFeatures, MemoryEngine
from persam.tracking.sam2.frames import FrameReader, VideoInput, preprocess_frame
from persam.tracking.sam2.postprocess import fill_holes, non_overlapping
from persam.tracking.sam2.redetect import Redetector, concept_of
from persam.tracking.sam2.state import FrameOutput, ObjectState, PointPrompt

#: ``(frame_idx, obj_ids, mask logits [N, 1, H, W] at video resolution)``.
FrameMasks = tuple[int, list[int], torch.Tensor]


def _as_model(backbone_or_model: Any) -> torch.nn.Module:
    """The SAM 2 module of a backbone wrapper, or the module itself."""
    model = getattr(backbone_or_model, "model", backbone_or_model)
    if not hasattr(model, "memory_attention") or not hasattr(model, "forward_image"):
        raise TypeError(f"{type(backbone_or_model).__name__} is not a SAM 2 model or backbone")
    return model


class VideoSession:
    """Prompts and propagation over one video for a SAM 2 model.

    Args:
        model: a :class:`persam.models.sam2.Sam2` or a backbone wrapping one (``.model``; its
            ``dtype`` is the image encoder's compute dtype).
        video: see :class:`~persam.tracking.sam2.frames.FrameReader`.
        num_frames: length of a stream that does not tell it (normalises the object-pointer
            temporal encoding, see :mod:`persam.tracking.sam2.memory_bank`).
        keep_history: see the module docstring (None: True for seekable videos of known length).

    Attributes (options, official names and defaults of the fixtures):
        fill_hole_area: fill background holes up to this area in the 256×256 logits (0 = off;
            the official builder sets 8).
        non_overlap_masks: keep only the best object per pixel in the returned masks.
        add_all_frames_to_correct_as_cond: prompts on already tracked frames become
            conditioning frames (otherwise they are overwritten by the next propagation).
        binarize_mask_from_pts_for_mem_enc: encode prompted frames' masks binarised.
        decoder_trace: a list to record every mask-decoder call in, or None.
        redetect: a :class:`~persam.tracking.sam2.redetect.Redetector` to search for objects lost
            for a while with their PerSAM concept, or None (official behaviour).
    """

    def __init__(
        self,
        model: Any,
        video: VideoInput,
        *,
        num_frames: int | None = None,
        keep_history: bool | None = None,
    ) -> None:
        self.model = _as_model(model).eval()
        self.reader = video if isinstance(video, FrameReader) else FrameReader(video, num_frames=num_frames)
        self.keep_history = (
            self.reader.seekable and self.reader.num_frames is not None
            if keep_history is None
            else keep_history
        )
        self.fill_hole_area = 0
        self.non_overlap_masks = False
        self.add_all_frames_to_correct_as_cond = False
        self.decoder_trace: list[dict[str, Any]] | None = None
        self.redetect: Redetector | None = None
        self.engine = MemoryEngine(self.model, encoder_dtype=getattr(model, "dtype", torch.float32))
        self.objects: dict[int, ObjectState] = {}
        self._features: tuple[int, FrameFeatures] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def binarize_mask_from_pts_for_mem_enc(self) -> bool:
        return self.engine.binarize_mask_from_pts_for_mem_enc

    @binarize_mask_from_pts_for_mem_enc.setter
    def binarize_mask_from_pts_for_mem_enc(self, value: bool) -> None:
        self.engine.binarize_mask_from_pts_for_mem_enc = bool(value)

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the order they were first prompted."""
        return list(self.objects)

    @property
    def num_frames(self) -> int | None:
        return self.reader.num_frames

    @property
    def video_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames (reads frame 0 if no frame was read yet)."""
        if self.reader.size is None:
            self.reader.get(0)
        assert self.reader.size is not None
        return self.reader.size

    def state_size(self) -> dict[str, int]:
        """Stored items summed over objects (see :meth:`ObjectState.counts`)."""
        total: dict[str, int] = {}
        for state in self.objects.values():
            for k, v in state.counts().items():
                total[k] = total.get(k, 0) + v
        return total

    # ------------------------------------------------------------------ internals
    def _frame_features(self, frame_idx: int) -> FrameFeatures:
        if self._features is not None and self._features[0] == frame_idx:
            return self._features[1]
        image = preprocess_frame(self.reader.get(frame_idx), self.engine.image_size)
        features = self.engine.encode_frame(image)
        self._features = (frame_idx, features)
        return features

    def _object(self, obj_id: int) -> ObjectState:
        obj_id = int(obj_id)
        if obj_id not in self.objects:
            self.objects[obj_id] = ObjectState(obj_id)
        return self.objects[obj_id]

    def _store(self, out: FrameOutput) -> FrameOutput:
        if self.fill_hole_area > 0 and out.pred_masks is not None:
            out.pred_masks = fill_holes(out.pred_masks, self.fill_hole_area)
        return out

    def _video_res(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = self.video_size
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return non_overlapping(logits) if self.non_overlap_masks else logits

    def _check_frame(self, frame_idx: int) -> None:
        if not self.reader.has(frame_idx):
            raise InputError(f"frame {frame_idx} is outside the video ({self.num_frames} frames)")

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence[Sequence[float]] | np.ndarray | torch.Tensor | None = None,
        labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        clear_old_points: bool = True,
        box: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        normalize_coords: bool = True,
    ) -> FrameMasks:
        """Clicks (``points`` (x, y) pixels, ``labels`` 1 / 0) and / or a ``box`` (XYXY) for one object.

        With ``clear_old_points=False`` the clicks are added to those already on this frame; the
        object's previous logits on the frame are fed back as a mask prompt. Returns the masks of
        all objects on the frame (``NO_OBJ_SCORE`` for objects without an output there).
        """
        if (points is None) != (labels is None):
            raise InputError("points and labels must be given together")
        if points is None and box is None:
            raise InputError("give points (with labels) or a box")
        if box is not None and not clear_old_points:
            raise InputError("a box must come first: use clear_old_points=True with a box")
        self._check_frame(frame_idx)
        coords = (
            torch.zeros(1, 0, 2)
            if points is None
            else torch.as_tensor(np.asarray(points), dtype=torch.float32)
        )
        labs = torch.zeros(1, 0, dtype=torch.int32) if labels is None else torch.as_tensor(np.asarray(labels))
        coords = coords.reshape(1, -1, 2).float()
        labs = labs.reshape(1, -1).to(torch.int32)
        if coords.shape[1] != labs.shape[1]:
            raise InputError(f"{coords.shape[1]} points but {labs.shape[1]} labels")
        if box is not None:
            corners = torch.as_tensor(np.asarray(box), dtype=torch.float32).reshape(1, 2, 2)
            coords = torch.cat([corners, coords], dim=1)
            labs = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labs], dim=1)
        if normalize_coords:
            h, w = self.video_size
            coords = coords / torch.tensor([w, h], dtype=torch.float32)
        coords = coords * self.engine.image_size

        state = self._object(obj_id)
        prompt = PointPrompt(coords, labs)
        if not clear_old_points and frame_idx in state.points:
            prompt = state.points[frame_idx].extended(coords, labs)
        state.points[frame_idx] = prompt
        state.masks.pop(frame_idx, None)
        return self._decode_prompt(frame_idx, state, points=prompt)

    @torch.no_grad()
    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameMasks:
        """A binary ``[H, W]`` mask of one object on one frame (any non-zero pixel is the object).

        The mask is resized to the model's input frame (antialiased bilinear, ``>= 0.5``) and used
        as the output itself. Returns the masks of all objects on the frame.
        """
        self._check_frame(frame_idx)
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2:
            raise InputError(f"mask must be [H, W], got shape {tuple(m.shape)}")
        x = (m != 0).float()[None, None].to(self.engine.device)
        size = self.engine.image_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = (x >= 0.5).float()
        state = self._object(obj_id)
        state.masks[frame_idx] = x
        state.points.pop(frame_idx, None)
        return self._decode_prompt(frame_idx, state, mask_inputs=x)

    def _decode_prompt(
        self,
        frame_idx: int,
        state: ObjectState,
        *,
        points: PointPrompt | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> FrameMasks:
        is_init = frame_idx not in state.tracked
        reverse = False if is_init else state.tracked[frame_idx]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if points is not None:
            prev = state.temp(is_cond).get(frame_idx) or state.output_on(frame_idx)
            if prev is not None and prev.pred_masks is not None:
                prev_logits = torch.clamp(prev.pred_masks.to(self.engine.device), -32.0, 32.0)
        self.engine.decoder_trace = self.decoder_trace
        result = self.engine.step(
            frame_idx,
            self._frame_features(frame_idx),
            state,
            is_init_cond_frame=is_init,
            points=points,
            mask_inputs=mask_inputs,
            num_frames=self.num_frames,
            reverse=reverse,
            # The memory is encoded when propagation starts, after all prompts of the frame.
            run_mem_encoder=False,
            prev_mask_logits=prev_logits,
        )
        state.temp(is_cond)[frame_idx] = self._store(result.output)
        return frame_idx, self.obj_ids, self._consolidated(frame_idx, is_cond)

    def _consolidated(self, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """Every object's current logits on ``frame_idx`` at video resolution ``[N, 1, H, W]``."""
        h, w = self.video_size
        out = torch.full((len(self.objects), 1, h, w), NO_OBJ_SCORE, device=self.engine.device)
        for i, state in enumerate(self.objects.values()):
            entry = state.temp(is_cond).get(frame_idx) or state.output_on(frame_idx)
            if entry is None or entry.pred_masks is None:
                continue
            out[i : i + 1] = F.interpolate(
                entry.pred_masks, size=(h, w), mode="bilinear", align_corners=False
            )
        return non_overlapping(out) if self.non_overlap_masks else out

    # ------------------------------------------------------------------ propagation
    def _preflight(self) -> None:
        """Encodes the memory of the new prompted outputs and makes them part of the memory bank."""
        if not self.objects:
            raise RuntimeError("no prompt yet: call add_points or add_mask first")
        size = self.engine.image_size
        for state in self.objects.values():
            for is_cond in (False, True):
                temp = state.temp(is_cond)
                for frame_idx, out in temp.items():
                    if is_cond and self.redetect is not None and state.concept is None:
                        state.concept = concept_of(self._frame_features(frame_idx), out.pred_masks)
                    if out.maskmem_features is None:
                        high = F.interpolate(
                            out.pred_masks.to(self.engine.device),
                            size=(size, size),
                            mode="bilinear",
                            align_corners=False,
                        )
                        out.maskmem_features = self.engine.encode_memory(
                            self._frame_features(frame_idx),
                            high,
                            out.object_score_logits,
                            is_mask_from_pts=True,  # outputs the user prompted (clicks or masks)
                        )
                    (state.cond if is_cond else state.non_cond)[frame_idx] = out
                temp.clear()
            if not state.cond:
                raise RuntimeError(f"object {state.obj_id} has no prompt on any frame")
            for frame_idx in state.cond:
                state.non_cond.pop(frame_idx, None)

    def _order(self, reverse: bool, start: int | None, max_frames: int | None) -> Iterator[int]:
        if start is None:
            start = min(t for s in self.objects.values() for t in s.cond)
        n = self.num_frames
        limit = n if max_frames is None else max_frames
        if reverse:
            if start == 0:
                return iter(())
            end = max(start - limit, 0) if limit is not None else 0
            return iter(range(start, end - 1, -1))
        if n is not None:
            return iter(range(start, min(start + limit, n - 1) + 1))

        def stream() -> Iterator[int]:
            t = start
            while (limit is None or t <= start + limit) and self.reader.has(t):
                yield t
                t += 1

        return stream()

    @torch.no_grad()
    def propagate(
        self, reverse: bool = False, start_frame_idx: int | None = None, max_frames: int | None = None
    ) -> Iterator[FrameMasks]:
        """Tracks every object from ``start_frame_idx`` (default: the earliest prompted frame),
        forward or in reverse, over ``max_frames`` more frames (default: to the end / start).

        Yields ``(frame_idx, obj_ids, logits [N, 1, H, W])`` per frame as it is done; prompted
        (conditioning) frames return their stored output.
        """
        self._preflight()
        self.engine.decoder_trace = self.decoder_trace
        # How far back (in tracking direction) the next frame reads memories / pointers.
        mem_span = max(self.model.num_maskmem - 2, 1) * max(1, self.model.memory_temporal_stride_for_eval)
        ptr_span = max(self.model.max_obj_ptrs_in_encoder - 2, 1)
        for frame_idx in self._order(reverse, start_frame_idx, max_frames):
            logits = []
            for state in self.objects.values():
                out = state.cond.get(frame_idx)
                if out is None:
                    result = self.engine.step(
                        frame_idx,
                        self._frame_features(frame_idx),
                        state,
                        is_init_cond_frame=False,
                        num_frames=self.num_frames,
                        reverse=reverse,
                    )
                    out = self._store(result.output)
                    state.non_cond[frame_idx] = out
                    if self.redetect is not None:
                        out = self._maybe_redetect(frame_idx, state, out)
                state.tracked[frame_idx] = reverse
                logits.append(out.pred_masks.to(self.engine.device))
                if not self.keep_history:
                    state.prune(frame_idx, reverse, memory_span=mem_span, pointer_span=ptr_span)
            yield frame_idx, self.obj_ids, self._video_res(torch.cat(logits, dim=0))

    def _maybe_redetect(self, frame_idx: int, state: ObjectState, out: FrameOutput) -> FrameOutput:
        assert self.redetect is not None
        state.absent_run = state.absent_run + 1 if float(out.object_score_logits) <= 0 else 0
        if state.absent_run < self.redetect.after:
            return out
        found = self.redetect.search(self.engine, frame_idx, self._frame_features(frame_idx), state)
        if found is None:
            return out
        found = self._store(found)
        self.redetect.adopt(state, frame_idx, found)
        return found

    def reset(self) -> None:
        """Forgets every object, prompt and output (the frames stay open)."""
        self.objects.clear()

    def close(self) -> None:
        self.reader.close()
        self._features = None


def open_session(backbone_or_model: Any, video: VideoInput, **kwargs: Any) -> VideoSession:
    """A :class:`VideoSession` over ``video`` (keyword arguments as :class:`VideoSession`)."""
    return VideoSession(backbone_or_model, video, **kwargs)
