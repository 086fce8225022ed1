"""Small random models for tests, demos and benchmarks — NOT for real use.

Each function returns a fresh config dict in the format :func:`persam.registry.build_model` reads
(its ``"family"``, then SAM sections or EfficientSAM settings). With ``checkpoint="none"`` the
weights are random (seeded), so the masks mean nothing; the models keep the real 1024-pixel
geometry and every code path of their family, at a fraction of the cost:

==========================  ======================================================  =============
name                        family                                                  embedding
==========================  ======================================================  =============
``tiny_random_sam``         SAM ViT (windowed + global attention, relative pos.)    32 x 64 x 64
``tiny_random_mobile_sam``  MobileSAM (TinyViT encoder, SAM decoder)                256 x 64 x 64
``tiny_random_efficient_sam``  EfficientSAM (plain ViT, its own prompt encoder/decoder)  16 x 64 x 64
==========================  ======================================================  =============

The models are registered (test-only) in :mod:`persam.registry.zoo`: their names are accepted by
``build_model`` and every ``--model`` option (``persam segment --model tiny_random_sam --checkpoint
none ...``), but are not listed by :func:`persam.registry.list_models`.
"""

from __future__ import annotations

import copy
from typing import Any

_TINY_SAM: dict[str, Any] = {
    "name": "tiny_random_sam",
    "family": "sam",
    "image_encoder": {
        "class": "ImageEncoderViT",
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "out_chans": 32,
        "norm_layer": "LayerNorm(eps=1e-6)",
        "use_rel_pos": True,
        "window_size": 14,
        "global_attn_indexes": [1],
    },
    "prompt_encoder": {
        "embed_dim": 32,
        "image_embedding_size": [64, 64],
        "input_image_size": [1024, 1024],
        "mask_in_chans": 8,
    },
    "mask_decoder": {
        "transformer_dim": 32,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 32,
        "transformer": {"depth": 2, "embedding_dim": 32, "num_heads": 2, "mlp_dim": 64},
    },
}

# TinyViT's neck always gives 256 channels, so the decoder is 256 wide (one block keeps it cheap).
_TINY_MOBILE_SAM: dict[str, Any] = {
    "name": "tiny_random_mobile_sam",
    "family": "sam",
    "image_encoder": {
        "class": "TinyViT",
        "embed_dims": [8, 16, 16, 24],
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 2, 3],
        "window_sizes": [7, 7, 14, 7],
        "num_classes": 10,
    },
    "prompt_encoder": {
        "embed_dim": 256,
        "image_embedding_size": [64, 64],
        "input_image_size": [1024, 1024],
        "mask_in_chans": 8,
    },
    "mask_decoder": {
        "transformer_dim": 256,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 32,
        "transformer": {"depth": 1, "embedding_dim": 256, "num_heads": 2, "mlp_dim": 32},
    },
}

_TINY_EFFICIENT_SAM: dict[str, Any] = {
    "name": "tiny_random_efficient_sam",
    "family": "efficient_sam",
    "config": {
        "encoder_patch_embed_dim": 24,
        "encoder_depth": 1,
        "encoder_num_heads": 2,
        "encoder_neck_dims": [16, 16],
        "decoder_transformer_mlp_dim": 32,
        "decoder_num_heads": 2,
        "decoder_upscaling_layer_dims": [8, 4],
        "iou_head_hidden_dim": 16,
    },
}


def tiny_sam_config() -> dict[str, Any]:
    """Config of ``tiny_random_sam`` (SAM family), a fresh copy."""
    return copy.deepcopy(_TINY_SAM)


def tiny_mobile_sam_config() -> dict[str, Any]:
    """Config of ``tiny_random_mobile_sam`` (MobileSAM: SAM family, TinyViT encoder), a fresh copy."""
    return copy.deepcopy(_TINY_MOBILE_SAM)


def tiny_efficient_sam_config() -> dict[str, Any]:
    """Config of ``tiny_random_efficient_sam`` (EfficientSAM family), a fresh copy."""
    return copy.deepcopy(_TINY_EFFICIENT_SAM)
