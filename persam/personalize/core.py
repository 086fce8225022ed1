"""Training-free PerSAM as small functions over tensors, for any :class:`~persam.backbones.base.Backbone`.

One personalised segmentation is (Zhang et al. 2023, "Personalize Segment-Anything Model with One
Shot"):

1. :func:`reference_grid_mask` — which cells of the reference image embedding belong to the object.
2. :func:`target_embedding` — the object's feature (a local average / max of those cells).
3. :func:`similarity_map` — cosine similarity of that feature with every cell of a new image,
   brought to the original resolution.
4. :func:`location_prior` — the most (and least) similar pixels become a positive (and negative)
   point prompt.
5. :func:`target_guided_attention` — the similarity map as a bias on the decoder's token-to-image
   attention.
6. :func:`cascaded_refinement` — the decoder is called three times: once with the PerSAM hooks,
   then twice more, each time fed the previous mask's logits (and then its bounding box).

Every decoder stage is batched over ``B`` prompt sets (several concepts, or several instances, on
one image): one decoder call per stage. Where a stage produces an empty mask (so no box can be
formed), the cascade keeps the last non-empty mask instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone
from persam.errors import InputError, MaskTooSmallError

#: Red channel of SAM's ``pixel_mean``: the value a reference-mask pixel has to exceed (after the
#: reference implementation's normalisation) for its embedding cell to be selected.
REFERENCE_MASK_LEVEL = 123.675


# ----------------------------------------------------------------------------------- reference
def _drawn_mask_grid(backbone: Backbone, mask: np.ndarray, mask_value: int, pad_value: float) -> torch.Tensor:
    """The mask drawn as a uint8 image with ``mask_value`` on the object, resampled onto the
    embedding grid exactly like the image (raw uint8 scale, padding ``pad_value``)."""
    if not 1 <= int(mask_value) <= 255:
        raise ValueError(f"mask_value must be in 1..255, got {mask_value}")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask must be [H, W], got shape {m.shape}")
    drawn = np.where(m.astype(bool), np.uint8(mask_value), np.uint8(0)).astype(np.uint8)
    return backbone.mask_to_embedding_grid(drawn, pad_value=float(pad_value)).float()


def reference_coverage_grid(
    backbone: Backbone,
    mask: np.ndarray,
    *,
    mask_value: int = 128,
    pad_coverage: float = 0.0,
) -> torch.Tensor:
    """Fraction of each embedding cell covered by ``mask``, resampled exactly like the image.

    The boolean mask is written as a ``uint8`` image holding ``mask_value`` on the object (0
    elsewhere), resized with the image's filter (SAM: PIL bilinear to longest side 1024, so the
    values are rounded to integers as in the reference implementation), padded with
    ``pad_coverage * mask_value`` and bilinearly down-sampled to the embedding grid; the result is
    divided by ``mask_value``.

    Args:
        backbone: any backbone (its image geometry is used; no image needs to be set).
        mask: bool ``[H, W]``.
        mask_value: the uint8 level the mask is drawn with (1..255).
        pad_coverage: coverage assigned to the padding outside the resized image.

    Returns:
        float32 ``[h, w]`` coverage (``1`` = fully inside the object).
    """
    grid = _drawn_mask_grid(backbone, mask, mask_value, float(pad_coverage) * float(mask_value))
    return grid / float(mask_value)


def resolve_coverage_threshold(mask_value: int = 128, coverage_threshold: float | None = None) -> float:
    """The coverage a cell needs to count as foreground: ``coverage_threshold``, or by default
    ``123.675 / mask_value`` (the reference implementation's rule for masks drawn with that value)."""
    if not 1 <= int(mask_value) <= 255:
        raise ValueError(f"mask_value must be in 1..255, got {mask_value}")
    if coverage_threshold is None:
        return REFERENCE_MASK_LEVEL / float(mask_value)
    if not 0.0 <= float(coverage_threshold) < 1.0:
        raise ValueError(f"coverage_threshold must be in [0, 1), got {coverage_threshold}")
    return float(coverage_threshold)


def reference_grid_mask(
    backbone: Backbone,
    mask: np.ndarray,
    *,
    mask_value: int = 128,
    coverage_threshold: float | None = None,
) -> torch.Tensor:
    """Which embedding cells count as reference foreground.

    The reference implementation resizes a uint8 mask like the image, normalises it with the
    image's red mean/std, zero-pads it, bilinearly down-samples it to the embedding grid and keeps
    the cells with a positive value. That is the same as: keep the cells whose *coverage*
    (:func:`reference_coverage_grid`, the padding counting as exactly the threshold, so never
    selected) exceeds ``coverage_threshold = 123.675 / mask_value``. The official PerSeg masks
    hold 128 (threshold 0.966: a cell must be almost fully covered); the official video script
    draws its masks with 215 (threshold 0.575). The mask is boolean here, so a 0/1 mask behaves
    exactly like a 0/255 one.

    Args:
        backbone: any backbone.
        mask: bool ``[H, W]`` (anything non-zero is foreground).
        mask_value: uint8 level the mask is drawn with before resizing (it sets the rounding of
            the resized values and, by default, the threshold).
        coverage_threshold: minimum coverage; ``None`` means ``123.675 / mask_value``.

    Returns:
        bool ``[h, w]``.

    Raises:
        MaskTooSmallError: no cell is selected.
    """
    threshold = resolve_coverage_threshold(mask_value, coverage_threshold)
    # On the uint8 scale, as the reference compares; the padding holds exactly the threshold level.
    level = threshold * float(mask_value)
    selected = _drawn_mask_grid(backbone, mask, mask_value, level) > level
    if not bool(selected.any()):
        hw = np.asarray(mask).shape
        cell = max(hw) / max(selected.shape)
        raise MaskTooSmallError(
            "reference mask too small: no embedding cell is foreground; an embedding cell spans "
            f"about {cell:.0f}x{cell:.0f} pixels of this {hw[0]}x{hw[1]} image and must be covered "
            f"to {threshold:.1%} (use a larger mask or a lower coverage_threshold)"
        )
    return selected


def target_embedding(
    features: torch.Tensor,
    grid_mask: torch.Tensor,
    reduce: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The object's feature from the reference embedding(s).

    Args:
        features: ``[N, C, h, w]`` embeddings of ``N`` reference images (or a list of ``[1, C, h,
            w]``); few-shot references are pooled together before reducing.
        grid_mask: bool ``[N, h, w]`` (or ``[h, w]`` for ``N = 1``, or a list) from
            :func:`reference_grid_mask`.
        reduce: ``"mean"`` (PerSAM) or ``"mean_max"`` (PerSAM-F and video: ``(max + mean) / 2``
            channel-wise).

    Returns:
        ``(target_feat [1, C]`` L2-normalised, used for the similarity, ``target_embedding
        [1, 1, C]`` the raw mean, the PerSAM target-semantic prompt).
    """
    if isinstance(features, (list, tuple)):
        features = torch.cat(list(features), dim=0)
    if isinstance(grid_mask, (list, tuple)):
        grid_mask = torch.stack([g.reshape(g.shape[-2:]) for g in grid_mask], dim=0)
    if grid_mask.ndim == 2:
        grid_mask = grid_mask[None]
    if features.ndim != 4 or grid_mask.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"features [N, C, h, w] and grid_mask [N, h, w] disagree: "
            f"{tuple(features.shape)} vs {tuple(grid_mask.shape)}"
        )
    # [n, C] foreground cells in row-major order of (reference, row, column).
    cells = features.permute(0, 2, 3, 1)[grid_mask.to(features.device, torch.bool)]
    if cells.shape[0] == 0:
        raise MaskTooSmallError("reference mask too small: no embedding cell is foreground")
    mean = cells.mean(0)
    if reduce == "mean":
        feat = mean.unsqueeze(0)
    elif reduce == "mean_max":
        feat = (torch.max(cells, dim=0)[0] / 2 + mean / 2).unsqueeze(0)
    else:
        raise ValueError(f"reduce must be 'mean' or 'mean_max', got {reduce!r}")
    feat = feat / feat.norm(dim=-1, keepdim=True)
    return feat, mean.unsqueeze(0).unsqueeze(0)


# ------------------------------------------------------------------------------------ priors
def unit_embedding(features: torch.Tensor) -> torch.Tensor:
    """The image side of the cosine similarity: ``features [1, C, h, w]`` with every cell scaled to
    unit L2 norm, ``[C, h, w]``. It depends on the image only, so one call serves every object."""
    feat = features.squeeze(0)
    return feat / feat.norm(dim=0, keepdim=True)


def similarity_grid(
    features: torch.Tensor, target_feat: torch.Tensor, *, unit: torch.Tensor | None = None
) -> torch.Tensor:
    """Cosine similarity of ``target_feat [K, C]`` (normalised) with each cell of ``features
    [1, C, h, w]``: ``[K, 1, h, w]``. ``unit`` is :func:`unit_embedding` of ``features`` when the
    caller already has it."""
    if unit is None:
        unit = unit_embedding(features)
    c, h, w = unit.shape
    sim = target_feat.reshape(-1, c).to(unit) @ unit.reshape(c, h * w)
    return sim.reshape(-1, 1, h, w)


def similarity_maps(
    backbone: Backbone, target_feats: torch.Tensor, *, unit: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of the current image with ``K`` object features at once (one matrix product, one
    batched up-sampling; each map equals :func:`similarity_map` of its feature).

    Args:
        backbone: with an image set.
        target_feats: ``[K, C]`` normalised (:func:`target_embedding`).
        unit: :func:`unit_embedding` of ``backbone.features``, if already computed.

    Returns:
        ``(grids [K, 1, h, w]`` on the embedding grid, ``sims [K, H, W]`` at the original size).
    """
    grid = similarity_grid(backbone.features, target_feats, unit=unit)
    low = F.interpolate(grid, scale_factor=4, mode="bilinear", align_corners=False)
    return grid, backbone.postprocess(low)[:, 0]


def similarity_map(backbone: Backbone, target_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of the current image with the object feature.

    Args:
        backbone: with an image set.
        target_feat: ``[1, C]`` normalised (:func:`target_embedding`).

    Returns:
        ``(sim_grid [1, 1, h, w]`` on the embedding grid, ``sim [H, W]`` at the original size:
        4x bilinear up-sampling to the low-res frame, then :meth:`Backbone.postprocess`).
    """
    grid, sims = similarity_maps(backbone, target_feat.reshape(1, -1))
    return grid, sims[0]


def top_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of a 1-D tensor, in the order of a stable descending
    sort (decreasing value, exact ties by increasing index), without sorting all of it.

    ``torch.topk`` finds the ``k + 1`` largest values. When the ``k``-th is strictly above the
    next one, its ``k`` indices are the answer; otherwise every entry above the ``k``-th value is
    taken and the entries equal to it fill the remaining places in index order. NaN ranks above
    every number, as in ``torch.sort``; a map holding NaN falls back to the full sort.

    Returns:
        int64 ``[min(k, n)]``.
    """
    n = values.numel()
    k = min(int(k), n)
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64, device=values.device)
    if k == 1:
        return values.argmax().reshape(1)  # the first maximal index
    top, idx = torch.topk(values, min(k + 1, n))
    if bool(torch.isnan(top[0])):  # comparisons cannot place NaN
        return torch.sort(values, descending=True, stable=True)[1][:k]
    if k < n and bool(top[k - 1] > top[k]):
        chosen = torch.sort(idx[:k])[0]
    else:  # a tie across the k-th place: the lowest indices among the tied entries
        kth = top[k - 1]
        above = torch.nonzero(values > kth).flatten()
        tied = torch.nonzero(values == kth).flatten()[: k - above.numel()]
        chosen = torch.cat([above, tied])
    # Entries of equal value appear in ``chosen`` in index order: a stable sort by value keeps it.
    return chosen[torch.sort(values[chosen], descending=True, stable=True)[1]]


def location_prior(sim: torch.Tensor, topk: int = 1, negative: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts from a similarity map ``[H, W]``.

    The ``topk`` most similar pixels are positive points (label 1), in decreasing similarity; with
    ``negative`` the single least similar pixel is appended as a negative point (label 0). Exact
    ties (common at the borders, where bilinear up-sampling clamps) go to the lowest row-major
    index, as the reference's CPU ``topk`` does.

    Returns:
        ``(points [k(+1), 2]`` int64 ``(x, y)``, ``labels [k(+1)]`` int64).
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be [H, W], got {tuple(sim.shape)}")
    w = sim.shape[1]
    flat = sim.reshape(-1)
    idx = top_indices(flat, topk)
    labels = [1] * int(idx.numel())
    if negative:
        idx = torch.cat([idx, flat.argmin().reshape(1)])
        labels.append(0)
    idx = idx.cpu().numpy().astype(np.int64)
    points = np.stack([idx % w, idx // w], axis=1)
    return points, np.asarray(labels, dtype=np.int64)


def target_guided_attention(
    sim: torch.Tensor,
    grid_size: tuple[int, int] = (64, 64),
    *,
    backbone: Backbone | None = None,
) -> torch.Tensor:
    """The decoder attention bias from a similarity map.

    The map is standardised (mean, unbiased std), resampled to the embedding grid and squashed with
    a sigmoid. By default it is resized *straight* to ``grid_size`` as in the reference
    implementation; for non-square SAM images that grid does not line up with the image
    embedding (which covers the padded square frame). Passing ``backbone`` instead resamples it
    with the backbone's own image geometry (:meth:`Backbone.mask_to_embedding_grid`, padding
    getting the bias of the least similar pixel); for square images both agree up to the
    resize filter.

    Args:
        sim: ``[H, W]`` or ``[K, H, W]`` original-size similarity map(s).
        grid_size: ``(h, w)`` of the embedding grid.
        backbone: align with the backbone's embedding grid (off by default, for conformance).

    A constant map (zero standard deviation) or a single-pixel map gives a uniform bias ``sigmoid(0)``
    instead of NaNs.

    Returns:
        ``[1, 1, 1, h*w]`` (``[K, 1, 1, h*w]`` for ``K`` maps).
    """
    if sim.ndim == 3:
        return torch.cat([target_guided_attention(s, grid_size, backbone=backbone) for s in sim], dim=0)
    if sim.ndim != 2:
        raise ValueError(f"sim must be [H, W] or [K, H, W], got {tuple(sim.shape)}")
    # A constant map (e.g. fully suppressed) or a single pixel carries no location: a uniform bias
    # instead of NaNs (and no std() of one value, which has no degree of freedom).
    std = torch.std(sim) if sim.numel() > 1 else sim.new_zeros(())
    s = (sim - sim.mean()) / std if bool(std > 0) else torch.zeros_like(sim)
    if backbone is None:
        grid = F.interpolate(s[None, None], size=tuple(grid_size), mode="bilinear", align_corners=False)
    else:
        grid = backbone.mask_to_embedding_grid(s, pad_value=float(s.min()))[None, None]
    return grid.sigmoid().unsqueeze(0).flatten(3).reshape(1, 1, 1, -1)


def mask_areas(backbone: Backbone, low_res: torch.Tensor) -> torch.Tensor:
    """Pixel areas of the masks of ``low_res [B, C, 256, 256]`` at the original size (the
    backbone's post-processing and threshold), one prompt set at a time so that the full-size
    logits of only one set are alive: int64 ``[B, C]`` on the CPU."""
    areas = [
        backbone.binarize(backbone.postprocess(low_res[i : i + 1])).sum(dim=(-2, -1)).cpu()
        for i in range(low_res.shape[0])
    ]
    return torch.cat(areas).to(torch.int64)


def mask_box(mask: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """Inclusive ``XYXY`` bounding box ``[x_min, y_min, x_max, y_max]`` (int64) of a boolean
    ``[H, W]`` mask, or None if it is empty."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)


def mask_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`mask_box`: ``masks [B, H, W]`` -> ``(boxes [B, 4]`` int64 (``-1`` where
    empty), ``nonempty [B]`` bool)."""
    b, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = max(h, w)
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    boxes[~nonempty] = -1
    return boxes, nonempty


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
        best_idx: ``[B]`` imposes the choice (for step-by-step reproduction), else automatic.
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
) -> Stage:
    """A cascaded post-refinement step: the same points, the previous chosen low-res logits (or
    ``mask_input``) as mask prompt and, ``with_box``, the bounding box of the previous chosen mask;
    multimask output, best by score. Prompt sets whose previous mask is empty are skipped when a
    box is needed."""
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
