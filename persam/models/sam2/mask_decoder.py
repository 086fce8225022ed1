"""SAM 2's mask decoder.

What differs from SAM's (:class:`persam.models.mask_decoder.MaskDecoder`):

* an **object-score token** in front of the IoU token (``pred_obj_scores``): decoder tokens are
  ``[obj_score, iou, mask_0..mask_3] + sparse prompts``; its output goes through
  ``pred_obj_score_head`` to one logit per prompt set ("is the object there?");
* **high-resolution skips** (``use_high_res_features``): the stride-8 and stride-4 encoder levels,
  projected by ``conv_s1`` / ``conv_s0`` (once per image, by the caller), are added after each
  transposed convolution of the up-scaling path;
* IoU predictions may go through a sigmoid (``iou_prediction_use_sigmoid``);
* single-mask calls may fall back to the best multimask output when token 0 is unstable
  (``dynamic_multimask_via_stability``, eval mode only): stability =
  ``count(l > delta) / count(l > -delta)`` over the 256x256 logits (1 when nothing exceeds
  ``-delta``), fallback when it is below ``thresh``.

The PerSAM hooks ``attn_sim`` / ``target_embedding`` are passed to the two-way transformer
unchanged (:mod:`persam.models.transformer`); ``target_embedding`` is thus added to every decoder
token, the object-score token included.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from persam.models.common import LayerNorm2d
from persam.models.mask_decoder import MLP, _batched


class Sam2AllMasks(NamedTuple):
    """Every mask token's output for ``B`` prompt sets (``M = num_multimask_outputs + 1``)."""

    masks: torch.Tensor  # [B, M, 4h, 4w] logits
    iou_predictions: torch.Tensor  # [B, M]
    mask_tokens: torch.Tensor  # [B, M, C] mask-token outputs of the transformer
    object_score_logits: torch.Tensor  # [B, 1]


class Sam2DecoderResult(NamedTuple):
    """The selected outputs of one decoder call.

    ``sam_tokens_out`` is what the video model turns into object pointers: the 3 multimask tokens
    with ``multimask_output`` and ``use_multimask_token_for_obj_ptr``, else token 0 (always token
    0 for single-mask calls, even after a dynamic fallback, as the official decoder does).
    """

    masks: torch.Tensor  # [B, C, 4h, 4w] logits, C = 3 (multimask) or 1
    iou_predictions: torch.Tensor  # [B, C]
    sam_tokens_out: torch.Tensor  # [B, 3 or 1, C_tok]
    object_score_logits: torch.Tensor  # [B, 1]
    all_iou_predictions: torch.Tensor  # [B, M] before selection
    stability_scores: torch.Tensor  # [B] stability of mask token 0
    fallback_used: torch.Tensor | None  # [B] bool for dynamic single-mask calls, else None


class Sam2MaskDecoder(nn.Module):
    """Predicts masks, IoU scores and object scores from an image embedding and prompt embeddings.

    Keyword-only arguments with the official names (``sam2.modeling.sam.mask_decoder.MaskDecoder``);
    state-dict keys as the official module.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1, stride=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3)
                if pred_obj_scores_mlp
                else nn.Linear(transformer_dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        *,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> Sam2DecoderResult:
        """Predicts and selects masks for ``B`` prompt sets.

        Args:
            image_embeddings: ``[1 or B, C, h, w]``; one embedding is shared by all prompt sets.
            image_pe: ``[1, C, h, w]``.
            sparse_prompt_embeddings: ``[B, T, C]``.
            dense_prompt_embeddings: ``[B or 1, C, h, w]``.
            multimask_output: True selects tokens 1..3; False token 0 (or, with the dynamic
                fallback in eval mode, the best of 1..3 by IoU where token 0 is unstable).
            high_res_features: ``[feat_s0 [1 or B, C/8, 4h, 4w], feat_s1 [1 or B, C/4, 2h, 2w]]``,
                already projected by ``conv_s0`` / ``conv_s1``; required with
                ``use_high_res_features``.
            attn_sim, target_embedding: optional PerSAM hooks, see :mod:`persam.models.transformer`.
        """
        out = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            high_res_features=high_res_features,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
        stability = self.stability_scores(out.masks[:, 0])
        fallback = None
        if multimask_output:
            masks, iou = out.masks[:, 1:], out.iou_predictions[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou, fallback = self._dynamic_single_mask(out.masks, out.iou_predictions, stability)
        else:
            masks, iou = out.masks[:, 0:1], out.iou_predictions[:, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            tokens = out.mask_tokens[:, 1:]
        else:
            tokens = out.mask_tokens[:, 0:1]
        return Sam2DecoderResult(
            masks, iou, tokens, out.object_score_logits, out.iou_predictions, stability, fallback
        )

    def _tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, (1) + 1 + M + T, C]``: object-score token (if any), IoU token, mask tokens, prompts."""
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            parts.insert(0, self.obj_score_token.weight)
        output_tokens = torch.cat(parts, dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        return torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

    def _upscale(self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, C/8, 4h, 4w]``, with the high-resolution skips if enabled."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        if high_res_features is None:
            raise ValueError("Sam2MaskDecoder: high_res_features are required (use_high_res_features=True)")
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        x = act1(ln1(dc1(src) + feat_s1))
        return act2(dc2(x) + feat_s0)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        *,
        high_res_features: list[torch.Tensor] | None = None,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> Sam2AllMasks:
        """Outputs of all ``M`` mask tokens (no selection); arguments as :meth:`forward`."""
        tokens = self._tokens(sparse_prompt_embeddings)
        b = tokens.shape[0]
        src = _batched(image_embeddings, b) + dense_prompt_embeddings
        pos_src = _batched(image_pe, b)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens, attn_sim=attn_sim, target_embedding=target_embedding)
        s = 1 if self.pred_obj_scores else 0
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]

        upscaled = self._upscale(src.transpose(1, 2).reshape(b, c, h, w), high_res_features)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            # No object head: the object is always taken as present (sigmoid(10) ~ 1).
            object_score_logits = 10.0 * iou_pred.new_ones(b, 1)
        return Sam2AllMasks(masks, iou_pred, mask_tokens_out, object_score_logits)

    # ------------------------------------------------------------ selection
    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """``[..., H, W]`` logits -> ``[...]`` ``count(l > delta) / count(l > -delta)`` (1 if empty)."""
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(flat > delta, dim=-1).float()
        area_u = torch.sum(flat > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_single_mask(
        self, all_masks: torch.Tensor, all_iou: torch.Tensor, stability: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token 0 where it is stable, else the best multimask output by predicted IoU.

        Returns ``(masks [B, 1, H, W], iou [B, 1], fallback_used [B] bool)``.
        """
        multi_iou = all_iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(all_masks.shape[0], device=all_masks.device)
        best_masks = all_masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        stable = stability >= self.dynamic_multimask_stability_thresh
        masks = torch.where(stable[:, None, None, None], all_masks[:, 0:1], best_masks)
        iou = torch.where(stable[:, None], all_iou[:, 0:1], best_iou)
        return masks, iou, ~stable
