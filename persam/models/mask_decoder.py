"""SAM mask decoder: two-way transformer over output tokens + prompts, transposed-convolution
upscaling of the image tokens and hypernetwork MLPs that turn mask tokens into mask weights."""

from __future__ import annotations

import torch
from torch import nn

from persam.models.common import LayerNorm2d


class MLP(nn.Module):
    """``num_layers`` linear layers with ``act`` between them (none after the last)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, outs, strict=True))
        self.act = act()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.act(x)
        if self.sigmoid_output:
            x = torch.sigmoid(x)
        return x


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask_outputs + 1`` masks and their IoU scores from an image embedding
    and prompt embeddings.

    Subclasses can swap submodules and override :meth:`_upscale`, :meth:`_hypernetwork`,
    :meth:`_iou` or :meth:`predict_masks`.
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
        upscaling_norm: type[nn.Module] = LayerNorm2d,
        mlp_activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            upscaling_norm(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3, act=mlp_activation)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, act=mlp_activation
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts masks for ``B`` prompt sets on one image (or ``B`` images).

        Args:
            image_embeddings: ``[1 or B, C, h, w]``; a single embedding is shared by all prompt sets.
            image_pe: ``[1, C, h, w]``.
            sparse_prompt_embeddings: ``[B, T, C]``.
            dense_prompt_embeddings: ``[B, C, h, w]`` (or ``[1, C, h, w]``).
            multimask_output: True returns masks 1..3, False mask 0.
            attn_sim, target_embedding: optional PerSAM hooks, see :mod:`persam.models.transformer`.

        Returns:
            ``(masks [B, C_out, 4h, 4w] logits, iou_pred [B, C_out])``.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def _tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + num_mask_tokens + T, C]``: IoU token, mask tokens, then the prompts."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        return torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

    def _upscale(self, src: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, C/8, 4h, 4w]``."""
        return self.output_upscaling(src)

    def _hypernetwork(self, mask_tokens_out: torch.Tensor) -> torch.Tensor:
        """``[B, num_mask_tokens, C]`` -> per-mask weights ``[B, num_mask_tokens, C/8]``."""
        return torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )

    def _iou(self, iou_token_out: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` -> ``[B, num_mask_tokens]``."""
        return self.iou_prediction_head(iou_token_out)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``[B, M, 4h, 4w]`` and IoU predictions ``[B, M]``."""
        tokens = self._tokens(sparse_prompt_embeddings)
        b = tokens.shape[0]
        src = _batched(image_embeddings, b) + dense_prompt_embeddings
        pos_src = _batched(image_pe, b)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens, attn_sim=attn_sim, target_embedding=target_embedding)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self._upscale(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = self._hypernetwork(mask_tokens_out)
        _, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        return masks, self._iou(iou_token_out)


def _batched(x: torch.Tensor, b: int) -> torch.Tensor:
    """Shares a single ``[1, ...]`` tensor across ``b`` prompt sets (a view, no copy)."""
    if x.shape[0] == b:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"MaskDecoder: cannot pair {x.shape[0]} image embeddings with {b} prompt sets")
    return x.expand(b, *x.shape[1:])
