"""PerSAM-F: two learned weights that blend SAM's three multimask outputs (the object's scale).

Training (on the reference image only): the decoder is prompted with the most similar reference
pixel and returns three mask logits ``l_0, l_1, l_2`` (``[3, H, W]``). The weights are
``(1 - w_1 - w_2, w_1, w_2)`` with ``w = (1/3, 1/3)`` initially (unconstrained, so they may go
negative), and the blended logits ``sum_i weight_i * l_i`` are fitted to the reference mask with
dice (+1 smoothing, on the sigmoid) + sigmoid focal loss (alpha 0.25, gamma 2, mean over pixels)
at the original resolution, AdamW (lr 1e-3, eps 1e-4, weight decay 0.01) with a cosine schedule
over ``steps`` (1000) steps.

The decoder output does not depend on the weights, so it is computed once; only the blend is in the
loop. Three engines run the same optimisation:

* ``"fast"`` (default): loss and gradient in closed form on the pre-split foreground/background
  pixels (no autograd graph); equal to the others up to float rounding (~1e-7).
* ``"autograd"``: the blend, dice and focal loss with autograd, bit-identical to re-running the
  decoder every step.
* ``"naive"``: re-runs the decoder and the post-processing every step, as the reference
  implementation does (for benchmarks only).

Few-shot: with several references, the loss is the mean of the per-reference losses (each
reference's loss being dice + focal on its own pixels); with one reference it is exactly the
one-shot loss.

:func:`fit_reference_weights` runs the whole fit for a concept being learned; inference with the
learned weights is :func:`persam.personalize.cascade.persam_f_cascade`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from persam.backbones.base import Backbone
from persam.personalize.prior import location_prior, similarity_map

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
ADAM_EPS = 1e-4
WEIGHT_DECAY = 0.01
ENGINES = ("fast", "autograd", "naive")


def initial_mask_param() -> torch.Tensor:
    """The two free weights before training: ``ones(2, 1) / 3``."""
    return torch.ones(2, 1) / 3


def mask_weights_from_param(param: torch.Tensor) -> torch.Tensor:
    """``[2, 1]`` free weights -> ``[3, 1]`` weights ``(1 - w_1 - w_2, w_1, w_2)`` of masks 0, 1, 2."""
    return torch.cat((1 - param.sum(0).unsqueeze(0), param), dim=0)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft dice loss with +1 smoothing on ``sigmoid(logits)``; ``[1, P]`` inputs, scalar output."""
    prob = logits.sigmoid().flatten(1)
    inter = 2 * (prob * target).sum(-1)
    total = prob.sum(-1) + target.sum(-1)
    return (1 - (inter + 1) / (total + 1)).sum()


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over the ``P`` pixels of ``[1, P]`` inputs."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * loss).mean(1).sum()


@dataclass
class FitResult:
    """Outcome of the PerSAM-F optimisation.

    Attributes:
        weights: float32 ``[3]`` learned weights of masks 0, 1, 2.
        param: float32 ``[2, 1]`` the two free parameters.
        loss_dice, loss_focal, loss_total: float32 ``[steps]``, loss of step ``e`` (before its
            update).
        weights_history: float32 ``[steps, 3]``, the weights used in step ``e``.
        lr_history: float64 ``[steps]``, learning rate of step ``e``.
        engine: ``"fast"``, ``"autograd"`` or ``"naive"``.
        seconds: wall time of the loop.
    """

    weights: torch.Tensor
    param: torch.Tensor
    loss_dice: np.ndarray
    loss_focal: np.ndarray
    loss_total: np.ndarray
    weights_history: np.ndarray
    lr_history: np.ndarray
    engine: str
    seconds: float


