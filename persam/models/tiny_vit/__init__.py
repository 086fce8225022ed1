"""TinyViT, the image encoder of MobileSAM (``vit_t``): :mod:`.layers` (convolutional and MLP
blocks), :mod:`.attention` (windowed attention and the TinyViT block), :mod:`.model` (the network).

A 4-stage hierarchical network (Wu et al., "TinyViT", ECCV 2022) as modified by MobileSAM:

* a convolutional patch embedding (two 3x3 stride-2 conv + BatchNorm) to 1/4 resolution,
* stage 0: MBConv blocks (inverted residuals) on the 1/4 grid,
* stages 1-3: TinyViT blocks = windowed self-attention with learned relative attention biases,
  a depthwise "local" convolution and an MLP,
* patch merging between stages; MobileSAM keeps the last merging at stride 1 so that the encoder
  output stays at 1/16 of the input (64x64 for a 1024x1024 image),
* the SAM neck (conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d) to a 256-channel embedding.

State-dict keys match the official MobileSAM checkpoint (``weights/mobile_sam.pt``), including the
unused classification head ``norm_head`` / ``head``. The relative-position index table
``attention_bias_idxs`` is a non-persistent buffer computed without reading tensor values, so the
model can be built on ``torch.device("meta")`` (then :meth:`Attention.init_constant_buffers`
recreates it on a real device).
"""

from __future__ import annotations

from persam.models.tiny_vit.attention import (
    Attention,
    TinyViTBlock,
    attention_bias_index,
    window_partition,
    window_unpartition,
)
from persam.models.tiny_vit.layers import ConvBN, DropPath, MBConv, Mlp, PatchEmbed, PatchMerging
from persam.models.tiny_vit.model import BasicLayer, ConvLayer, TinyViT

__all__ = [
    "Attention",
    "BasicLayer",
    "ConvBN",
    "ConvLayer",
    "DropPath",
    "MBConv",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "TinyViT",
    "TinyViTBlock",
    "attention_bias_index",
    "window_partition",
    "window_unpartition",
]
