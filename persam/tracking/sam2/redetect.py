"""PerSAM re-detection of objects SAM 2 has lost (not part of the official predictor; off by default).

SAM 2 judges an object absent from its memory; once it stays absent for ``after`` frames, the
object is searched for on the current frame's (shared) stride-16 features with its PerSAM concept:
the mean feature under its mask on the first frame it was given, L2-normalised. The cosine
similarity map gives a positive click (the best location) and a negative one (the worst), decoded
without memory like a prompt on a new frame. A mask the decoder judges present (object score above
``min_score``) at a location similar enough (``min_similarity``) becomes a new conditioning frame
of the object, so tracking resumes from it. At most ``max_redetections`` such frames are kept (the
oldest is dropped first; frames the user prompted are never dropped), which keeps the state bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from persam.tracking.sam2.engine import FrameFeatures, MemoryEngine
from persam.tracking.sam2.state import FrameOutput, ObjectState, PointPrompt


def concept_of(features: FrameFeatures, low_res_logits: torch.Tensor) -> torch.Tensor | None:
    """``[C]`` unit-norm mean feature under the mask (``low_res_logits [1, 1, 4h, 4w] > 0``), or None
    for an empty mask."""
    vision = features.vision[0]
    weights = F.interpolate(
        (low_res_logits > 0).float(), size=vision.shape[-2:], mode="bilinear", align_corners=False
    )
    weights = weights[0, 0]
    if float(weights.sum()) <= 0:
        return None
    target = (vision * weights).sum(dim=(1, 2)) / weights.sum()
    return F.normalize(target, dim=0)


@dataclass
class Redetector:
    """Settings of the re-detection (see the module docstring).

    Attributes:
        after: consecutive absent frames before searching (on the frame where the count is reached).
        min_score: decoder object-score logit a found mask must exceed.
        min_similarity: cosine similarity the best location must reach.
        max_redetections: re-detected conditioning frames kept per object.
    """

    after: int = 5
    min_score: float = 0.0
    min_similarity: float = 0.0
    max_redetections: int = 2

    def search(
        self, engine: MemoryEngine, frame_idx: int, features: FrameFeatures, state: ObjectState
    ) -> FrameOutput | None:
        """A new conditioning output for ``state`` on ``frame_idx``, or None when not found."""
        if state.concept is None:
            return None
        vision = F.normalize(features.vision[0], dim=0)
        _, h, w = vision.shape
        sim = torch.einsum("c,chw->hw", state.concept.to(vision.device), vision).flatten()
        best, worst = int(torch.argmax(sim)), int(torch.argmin(sim))
        if float(sim[best]) < self.min_similarity:
            return None
        size = engine.image_size

        def point(i: int) -> list[float]:
            return [(i % w + 0.5) * size / w, (i // w + 0.5) * size / h]

        prompt = PointPrompt(
            torch.tensor([[point(best), point(worst)]]), torch.tensor([[1, 0]], dtype=torch.int32)
        )
        result = engine.step(
            frame_idx, features, state, is_init_cond_frame=True, points=prompt, num_frames=None
        )
        out = result.output
        if float(out.object_score_logits) <= self.min_score or not bool((out.pred_masks > 0).any()):
            return None
        return out

    def adopt(self, state: ObjectState, frame_idx: int, out: FrameOutput) -> None:
        """Makes ``out`` a conditioning frame of ``state`` (dropping the oldest re-detection if needed)."""
        state.non_cond.pop(frame_idx, None)
        state.cond[frame_idx] = out
        state.redetected.append(frame_idx)
        while len(state.redetected) > self.max_redetections:
            state.cond.pop(state.redetected.pop(0), None)
        state.absent_run = 0