class _ClosedFormLoss:
    """Loss and gradient of the blend ``z = sum_k weight_k * l_k`` for one reference, in closed form.

    With ``u = z`` on background and ``u = -z`` on foreground pixels, ``q = sigmoid(u)`` is the
    probability given to the *wrong* class; ``sigmoid(z)`` is ``q`` or ``1 - q``, the
    cross-entropy is ``softplus(u)`` and the focal term ``alpha_t q^2 softplus(u)``.
    Every per-pixel quantity is thus a function of ``u``, which is linear in the weights:
    ``u = L^T weights`` with the signs folded into the stored logits ``L [3, P]`` (foreground
    pixels first). Per step this is ~15 vectorised passes over the pixels and no autograd graph.
    """

    def __init__(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        flat = logits.reshape(3, -1).float()
        t = target.reshape(-1).to(flat.device, torch.bool)
        self.nf = int(t.sum())
        self.n = int(t.numel())
        self.signed = torch.cat([-flat[:, t], flat[:, ~t]], dim=1).contiguous()
        self.k_fg = FOCAL_ALPHA / self.n
        self.k_bg = (1 - FOCAL_ALPHA) / self.n
        self._u = torch.empty(self.n, device=flat.device)
        self._q = torch.empty(self.n, device=flat.device)
        self._a = torch.empty(self.n, device=flat.device)

    def __call__(self, weights: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """``weights [3]`` -> ``(dice, focal, d loss / d weights [3])``."""
        u, q, a = self._u, self._q, self._a
        nf = self.nf
        torch.mv(self.signed.T, weights, out=u)
        torch.sigmoid(u, out=q)
        s = F.softplus(u)  # the cross-entropy of every pixel
        sum_qf = float(q[:nf].sum())
        sum_qb = float(q[nf:].sum())
        numer = 2.0 * (nf - sum_qf) + 1.0  # 2 * sum of sigmoid(z) over the foreground, + 1
        denom = (sum_qb + nf - sum_qf) + nf + 1.0
        dice = 1.0 - numer / denom
        torch.mul(q, q, out=a)
        focal = self.k_fg * float(torch.dot(a[:nf], s[:nf])) + self.k_bg * float(torch.dot(a[nf:], s[nf:]))
        # d focal / d u = alpha_t q^2 (2 (1 - q) softplus(u) + q);
        # d dice / d u = c q (1 - q) with c = (2D - N) / D^2 on foreground, N / D^2 on background.
        b = 1.0 - q
        torch.addcmul(q, b, s, value=2.0, out=s)
        s.mul_(a)
        b.mul_(q)
        c_fg = (2.0 * denom - numer) / denom**2
        c_bg = numer / denom**2
        b[:nf].mul_(c_fg / self.k_fg)
        b[nf:].mul_(c_bg / self.k_bg)
        b.add_(s)
        grad = torch.mv(self.signed[:, :nf], b[:nf]).mul_(self.k_fg)
        grad.add_(torch.mv(self.signed[:, nf:], b[nf:]), alpha=self.k_bg)
        return dice, focal, grad


def fit_mask_weights(
    high_res_logits: Sequence[torch.Tensor] | Callable[[], torch.Tensor],
    ref_masks: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
    *,
    steps: int = 1000,
    lr: float = 1e-3,
    engine: str = "fast",
    progress: bool = False,
) -> FitResult:
    """Fits the two PerSAM-F mask weights.

    Args:
        high_res_logits: per reference, the ``[3, H, W]`` multimask logits at the original size
            (:func:`reference_training_logits`); for ``engine="naive"`` a callable returning them
            (called every step; one reference).
        ref_masks: per reference, bool ``[H, W]`` target mask.
        steps: optimisation steps (cosine schedule length).
        lr: AdamW learning rate.
        engine: ``"fast"``, ``"autograd"`` or ``"naive"`` (see the module docstring).
        progress: show a progress bar.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(ref_masks, (np.ndarray, torch.Tensor)):
        ref_masks = [ref_masks]
    targets = [
        torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m).to(torch.bool)
        for m in ref_masks
    ]
    if engine == "naive":
        if not callable(high_res_logits) or len(targets) != 1:
            raise ValueError("engine='naive' needs a callable producing the logits and one reference")
        logits_fn = high_res_logits
        logits_list: list[torch.Tensor] = []
        device = logits_fn().device  # one extra decoder call, outside the timed loop
    else:
        if callable(high_res_logits):
            raise ValueError(f"engine={engine!r} needs the precomputed logits, not a callable")
        logits_list = [torch.as_tensor(x).float() for x in high_res_logits]
        if len(logits_list) != len(targets):
            raise ValueError(f"{len(logits_list)} logits for {len(targets)} reference masks")
        for x, t in zip(logits_list, targets, strict=True):
            if x.ndim != 3 or x.shape[0] != 3 or tuple(x.shape[1:]) != tuple(t.shape):
                raise ValueError(f"logits {tuple(x.shape)} do not match a [3, H, W] mask {tuple(t.shape)}")
        device = logits_list[0].device

    # Everything lives on the device of the decoder output; the histories are kept on the CPU.
    param = torch.nn.Parameter(initial_mask_param().to(device))
    optimizer = torch.optim.AdamW([param], lr=lr, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_dice = np.zeros(steps, np.float32)
    loss_focal = np.zeros(steps, np.float32)
    loss_total = np.zeros(steps, np.float32)
    w_hist = np.zeros((steps, 3), np.float32)
    lr_hist = np.zeros(steps, np.float64)

    t_float = [t.to(device).float().reshape(1, -1) for t in targets]
    flats = [x.flatten(1) for x in logits_list]
    closed = (
        [_ClosedFormLoss(x, t) for x, t in zip(logits_list, targets, strict=True)] if engine == "fast" else []
    )
    n_ref = len(targets)

    start = time.perf_counter()
    for step in tqdm(range(steps), disable=not progress, desc="PerSAM-F", leave=False):
        lr_hist[step] = optimizer.param_groups[0]["lr"]
        if engine == "fast":
            with torch.no_grad():
                weights = mask_weights_from_param(param)
                w_hist[step] = weights[:, 0].cpu().numpy()
                dice = focal = 0.0
                grad = torch.zeros(3, device=device)
                for c in closed:
                    d, f, g = c(weights[:, 0])
                    dice, focal, grad = dice + d, focal + f, grad + g
                if n_ref > 1:
                    dice, focal, grad = dice / n_ref, focal / n_ref, grad / n_ref
                loss_dice[step], loss_focal[step] = dice, focal
                loss_total[step] = np.float32(dice) + np.float32(focal)
                # Chain rule through weight_0 = 1 - w_1 - w_2.
                param.grad = (grad[1:] - grad[0]).reshape(2, 1).to(param.dtype)
        else:
            weights = mask_weights_from_param(param)
            w_hist[step] = weights.detach()[:, 0].cpu().numpy()
            if engine == "naive":
                with torch.no_grad():
                    flats = [logits_fn().reshape(3, -1)]
            dices, focals = [], []
            for flat, t in zip(flats, t_float, strict=True):
                blended = (flat * weights).sum(0).unsqueeze(0)
                dices.append(dice_loss(blended, t))
                focals.append(sigmoid_focal_loss(blended, t))
            if n_ref == 1:
                dice_t, focal_t = dices[0], focals[0]
                loss = dice_t + focal_t
            else:
                dice_t, focal_t = torch.stack(dices).mean(), torch.stack(focals).mean()
                loss = torch.stack([d + f for d, f in zip(dices, focals, strict=True)]).mean()
            loss_dice[step], loss_focal[step], loss_total[step] = dice_t.item(), focal_t.item(), loss.item()
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - start

    final = mask_weights_from_param(param.detach())[:, 0].cpu()
    return FitResult(
        final,
        param.detach().cpu().clone(),
        loss_dice,
        loss_focal,
        loss_total,
        w_hist,
        lr_hist,
        engine,
        seconds,
    )


@dataclass
class TrainingPrompt:
    """The reference-image decoder output PerSAM-F is trained on.

    Attributes:
        points: int64 ``[1, 2]`` the most similar reference pixel (x, y); labels int64 ``[1]``.
        high_res_logits: ``[3, H, W]`` multimask logits at the original size.
        low_res_logits: ``[3, 256, 256]``; scores ``[3]``.
        sim: ``[H, W]`` reference similarity map.
    """

    points: np.ndarray
    labels: np.ndarray
    high_res_logits: torch.Tensor
    low_res_logits: torch.Tensor
    scores: torch.Tensor
    sim: torch.Tensor


def reference_training_logits(backbone: Backbone, target_feat: torch.Tensor) -> TrainingPrompt:
    """PerSAM-F's self location prior on the current (reference) image and the decoder's three
    mask logits for it (one positive point, multimask output)."""
    _, sim = similarity_map(backbone, target_feat)
    points, labels = location_prior(sim, topk=1, negative=False)
    out = backbone.decode(
        torch.as_tensor(points, device=backbone.device)[None],
        torch.as_tensor(labels, device=backbone.device)[None],
        multimask_output=True,
    )
    high = backbone.postprocess(out.low_res_logits)[0]
    return TrainingPrompt(points, labels, high, out.low_res_logits[0], out.iou_predictions[0], sim)


def naive_logits_fn(backbone: Backbone, points: np.ndarray, labels: np.ndarray) -> Callable[[], torch.Tensor]:
    """A callable re-running the decoder and post-processing (for ``engine="naive"``)."""
    pc = torch.as_tensor(points, device=backbone.device)[None]
    pl = torch.as_tensor(labels, device=backbone.device)[None]

    def run() -> torch.Tensor:
        out = backbone.decode(pc, pl, multimask_output=True)
        return backbone.postprocess(out.low_res_logits)[0]

    return run


def fit_reference_weights(
    backbone: Backbone,
    images: Sequence[np.ndarray | None],
    masks: Sequence[np.ndarray],
    target_feat: torch.Tensor,
    *,
    steps: int = 1000,
    lr: float = 1e-3,
    engine: str = "fast",
    progress: bool = False,
) -> tuple[FitResult, list[list[list[int]]]]:
    """PerSAM-F's fit for a concept being learned from ``N`` references.

    Args:
        backbone: with the last reference image set (the others are encoded again).
        images: per reference ``uint8 [H, W, 3]`` (the last may be None: it is the current image).
        masks: per reference bool ``[H, W]``.
        target_feat: ``[1, C]`` the concept's normalised feature.

    Returns:
        ``(fit, training points)``: the optimisation result and, per reference, the ``(x, y)``
        training point(s).
    """
    if engine == "naive" and len(masks) != 1:
        raise ValueError("engine='naive' supports a single reference")
    last = len(masks) - 1
    prompts: dict[int, TrainingPrompt] = {}
    for i in [last, *range(last)]:
        if i != last:
            backbone.set_image(images[i])
        prompts[i] = reference_training_logits(backbone, target_feat)
    ordered = [prompts[i] for i in range(len(masks))]
    if engine == "naive":  # one reference, still the current image
        source: Sequence[torch.Tensor] | Callable[[], torch.Tensor] = naive_logits_fn(
            backbone, ordered[0].points, ordered[0].labels
        )
    else:
        source = [p.high_res_logits for p in ordered]
    fit = fit_mask_weights(
        source,
        [torch.from_numpy(np.asarray(m)) for m in masks],
        steps=steps,
        lr=lr,
        engine=engine,
        progress=progress,
    )
    return fit, [p.points.tolist() for p in ordered]
