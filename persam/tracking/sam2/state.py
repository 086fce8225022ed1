"""Per-object tracking state of the SAM 2 memory tracker.

Each object keeps, per frame it has an output on, a :class:`FrameOutput`. Conditioning frames
(frames the user prompted) are always kept; non-conditioning (tracked) frames can be pruned to the
window the memory attention can still read (:meth:`ObjectState.prune`), which keeps the state
size independent of the video length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FrameOutput:
    """One object's output on one frame.

    Attributes:
        pred_masks: ``[1, 1, 256, 256]`` float32 low-res mask logits (``NO_OBJ_SCORE`` where the
            object was judged absent), or None once pruned.
        obj_ptr: ``[1, C]`` object pointer.
        object_score_logits: ``[1, 1]`` (> 0: present).
        maskmem_features: ``[1, mem_dim, 64, 64]`` bfloat16 memory, or None (not encoded yet, or
            pruned).
    """

    pred_masks: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None


@dataclass
class PointPrompt:
    """Accumulated clicks of one frame on the model's input frame: ``coords [1, P, 2]`` (x, y scaled
    to ``image_size``, box corners first) and ``labels [1, P]`` int32."""

    coords: torch.Tensor
    labels: torch.Tensor

    def extended(self, coords: torch.Tensor, labels: torch.Tensor) -> PointPrompt:
        return PointPrompt(torch.cat([self.coords, coords], dim=1), torch.cat([self.labels, labels], dim=1))


@dataclass
class ObjectState:
    """Everything the tracker keeps for one object (the official per-object dicts).

    ``cond`` / ``non_cond`` hold the consolidated outputs (in insertion order, which is the order
    the memories are read in); ``temp_cond`` / ``temp_non_cond`` the outputs of prompts not yet
    consolidated (memory not encoded); ``tracked`` maps each frame with an output to the direction
    it was tracked in (True = reverse).
    """

    obj_id: int
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)
    #: PerSAM concept (unit-norm mean feature under the first given mask) for re-detection.
    concept: torch.Tensor | None = None
    #: Conditioning frames added by re-detection (oldest first), and the current run of frames
    #: judged absent.
    redetected: list[int] = field(default_factory=list)
    absent_run: int = 0

    def temp(self, is_cond: bool) -> dict[int, FrameOutput]:
        return self.temp_cond if is_cond else self.temp_non_cond

    def output_on(self, frame_idx: int) -> FrameOutput | None:
        """The consolidated output on ``frame_idx`` (conditioning first), or None."""
        out = self.cond.get(frame_idx)
        return out if out is not None else self.non_cond.get(frame_idx)

    def prune(self, frame_idx: int, reverse: bool, *, memory_span: int, pointer_span: int) -> None:
        """Drops what tracking onwards from ``frame_idx`` (in its direction) can no longer read.

        Non-conditioning frames more than ``pointer_span`` frames behind ``frame_idx`` are dropped
        entirely, those more than ``memory_span`` behind lose their memory and mask logits (their
        object pointer stays); frames ahead of ``frame_idx`` are dropped, as tracking recomputes
        them before reading them. Prompts and ``tracked`` entries follow the same window.
        """
        sign = -1 if reverse else 1
        for t in list(self.non_cond):
            behind = (frame_idx - t) * sign
            if behind < 0 or behind > pointer_span:
                del self.non_cond[t]
            elif behind > memory_span:
                out = self.non_cond[t]
                out.maskmem_features = None
                out.pred_masks = None
        for t in list(self.tracked):
            behind = (frame_idx - t) * sign
            if t not in self.cond and (behind < 0 or behind > pointer_span):
                del self.tracked[t]
        for prompts in (self.points, self.masks):
            for t in list(prompts):
                if t not in self.cond and t not in self.temp_cond and t not in self.temp_non_cond:
                    del prompts[t]

    def counts(self) -> dict[str, int]:
        """Stored items (and ``bytes``: the size of the stored tensors), for checking that the state
        stays bounded."""
        outs = [
            *self.cond.values(),
            *self.non_cond.values(),
            *self.temp_cond.values(),
            *self.temp_non_cond.values(),
        ]
        tensors = [
            t for o in outs for t in (o.pred_masks, o.obj_ptr, o.object_score_logits, o.maskmem_features)
        ]
        return {
            "bytes": sum(t.numel() * t.element_size() for t in tensors if t is not None),
            "cond_frames": len(self.cond),
            "non_cond_frames": len(self.non_cond),
            "memories": sum(o.maskmem_features is not None for o in outs),
            "pointers": len(outs),
            "mask_logits": sum(o.pred_masks is not None for o in outs),
            "prompts": len(self.points) + len(self.masks),
            "tracked": len(self.tracked),
        }
