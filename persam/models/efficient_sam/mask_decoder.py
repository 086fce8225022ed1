"""EfficientSAM's mask decoder: SAM's two-way transformer and decoder with EfficientSAM's blocks
and heads.

In the two-way blocks the query self-attention keeps its residual in the first layer and adds the
query positional embedding into the residual stream in later layers; the MLPs are
``layers.<i>.0`` + ``fc`` with GELU everywhere, and the output upscaling uses ``GroupNorm(1, C)``
instead of :class:`~persam.models.common.LayerNorm2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from persam.models.mask_decoder import MaskDecoder
from persam.models.transformer import TwoWayAttentionBlock, TwoWayTransformer


class EfficientSamMLP(nn.Module):
    """``num_layers`` hidden ``Linear + act`` stages (``layers.<i>.0``) and a linear output ``fc``."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act: type[nn.Module]
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden_dim), act()) for d in dims)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class EfficientSamTwoWayAttentionBlock(TwoWayAttentionBlock):
    """SAM's two-way block with EfficientSAM's query self-attention and MLP.

    The first layer keeps the self-attention residual; later layers add the query PE into the
    residual stream (and into the values) before attending.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.GELU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(
            embedding_dim,
            num_heads,
            mlp_dim,
            activation,
            attention_downsample_rate,
            skip_first_layer_pe,
            norm_layer,
        )
        self.mlp = EfficientSamMLP(embedding_dim, mlp_dim, embedding_dim, 1, activation)

    def _self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        return self.norm1(queries + self.self_attn(q=queries, k=queries, v=queries))


class EfficientSamTwoWayTransformer(TwoWayTransformer):
    """SAM's two-way transformer (PerSAM hooks included) built from EfficientSAM blocks."""

    block_class = EfficientSamTwoWayAttentionBlock


class EfficientSamMaskDecoder(MaskDecoder):
    """SAM's mask decoder with EfficientSAM's heads.

    Differences: ``final_output_upscaling_layers`` (``ConvT -> GroupNorm(1, C) -> act`` for every
    stage but the last, which has no norm), GELU MLP heads (:class:`EfficientSamMLP`), no dense
    prompt, and prompts arriving as ``[B, Q, T, C]`` for ``B`` images with ``Q`` queries each.
    ``iou_head_depth`` counts the hidden ``Linear + act`` stages of the IoU head (its output ``fc``
    comes on top), as in the official decoder.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 2,
        iou_head_hidden_dim: int = 256,
        upscaling_layer_dims: Sequence[int] = (64, 32),
    ) -> None:
        if num_multimask_outputs < 2:
            raise ValueError(f"num_multimask_outputs must be at least 2, got {num_multimask_outputs}")
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=activation,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            mlp_activation=activation,
        )
        del self.output_upscaling
        stages = []
        in_dim = transformer_dim
        for i, out_dim in enumerate(upscaling_layer_dims):
            last = i == len(upscaling_layer_dims) - 1
            norm = nn.Identity() if last else nn.GroupNorm(1, out_dim)
            stages.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2), norm, activation()
                )
            )
            in_dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(stages)
        self.output_hypernetworks_mlps = nn.ModuleList(
            EfficientSamMLP(transformer_dim, transformer_dim, in_dim, 2, activation)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = EfficientSamMLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, activation
        )
        # Keep the official state_dict order (upscaling before the heads).
        for name in ("output_hypernetworks_mlps", "iou_prediction_head"):
            self._modules[name] = self._modules.pop(name)

    def _upscale(self, src: torch.Tensor) -> torch.Tensor:
        for stage in self.final_output_upscaling_layers:
            src = stage(src)
        return src

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts masks for ``Q`` queries on each of ``B`` images.

        Args:
            image_embeddings: ``[B, C, h, w]``; image ``b`` is shared by its ``Q`` queries.
            image_pe: ``[1, C, h, w]``.
            sparse_prompt_embeddings: ``[B, Q, T, C]``.
            multimask_output: True returns mask tokens 1..3, False mask token 0.
            attn_sim: ``[B*Q or 1, 1, 1, h*w]`` PerSAM attention bias, or None.
            target_embedding: ``[B*Q or 1, 1, C]`` PerSAM target embedding, or None.

        Returns:
            ``(masks [B*Q, K, 4h, 4w] logits, iou_pred [B*Q, K])`` in query-major order.
        """
        b, q, t, c = sparse_prompt_embeddings.shape
        if image_embeddings.shape[0] != 1:
            if image_embeddings.shape[0] != b:
                raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompt batches")
            image_embeddings = image_embeddings.repeat_interleave(q, dim=0)
        # No dense prompt: the image embedding enters the transformer unchanged (+ 0).
        return super().forward(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings.reshape(b * q, t, c),
            image_embeddings.new_zeros(()),
            multimask_output,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
