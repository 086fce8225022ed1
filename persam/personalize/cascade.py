"""The decoder cascade: stages of batched decoder calls, each refining the previous mask.

:func:`cascaded_refinement` (PerSAM) calls the decoder three times: once with the PerSAM hooks
(target-guided attention, target-semantic prompt), then twice more, each time fed the previous
mask's logits (and then its bounding box). :func:`persam_f_cascade` (PerSAM-F) starts instead from
the decoder's three masks blended with the learned weights. The video tracker builds its own
sequence of calls from the same :func:`decode_stage` and :func:`refine`.

Every decoder stage is batched over ``B`` prompt sets (several concepts, or several instances, on
one image): one decoder call per stage. Where a stage produces an empty mask (so no box can be
formed), the cascade keeps the last non-empty mask instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.personalize.boxes import mask_boxes

#: ``chooser(low_res_logits [n, C, 256, 256], scores [n, C], rows int64 [n]) -> int64 [n]``: which
#: mask each of the ``n`` prompt sets that ran (``rows``: their indices among the ``B``) keeps
#: (default: the highest score).
Chooser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mask_areas(backbone: Backbone, low_res: torch.Tensor) -> torch.Tensor:
    """Pixel areas of the masks of ``low_res [B, C, 256, 256]`` at the original size (the
    backbone's post-processing and threshold), one prompt set at a time so that the full-size
    logits of only one set are alive: int64 ``[B, C]`` on the CPU."""
    areas = [
        backbone.binarize(backbone.postprocess(low_res[i : i + 1])).sum(dim=(-2, -1)).cpu()
        for i in range(low_res.shape[0])
    ]
    return torch.cat(areas).to(torch.int64)


# ------------------------------------------------------------------------------------ stages
@dataclass
class Stage:
    """One batched decoder call of a cascade (``B`` prompt sets, ``C`` masks each).

    Attributes:
        name: ``"step1"``, ``"refine1"``, ``"refine2"`` (PerSAM-F: ``"weighted"`` first).
        active: bool ``[B]``, the prompt sets this stage ran for (the others skipped it).
        low_res_logits: ``[B, C, 256, 256]`` (zeros where inactive).
        scores: ``[B, C]`` predicted IoU (for ``"weighted"``: the weighted IoU, ``C = 1``).
        best_idx: int64 ``[B]``, the chosen mask.
        logits: ``[B, H, W]`` original-size logits of the chosen mask.
        mask: bool ``[B, H, W]``, the chosen mask.
        box_prompt: float32 ``[B, 4]`` box given to this stage, or None.
        mask_input: ``[B, 1, 256, 256]`` low-res logits given to this stage, or None.
    """

    name: str
    active: torch.Tensor
    low_res_logits: torch.Tensor
    scores: torch.Tensor
    best_idx: torch.Tensor
    logits: torch.Tensor
    mask: torch.Tensor
    box_prompt: torch.Tensor | None = None
    mask_input: torch.Tensor | None = None

    @property
    def best_low_res(self) -> torch.Tensor:
        """``[B, 1, 256, 256]`` low-res logits of the chosen masks (the next ``mask_input``)."""
        idx = self.best_idx.to(self.low_res_logits.device)
        return self.low_res_logits[torch.arange(idx.numel(), device=idx.device), idx][:, None]

    @property
    def best_score(self) -> torch.Tensor:
        """``[B]`` score of the chosen masks."""
        idx = self.best_idx.to(self.scores.device)
        return self.scores[torch.arange(idx.numel(), device=idx.device), idx]


def _take(t: torch.Tensor | None, sel: torch.Tensor, b: int) -> torch.Tensor | None:
    """Rows ``sel`` of a per-prompt-set tensor (``[B, ...]``); tensors shared by all (leading 1)
    pass through."""
    if t is None:
        return None
    if t.shape[0] == 1 and b != 1:
        return t
    return t[sel.to(t.device)]


def decode_stage(
    backbone: Backbone,
    name: str,
    points: torch.Tensor,
    labels: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask_output: bool = True,
    attn_sim: torch.Tensor | None = None,
    target_embedding: torch.Tensor | None = None,
    best_idx: torch.Tensor | None = None,
    chooser: Chooser | None = None,
    active: torch.Tensor | None = None,
) -> Stage:
    """One decoder call for ``B`` prompt sets, choosing a mask per set.

    Args:
        backbone: with an image set.
        name: stage name.
        points: ``[B, N, 2]`` (x, y) original pixels; labels ``[B, N]``.
        boxes: ``[B, 4]`` XYXY or None; mask_input ``[B, 1, 256, 256]`` or None.
        multimask_output: 3 masks (chosen by the highest score) or the single mask (index 0).
        attn_sim, target_embedding: PerSAM hooks (``[B or 1, ...]``), see :meth:`Backbone.decode`.
        best_idx: ``[B]`` imposes the choice (for step-by-step reproduction), else ``chooser``
            decides from the active sets' outputs, else the highest score (single mask: index 0).
        active: bool ``[B]``: run only these prompt sets (the others get zeros and empty masks).
    """
    b = points.shape[0]
    dev = backbone.device
    if active is None:
        active = torch.ones(b, dtype=torch.bool)
    active = active.cpu().to(torch.bool)
    sel = torch.nonzero(active).flatten()
    c = 3 if multimask_output else 1
    if sel.numel() == 0:
        h, w = backbone.original_size
        return Stage(
            name=name,
            active=active,
            low_res_logits=torch.zeros(b, c, 256, 256, device=dev),
            scores=torch.zeros(b, c, device=dev),
            best_idx=torch.zeros(b, dtype=torch.int64),
            logits=torch.zeros(b, h, w, device=dev),
            mask=torch.zeros(b, h, w, dtype=torch.bool, device=dev),
            box_prompt=boxes,
            mask_input=mask_input,
        )
    out = backbone.decode(
        _take(points, sel, b).to(dev),
        _take(labels, sel, b).to(dev),
        boxes=_take(boxes, sel, b),
        mask_input=_take(mask_input, sel, b),
        multimask_output=multimask_output,
        attn_sim=_take(attn_sim, sel, b),
        target_embedding=_take(target_embedding, sel, b),
    )
    if best_idx is not None:
        pick = best_idx.cpu().to(torch.int64)[sel]
    elif chooser is not None:
        pick = torch.as_tensor(chooser(out.low_res_logits, out.iou_predictions, sel)).cpu().to(torch.int64)
    elif multimask_output:
        pick = out.iou_predictions.argmax(dim=1).cpu()
    else:
        pick = torch.zeros(sel.numel(), dtype=torch.int64)
    # Only the chosen mask is brought to the original size.
    best = out.low_res_logits[torch.arange(sel.numel(), device=dev), pick.to(dev)][:, None]
    logits = backbone.postprocess(best)[:, 0]
    low, scores, mask = out.low_res_logits, out.iou_predictions, binarize(backbone, logits)
    if sel.numel() < b:  # the skipped prompt sets get zeros and empty masks
        low, scores, pick, logits, mask = (
            _scatter_rows(t, sel, b) for t in (low, scores, pick, logits, mask)
        )
    return Stage(name, active, low, scores, pick, logits, mask, boxes, mask_input)


def _scatter_rows(t: torch.Tensor, sel: torch.Tensor, b: int) -> torch.Tensor:
    """``[len(sel), ...]`` -> ``[b, ...]`` with the rows at ``sel`` and zeros elsewhere."""
    out = t.new_zeros(b, *t.shape[1:])
    out[sel.to(t.device)] = t
    return out


def binarize(backbone: Backbone, logits: torch.Tensor) -> torch.Tensor:
    """Boolean masks from original-size logits with the backbone's own threshold rule."""
    return backbone.binarize(logits)


@dataclass
class CascadeResult:
    """Outcome of a cascade for ``B`` prompt sets.

    Attributes:
        masks: bool ``[B, H, W]``, the final mask (the last stage with a non-empty mask).
        scores: ``[B]`` predicted IoU of that mask.
        found: bool ``[B]``, False where every stage gave an empty mask.
        boxes: int64 ``[B, 4]``, box prompt of the stage that produced the final mask (``-1``
            where that stage had none).
        final_stage: name of that stage per prompt set.
        stages: every stage, in order.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    found: torch.Tensor
    boxes: torch.Tensor
    final_stage: list[str]
    stages: list[Stage] = field(default_factory=list)


def _box_prompt(stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    """Box of each chosen mask, as a float prompt, and where it exists."""
    boxes, nonempty = mask_boxes(stage.mask)
    return boxes.to(torch.float32), nonempty.cpu() & stage.active


def finish_cascade(stages: Sequence[Stage]) -> CascadeResult:
    """Picks, per prompt set, the last stage that ran and produced a non-empty mask."""
    b = stages[0].active.numel()
    source = torch.zeros(b, dtype=torch.int64)  # the stage that gives each final mask
    boxed = torch.zeros(b, dtype=torch.bool)  # False: the first stage by default, no box
    nonempty = stages[0].mask.flatten(1).any(dim=1).cpu()
    for k, st in enumerate(stages):
        st_nonempty = st.mask.flatten(1).any(dim=1).cpu()
        # A stage that ran replaces an earlier empty result even if it is empty too, so that a
        # fully empty cascade reports the last stage's score.
        take = st.active & (st_nonempty | ~nonempty)
        source[take] = k
        boxed |= take
        nonempty[take] = st_nonempty[take]
    picks = source.tolist()
    masks = torch.stack([stages[k].mask[i] for i, k in enumerate(picks)])
    scores = torch.stack([stages[k].best_score[i].cpu() for i, k in enumerate(picks)])
    boxes = torch.full((b, 4), -1, dtype=torch.int64)
    for i, k in enumerate(picks):
        if bool(boxed[i]) and stages[k].box_prompt is not None:
            boxes[i] = stages[k].box_prompt[i].round().to(torch.int64).cpu()
    names = [stages[k].name for k in picks]
    return CascadeResult(masks, scores, nonempty.clone(), boxes, names, list(stages))


def persam_first_step(
    backbone: Backbone,
    points: torch.Tensor,
    labels: torch.Tensor,
    attn_sim: torch.Tensor | None,
    target_embedding: torch.Tensor | None,
) -> Stage:
    """PerSAM step 1: positive/negative points with target-guided attention and the
    target-semantic prompt, single-mask output (mask token 0)."""
    return decode_stage(
        backbone,
        "step1",
        points,
        labels,
        multimask_output=False,
        attn_sim=attn_sim,
        target_embedding=target_embedding,
    )


def refine(
    backbone: Backbone,
    name: str,
    points: torch.Tensor,
    labels: torch.Tensor,
    previous: Stage,
    *,
    with_box: bool,
    mask_input: torch.Tensor | None = None,
    best_idx: torch.Tensor | None = None,
    chooser: Chooser | None = None,
) -> Stage:
    """A cascaded post-refinement step: the same points, the previous chosen low-res logits (or
    ``mask_input``) as mask prompt and, ``with_box``, the bounding box of the previous chosen mask;
    multimask output, best by score (or ``best_idx`` / ``chooser``, see :func:`decode_stage`).
    Prompt sets whose previous mask is empty are skipped when a box is needed."""
    active = previous.active.clone()
    boxes = None
    if with_box:
        boxes, active = _box_prompt(previous)
    mi = previous.best_low_res if mask_input is None else mask_input
    return decode_stage(
        backbone,
        name,
        points,
        labels,
        boxes=boxes,
        mask_input=mi,
        multimask_output=True,
        best_idx=best_idx,
        chooser=chooser,
        active=active,
    )


def cascaded_refinement(
    backbone: Backbone,
    points: torch.Tensor,
    labels: torch.Tensor,
    attn_sim: torch.Tensor | None = None,
    target_embedding: torch.Tensor | None = None,
) -> CascadeResult:
    """PerSAM's three decoder calls for ``B`` prompt sets on the current image.

    1. step 1: points + ``attn_sim`` + ``target_embedding``, single mask;
    2. refinement 1: points + step-1 low-res logits as ``mask_input``, 3 masks, best by score;
    3. refinement 2: points + box of the refinement-1 mask + its low-res logits, best by score.

    Args:
        points: ``[B, N, 2]`` (x, y) original pixels (int or float); labels ``[B, N]``.
        attn_sim: ``[B or 1, 1, 1, h*w]``; target_embedding ``[B or 1, 1, C]``.
    """
    points, labels = as_prompt_tensors(points, labels)
    s1 = persam_first_step(backbone, points, labels, attn_sim, target_embedding)
    r1 = refine(backbone, "refine1", points, labels, s1, with_box=False)
    r2 = refine(backbone, "refine2", points, labels, r1, with_box=True)
    return finish_cascade([s1, r1, r2])


def as_prompt_tensors(
    points: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point prompts as tensors ``[B, N, 2]`` and int64 ``[B, N]`` (a single ``[N, 2]`` set gets
    ``B = 1``)."""
    p = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if p.ndim == 2:
        p, lab = p[None], lab[None]
    return p, lab.to(torch.int64)


# ------------------------------------------------------------------------------------ PerSAM-F
@dataclass
class WeightedStage(Stage):
    """PerSAM-F's first stage: the decoder's 3 masks blended with the learned weights.

    ``low_res_logits`` ``[B, 1, 256, 256]`` and ``logits`` ``[B, H, W]`` hold the blended logits,
    ``scores`` ``[B, 1]`` the blended IoU; the raw decoder output is kept in ``raw_low_res_logits``
    ``[B, 3, 256, 256]`` and ``raw_scores`` ``[B, 3]``.
    """

    raw_low_res_logits: torch.Tensor | None = None
    raw_scores: torch.Tensor | None = None


def weighted_first_step(
    backbone: Backbone,
    points: torch.Tensor,
    labels: torch.Tensor,
    mask_weights: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
) -> WeightedStage:
    """PerSAM-F step 1 for ``B`` prompt sets: the points (and ``boxes [B, 4]``, if given), 3 masks,
    blended with ``mask_weights [B or 1, 3]`` at both resolutions."""
    dev = backbone.device
    b = points.shape[0]
    out = backbone.decode(points.to(dev), labels.to(dev), boxes=boxes, multimask_output=True)
    w = torch.as_tensor(mask_weights, dtype=torch.float32, device=dev).reshape(-1, 3).expand(b, 3)
    high = backbone.postprocess(out.low_res_logits)
    blended_high = (high * w[:, :, None, None]).sum(1)
    blended_low = (out.low_res_logits * w[:, :, None, None]).sum(1, keepdim=True)
    scores = (out.iou_predictions * w).sum(1, keepdim=True)
    return WeightedStage(
        name="weighted",
        active=torch.ones(b, dtype=torch.bool),
        low_res_logits=blended_low,
        scores=scores,
        best_idx=torch.zeros(b, dtype=torch.int64),
        logits=blended_high,
        mask=binarize(backbone, blended_high),
        box_prompt=boxes,
        raw_low_res_logits=out.low_res_logits,
        raw_scores=out.iou_predictions,
    )


def persam_f_cascade(
    backbone: Backbone,
    points: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    mask_weights: torch.Tensor,
) -> CascadeResult:
    """PerSAM-F inference for ``B`` prompt sets on the current image.

    1. blended step: one positive point, 3 masks blended with ``mask_weights [B, 3]``; the blended
       original-size logits give a mask and its box;
    2. refinement 1: points + that box + the blended low-res logits as ``mask_input``;
    3. refinement 2: points + box of the refinement-1 best mask + its low-res logits.

    A refinement whose box cannot be formed (empty mask) is skipped and the last non-empty mask is
    kept (the reference implementation fails there).
    """
    points, labels = as_prompt_tensors(points, labels)
    s1 = weighted_first_step(backbone, points, labels, mask_weights)
    r1 = refine(backbone, "refine1", points, labels, s1, with_box=True)
    r2 = refine(backbone, "refine2", points, labels, r1, with_box=True)
    return finish_cascade([s1, r1, r2])
