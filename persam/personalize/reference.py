"""Reference features: which embedding cells a reference mask covers, and the object's feature.

1. :func:`reference_grid_mask` — the cells of the reference image embedding that belong to the
   object (:func:`best_covered_cells` for objects too small to cover any cell well);
2. :func:`target_embedding` — the object's feature (a local average / max of those cells).
"""

from __future__ import annotations

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError, MaskTooSmallError

#: How :func:`reference_cells` treats a mask that covers no cell well enough: raise
#: :class:`MaskTooSmallError`, or take the cells it covers most.
SMALL_MASK_POLICIES = ("error", "best_cells")

#: Red channel of SAM's ``pixel_mean``: the value a reference-mask pixel has to exceed (after the
#: reference implementation's normalisation) for its embedding cell to be selected.
REFERENCE_MASK_LEVEL = 123.675


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
            f"about {cell:.0f}×{cell:.0f} pixels of this {hw[1]}×{hw[0]} (W×H) image and must be covered "
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


def best_covered_cells(backbone: Backbone, mask: np.ndarray) -> torch.Tensor:
    """bool ``[h, w]``: the cells ``mask`` covers most (coverage of the mask drawn with 255), for an
    object too small to cover any cell by the usual threshold (averaging an empty set of cells
    would give NaN features)."""
    cover = reference_coverage_grid(backbone, mask, mask_value=255)
    return (cover >= cover.max()) & (cover > 0)


def reference_cells(
    backbone: Backbone,
    mask: np.ndarray,
    *,
    mask_value: int = 128,
    coverage_threshold: float | None = None,
    small_mask: str = "error",
) -> torch.Tensor:
    """:func:`reference_grid_mask`, or with ``small_mask="best_cells"`` :func:`best_covered_cells`
    where no cell is covered well enough. Returns bool ``[h, w]``."""
    if small_mask not in SMALL_MASK_POLICIES:
        raise ValueError(f"small_mask must be one of {SMALL_MASK_POLICIES}, got {small_mask!r}")
    try:
        return reference_grid_mask(
            backbone, mask, mask_value=mask_value, coverage_threshold=coverage_threshold
        )
    except MaskTooSmallError:
        if small_mask == "error":
            raise
        return best_covered_cells(backbone, mask)
