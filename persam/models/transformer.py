"""SAM two-way transformer: prompt tokens and image tokens attend to each other.

PerSAM hooks (optional, off by default):

* ``attn_sim`` ``[B or 1, 1, 1, HW]``: target-guided attention. In the token-to-image
  cross-attention of every two-way block the attention probabilities become
  ``softmax(softmax(q k^T / sqrt(d)) + attn_sim)``.
* ``target_embedding`` ``[B or 1, 1, C]``: target-semantic prompt added to the tokens. See
  :meth:`TwoWayTransformer.forward` for exactly where it enters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal dimension."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"Attention: num_heads={num_heads} must divide {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, heads, N, C / heads]``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: torch.Tensor) -> torch.Tensor:
        """``[B, heads, N, c]`` -> ``[B, N, heads * c]``."""
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_sim: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``q [B, Nq, C]``, ``k, v [B, Nk, C]`` -> ``[B, Nq, C]``.

        ``attn_sim`` (``[B or 1, 1, 1, Nk]``) is added to the attention *probabilities*, which are
        then normalised by a second softmax.
        """
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        if attn_sim is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            attn = torch.softmax(attn, dim=-1)
            attn = torch.softmax(attn + attn_sim, dim=-1)
            out = attn @ v
        return self.out_proj(self._recombine_heads(out))


class TwoWayAttentionBlock(nn.Module):
    """One two-way layer: token self-attention, token-to-image cross-attention, token MLP,
    image-to-token cross-attention, each followed by a norm.

    Subclasses can change one stage by overriding the matching ``_...`` method.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = norm_layer(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = norm_layer(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = norm_layer(embedding_dim)
        self.norm4 = norm_layer(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def _self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """Token self-attention + norm. The first layer uses neither the PE nor a residual."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        return self.norm1(queries)

    def _cross_attention_token_to_image(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        attn_sim: torch.Tensor | None,
    ) -> torch.Tensor:
        q = queries + query_pe
        k = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(q=q, k=k, v=keys, attn_sim=attn_sim)
        return self.norm2(queries)

    def _mlp(self, queries: torch.Tensor) -> torch.Tensor:
        return self.norm3(queries + self.mlp(queries))

    def _cross_attention_image_to_token(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> torch.Tensor:
        q = queries + query_pe
        k = keys + key_pe
        keys = keys + self.cross_attn_image_to_token(q=k, k=q, v=queries)
        return self.norm4(keys)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        attn_sim: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``queries [B, N, C]``, ``keys [B, HW, C]`` (+ their PEs) -> updated ``(queries, keys)``."""
        queries = self._self_attention(queries, query_pe)
        queries = self._cross_attention_token_to_image(queries, keys, query_pe, key_pe, attn_sim)
        queries = self._mlp(queries)
        keys = self._cross_attention_image_to_token(queries, keys, query_pe, key_pe)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks followed by a final token-to-image attention.

    ``block_class`` builds the layers, so a variant only needs to subclass the block.
    """

    block_class: type[TwoWayAttentionBlock] = TwoWayAttentionBlock

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            self.block_class(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                norm_layer=norm_layer,
                **block_kwargs,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = norm_layer(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the two-way transformer.

        Args:
            image_embedding: ``[B, C, h, w]``.
            image_pe: ``[B, C, h, w]`` positional encoding of the image tokens.
            point_embedding: ``[B, N, C]`` decoder tokens P (output tokens + sparse prompts); they
                are also the queries' positional encoding.
            attn_sim: optional PerSAM attention bias ``[B or 1, 1, 1, h*w]``.
            target_embedding: optional PerSAM target embedding E ``[B or 1, 1, C]``.

        Returns:
            ``(queries [B, N, C], keys [B, h*w, C])``.

        With ``target_embedding`` E, PerSAM adds E to the queries before every layer and the
        reference implementation does so in place on a tensor that, before the first layer, is
        the query positional encoding itself. That aliasing is part of the published numbers and is
        reproduced explicitly: the query PE becomes P + E for every layer and for the final
        attention, layer ``i`` receives ``queries_i + E``, and the final token-to-image attention
        uses ``q = out_last + (P + E) + E`` while its residual stream stays ``out_last``.
        Without E this is plain SAM.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)

        query_pe = point_embedding
        if target_embedding is not None:
            query_pe = point_embedding + target_embedding
        queries = query_pe
        for i, layer in enumerate(self.layers):
            if target_embedding is not None and i > 0:
                queries = queries + target_embedding
            queries, keys = layer(queries, keys, query_pe=query_pe, key_pe=key_pe, attn_sim=attn_sim)

        q = queries + query_pe
        if target_embedding is not None:
            q = q + target_embedding
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q=q, k=k, v=keys)
        queries = self.norm_final_attn(queries)
        return queries, keys
