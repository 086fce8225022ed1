"""Tracking objects through a video from a first-frame mask with PerSAM.

Every object of the first-frame annotation becomes a :class:`~persam.personalize.Concept`, learned
by :func:`~persam.personalize.learn_on_current_image` with the video's reference settings (the mask
drawn with 215 before resampling, mean/max feature, the best-covered cells for tiny objects). On
each later frame, per object:

1. the cosine similarity between the object's feature and the frame's embedding gives the ``topk``
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError, MaskTooSmallError
from persam.methods import method_spec
from persam.personalize import Concept, learn_on_current_image
from persam.personalize.boxes import expand_box, mask_box
from persam.personalize.cascade import WeightedStage, decode_stage, mask_areas, refine, weighted_first_step
from persam.personalize.prior import location_prior, similarity_maps, unit_embedding
from persam.readers.first_mask import FirstMask
from persam.tracking.merge import merge_object_logits
from persam.tracking.result import CallRecord, FrameResult, ObjectStep

COMPAT_MODES = ("fixed", "official")

#: The reference script multiplies its 0/1 object masks by this value before the mask goes through
#: the image normalisation; a grid location is part of the object where the resampled value
#: exceeds the red-channel pixel mean (123.675), i.e. where the mask covers more than ~57.5 %.
VIDEO_MASK_VALUE = 215


@dataclass(kw_only=True)
class TrackedObject:
    """One tracked object: its id and the concept learned from its first-frame mask."""

    object_id: int
    concept: Concept


@dataclass
class _Prompt:
    """Prompts of one object on one frame (original-image pixels)."""

    slot: int  # position in the object list
    points: np.ndarray  # int64 [N, 2] (x, y)
    labels: np.ndarray  # int64 [N]
    box: np.ndarray | None  # int64 [4] XYXY, or None


def largest_mask(areas: torch.Tensor, compat: str) -> int:
    """Index of the largest of the masks with pixel ``areas [3]``; ``official`` compares the areas
    modulo 256 (as the reference's ``uint8`` sums do)."""
    a = areas.to(torch.int64)
    if compat == "official":
        a = torch.remainder(a, 256)
    return int(torch.argmax(a))


class PerSAMTracker:
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
        finetune_kwargs: PerSAM-F fitting options (``steps``, ``lr``, ``engine``, ``progress``).
        diagnostics: attach every object's :class:`~persam.tracking.result.ObjectStep` (prompts,
            each decoder call's scores, logits and choices) to :attr:`FrameResult.diagnostics`.

    :meth:`point_prompts` and :meth:`choose` are the tracker's decisions; a subclass may override
    them (e.g. to replay recorded decisions step by step).
    """

    name = "persam"

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
        diagnostics: bool = False,
    ) -> None:
        self.spec = method_spec(method)
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.model = model
        self.method = self.spec.name
        self.compat = compat
        self.topk = int(topk)
        self.box_margin = int(box_margin)
        self.batch_objects = batch_objects
        self.finetune_kwargs = dict(finetune_kwargs or {})
        self.diagnostics = diagnostics
        self.objects: list[TrackedObject] = []
        # Where each object's box prompt comes from on the next frame. fixed: one entry per object
        # (its box, or None when absent). official: the boxes of the labels present in the
        # previous prediction, in label order, assigned to objects by position.
        self._boxes: list[np.ndarray | None] = []
        self._size: tuple[int, int] | None = None
        self._steps: dict[int, ObjectStep] = {}

    @property
    def object_ids(self) -> list[int]:
        return [o.object_id for o in self.objects]

    # ------------------------------------------------------------------ setup
    def initialize(self, frame: np.ndarray, first_mask: FirstMask, index: int = 0) -> FrameResult:
        """Encodes the reference frame once and learns every object on it.

        Returns the reference frame's result (its label map is the given annotation).
        """
        h, w = frame.shape[:2]
        if first_mask.size != (h, w):
            raise InputError(
                f"{first_mask.source}: mask is {first_mask.size[1]}×{first_mask.size[0]} (W×H) but the video "
                f"frames are {w}×{h}"
            )
        self._size = (h, w)
        self.model.set_image(frame)
        self.objects = []
        for oid, mask in zip(first_mask.object_ids, first_mask.masks, strict=True):
            try:
                self.objects.append(TrackedObject(object_id=oid, concept=self.learn_object(oid, mask)))
            except MaskTooSmallError as e:
                raise MaskTooSmallError(f"{first_mask.source}: object {oid}: {e}") from None
        self._boxes = [mask_box(m) for m in first_mask.masks]
        scores: dict[int, float | None] = {o: 1.0 for o in self.object_ids}
        return FrameResult.from_label_map(
            index, first_mask.label_map.copy(), self.object_ids, scores, is_reference=True, image=frame
        )

    def learn_object(self, object_id: int, mask: np.ndarray) -> Concept:
        """The concept of one object from its mask on the current (reference) frame."""
        return learn_on_current_image(
            self.model,
            mask,
            self.method,
            name=f"object {object_id}",
            mask_value=VIDEO_MASK_VALUE,
            feature_reduce="mean_max",
            small_mask="best_cells",
            **self.finetune_kwargs,
        )

    # ------------------------------------------------------------- decisions
    def point_prompts(self, index: int, slot: int, sim: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The similarity points of object ``slot`` on frame ``index`` from its similarity map
        ``[H, W]``: ``(xy int64 [N, 2], labels int64 [N])``."""
        xy, labels = location_prior(sim, self.topk, negative=False)
        return np.asarray(xy, np.int64).reshape(-1, 2), np.asarray(labels, np.int64).reshape(-1)

    def choose(self, call: str, index: int, slots: Sequence[int], auto: torch.Tensor) -> torch.Tensor:
        """The mask each object in ``slots`` keeps in decoder ``call`` on frame ``index``, given the
        tracker's own choice ``auto`` (int64 ``[len(slots)]``); returns int64 ``[len(slots)]``."""
        return auto

    # ------------------------------------------------------------------- step
    def step(self, frame: np.ndarray, index: int) -> FrameResult:
        """Segments every object on ``frame`` (``uint8 [H, W, 3]``)."""
        if not self.objects:
            raise RuntimeError("call initialize(first_frame, first_mask) first")
        h, w = frame.shape[:2]
        if (h, w) != self._size:
            raise InputError(f"frame {index} is {w}x{h}, the first frame is {self._size[1]}x{self._size[0]}")
        self.model.set_image(frame)
        self._steps = {}
        prompts = self._prompts(index)
        logits: dict[int, tuple[float, torch.Tensor]] = {}
        for group in self._groups(prompts):
            logits.update(self._segment_group([prompts[i] for i in group], index))
        slots = sorted(logits)
        label_map = merge_object_logits(
            [logits[s][1] for s in slots], [self.objects[s].object_id for s in slots], self._size
        )
        scores: dict[int, float | None] = {o.object_id: None for o in self.objects}
        for slot, (score, _) in logits.items():
            scores[self.objects[slot].object_id] = score
        result = FrameResult.from_label_map(index, label_map, self.object_ids, scores, image=frame)
        if self.diagnostics:
            result.diagnostics = [self._steps[s] for s in sorted(self._steps)]
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
            xy, labels = self.point_prompts(index, slot, sim)
            prev = self._boxes[slot]
            prompt_box = None if prev is None else expand_box(prev, self.box_margin, self._size)
            if self.diagnostics:
                oid = self.objects[slot].object_id
                self._steps[slot] = ObjectStep(
                    slot=slot, object_id=oid, points=xy, labels=labels, box_prompt=prompt_box
                )
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
            return torch.zeros(0, *self._size)
        dev = self.model.device
        feats = torch.cat([self.objects[s].concept.target_feat.reshape(1, -1).to(dev) for s in slots])
        return similarity_maps(self.model, feats, unit=unit_embedding(self.model.features))[1]

    def _groups(self, prompts: Sequence[_Prompt]) -> list[list[int]]:
        """Prompt sets that can share one decoder batch (same number of points, box or not)."""
        if not self.batch_objects:
            return [[i] for i in range(len(prompts))]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault((len(p.points), p.box is not None), []).append(i)
        return list(groups.values())

    def _chooser(self, call: str, index: int, slots: Sequence[int], areas: bool = False):
        """A :data:`~persam.personalize.cascade.Chooser` for ``call``: the largest mask (``areas``)
        or the best score, passed through :meth:`choose` and recorded."""

        def pick(low: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            chosen = [slots[int(r)] for r in rows]
            area = mask_areas(self.model, low) if areas else None
            if area is not None:
                auto = torch.tensor([largest_mask(a, self.compat) for a in area], dtype=torch.int64)
            else:
                auto = scores.argmax(dim=1).cpu()
            final = torch.as_tensor(self.choose(call, index, chosen, auto), dtype=torch.int64)
            if self.diagnostics:
                for k, slot in enumerate(chosen):
                    self._steps[slot].calls[call] = CallRecord(
                        scores=scores[k],
                        low_res=low[k],
                        areas=None if area is None else area[k],
                        auto_choice=int(auto[k]),
                        choice=int(final[k]),
                    )
            return final

        return pick

    def _segment_group(self, prompts: Sequence[_Prompt], index: int) -> dict[int, tuple[float, torch.Tensor]]:
        """One batch of objects with prompts of the same structure through the three calls;
        returns ``slot -> (score, logits [H, W])`` for the objects that reached call 3."""
        dev = self.model.device
        slots = [p.slot for p in prompts]
        points = torch.as_tensor(np.stack([p.points for p in prompts]), dtype=torch.float32, device=dev)
        labels = torch.as_tensor(np.stack([p.labels for p in prompts]), dtype=torch.int64, device=dev)
        boxes = None
        if prompts[0].box is not None:
            boxes = torch.as_tensor(np.stack([p.box for p in prompts]), dtype=torch.float32, device=dev)

        # Call 1: points + box, 3 masks -> the mask input of call 2.
        if self.spec.fits_mask_weights:
            weights = torch.stack([self.objects[s].concept.mask_weights.reshape(3) for s in slots])
            s1 = weighted_first_step(self.model, points, labels, weights, boxes=boxes)
            self._record_blend(s1, slots)
        else:
            chooser = self._chooser("call1", index, slots, areas=True)
            s1 = decode_stage(self.model, "call1", points, labels, boxes=boxes, chooser=chooser)
        mask_in = s1.best_low_res

        # Call 2: points + mask input, 3 masks -> the best one's box.
        chooser = self._chooser("call2", index, slots)
        s2 = decode_stage(self.model, "call2", points, labels, mask_input=mask_in, chooser=chooser)

        # Call 3: points + that box + its low-res logits -> the final logits (skipped where empty).
        chooser = self._chooser("call3", index, slots)
        s3 = refine(self.model, "call3", points, labels, s2, with_box=True, chooser=chooser)
        out: dict[int, tuple[float, torch.Tensor]] = {}
        for k, slot in enumerate(slots):
            if not bool(s3.active[k]):  # call 2 gave an empty mask: the object is not on this frame
                continue
            if self.diagnostics:
                self._steps[slot].calls["call3"].box = s3.box_prompt[k].cpu()
                self._steps[slot].logits = s3.logits[k]
            out[slot] = (float(s3.best_score[k]), s3.logits[k])
        return out

    def _record_blend(self, stage: WeightedStage, slots: Sequence[int]) -> None:
        """Diagnostics of PerSAM-F's blended first call (its raw masks; no choice)."""
        if self.diagnostics:
            for k, slot in enumerate(slots):
                rec = CallRecord(scores=stage.raw_scores[k], low_res=stage.raw_low_res_logits[k])
                self._steps[slot].calls["call1"] = rec

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
