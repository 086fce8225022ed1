"""Location prior and target-guided attention: where a new image looks like the object.

1. :func:`similarity_map` / :func:`similarity_maps` — cosine similarity of the object feature with
   every cell of a new image, brought to the original resolution;
2. :func:`location_prior` — the most (and least) similar pixels become a positive (and negative)
   point prompt;
3. :func:`target_guided_attention` — the similarity map as a bias on the decoder's token-to-image
   attention.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone


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
