"""SAM 2's two-way transformer: SAM's (:mod:`persam.models.transformer`, PerSAM hooks included) with
the token MLP stored as ``mlp.layers.{0,1}`` (SAM 2's generic MLP) instead of ``mlp.lin{1,2}``.
The arithmetic is the same."""

from __future__ import annotations

from torch import nn

from persam.models.mask_decoder import MLP
from persam.models.transformer import TwoWayAttentionBlock, TwoWayTransformer


class Sam2TwoWayAttentionBlock(TwoWayAttentionBlock):
    """:class:`~persam.models.transformer.TwoWayAttentionBlock` with SAM 2's MLP key layout."""

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
        super().__init__(
            embedding_dim,
            num_heads,
            mlp_dim=mlp_dim,
            activation=activation,
            attention_downsample_rate=attention_downsample_rate,
            skip_first_layer_pe=skip_first_layer_pe,
            norm_layer=norm_layer,
        )
        # Re-assigning keeps the module's place in the state dict (between norm2 and norm3).
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2, act=activation)


class Sam2TwoWayTransformer(TwoWayTransformer):
    """:class:`~persam.models.transformer.TwoWayTransformer` built from :class:`Sam2TwoWayAttentionBlock`."""

    block_class = Sam2TwoWayAttentionBlock
