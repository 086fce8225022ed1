"""SAM 2 / 2.1 model descriptions in the official (hydra) layout, as plain dicts.

:func:`official_config` gives the tree of ``sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml`` and
``sam2/configs/sam2/sam2_hiera_{t,s,b+,l}.yaml`` (``{"model": {...}}``, ``_target_`` names as
there); :func:`tiny_sam2_config` a small random model for tests and demos (NOT for real use: the
masks mean nothing). Both are read by :func:`persam.models.sam2.build.sam2_from_config`.
"""

from __future__ import annotations

import copy
from typing import Any

_SINE = "sam2.modeling.position_encoding.PositionEmbeddingSine"
_ROPE = "sam2.modeling.sam.transformer.RoPEAttention"

#: Trunk settings per size (everything else is shared; unset Hiera options take their defaults).
_TRUNKS: dict[str, dict[str, Any]] = {
    "t": {"embed_dim": 96, "num_heads": 1, "stages": [1, 2, 7, 2], "global_att_blocks": [5, 7, 9]},
    "s": {"embed_dim": 96, "num_heads": 1, "stages": [1, 2, 11, 2], "global_att_blocks": [7, 10, 13]},
    "b+": {"embed_dim": 112, "num_heads": 2},
    "l": {
        "embed_dim": 144,
        "num_heads": 2,
        "stages": [2, 6, 36, 4],
        "global_att_blocks": [23, 33, 43],
        "window_spec": [8, 4, 16, 8],
    },
}
_SMALL_BKG = {"window_pos_embed_bkg_spatial_size": [7, 7]}  # t, s and l; b+ keeps the default 14x14

#: Official config names -> (version, size).
OFFICIAL_CONFIGS: dict[str, tuple[str, str]] = {
    f"{prefix}_hiera_{size}": (version, size)
    for version, prefix in (("2.1", "sam2.1"), ("2.0", "sam2"))
    for size in ("t", "s", "b+", "l")
}


def _rope(d_model: int, heads: int, feat: int, **extra: Any) -> dict[str, Any]:
    return {
        "_target_": _ROPE,
        "rope_theta": 10000.0,
        "feat_sizes": [feat, feat],
        **extra,
        "embedding_dim": d_model,
        "num_heads": heads,
        "downsample_rate": 1,
        "dropout": 0.1,
    }


def _model_tree(
    *,
    trunk: dict[str, Any],
    d_model: int,
    mem_dim: int,
    ffn_dim: int,
    memory_layers: int,
    fuser_layers: int,
    version: str,
    explicit_memory_in_dim: bool = False,
) -> dict[str, Any]:
    """The ``{"model": ...}`` tree of one SAM 2 model (official option names and values)."""
    embed, stages = trunk["embed_dim"], len(trunk.get("stages", (2, 3, 16, 3)))
    channels = [embed * 2**i for i in range(stages)][::-1]
    mask_downsampler: dict[str, Any] = {
        "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
        "kernel_size": 3,
        "stride": 2,
        "padding": 1,
    }
    memory_encoder: dict[str, Any] = {
        "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
        "out_dim": mem_dim,
        "position_encoding": {
            "_target_": _SINE,
            "num_pos_feats": mem_dim,
            "normalize": True,
            "scale": None,
            "temperature": 10000,
        },
        "mask_downsampler": mask_downsampler,
        "fuser": {
            "_target_": "sam2.modeling.memory_encoder.Fuser",
            "layer": {
                "_target_": "sam2.modeling.memory_encoder.CXBlock",
                "dim": d_model,
                "kernel_size": 7,
                "padding": 3,
                "layer_scale_init_value": 1e-6,
                "use_dwconv": True,
            },
            "num_layers": fuser_layers,
        },
    }
    if explicit_memory_in_dim:  # the official defaults (256) only fit d_model = 256
        memory_encoder["in_dim"] = d_model
        mask_downsampler["embed_dim"] = d_model
    model: dict[str, Any] = {
        "_target_": "sam2.modeling.sam2_base.SAM2Base",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
            "scalp": 1,
            "trunk": {"_target_": "sam2.modeling.backbones.hieradet.Hiera", **trunk},
            "neck": {
                "_target_": "sam2.modeling.backbones.image_encoder.FpnNeck",
                "position_encoding": {
                    "_target_": _SINE,
                    "num_pos_feats": d_model,
                    "normalize": True,
                    "scale": None,
                    "temperature": 10000,
                },
                "d_model": d_model,
                "backbone_channel_list": channels,
                "fpn_top_down_levels": [2, 3],
                "fpn_interp_model": "nearest",
            },
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention",
            "d_model": d_model,
            "pos_enc_at_input": True,
            "layer": {
                "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
                "activation": "relu",
                "dim_feedforward": ffn_dim,
                "dropout": 0.1,
                "pos_enc_at_attn": False,
                "self_attention": _rope(d_model, 1, 64),
                "d_model": d_model,
                "pos_enc_at_cross_attn_keys": True,
                "pos_enc_at_cross_attn_queries": False,
                "cross_attention": _rope(d_model, 1, 64, rope_k_repeat=True, kv_in_dim=mem_dim),
            },
            "num_layers": memory_layers,
        },
        "memory_encoder": memory_encoder,
        "num_maskmem": 7,
        "image_size": 1024,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "no_obj_embed_spatial": True,
        "use_high_res_features_in_sam": True,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": True,
        "proj_tpos_enc_in_obj_ptrs": True,
        "use_signed_tpos_enc_to_obj_ptrs": True,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
    }
    if version == "2.0":
        # SAM 2.0: no spatial no-object embedding, no temporal encoding of object pointers.
        del model["no_obj_embed_spatial"]
        del model["proj_tpos_enc_in_obj_ptrs"], model["use_signed_tpos_enc_to_obj_ptrs"]
        model["add_tpos_enc_to_obj_ptrs"] = False
    return {"model": model}


def official_config(name: str) -> dict[str, Any]:
    """The config tree of an official model: ``"sam2.1_hiera_t"`` ... ``"sam2_hiera_l"`` (also
    ``b_plus`` for ``b+``)."""
    key = name.replace("b_plus", "b+")
    if key not in OFFICIAL_CONFIGS:
        raise ValueError(f"unknown SAM 2 config {name!r} (expected one of {sorted(OFFICIAL_CONFIGS)})")
    version, size = OFFICIAL_CONFIGS[key]
    trunk = {**_TRUNKS[size], **({} if size == "b+" else _SMALL_BKG)}
    return _model_tree(
        trunk=trunk, d_model=256, mem_dim=64, ffn_dim=2048, memory_layers=4, fuser_layers=2, version=version
    )


def tiny_sam2_config() -> dict[str, Any]:
    """A small random SAM 2.1 model (every module type and option of ``sam2.1_hiera_t``, tiny
    widths): Hiera 8 -> 64 channels with one block per stage (windowed, then global attention at
    stride 32), 32-dim decoder, 16-dim memory. For tests and demos only."""
    trunk = {
        "embed_dim": 8,
        "num_heads": 1,
        "stages": [1, 1, 1, 1],
        "global_att_blocks": [3],
        "window_pos_embed_bkg_spatial_size": [7, 7],
    }
    cfg = _model_tree(
        trunk=trunk,
        d_model=32,
        mem_dim=16,
        ffn_dim=64,
        memory_layers=1,
        fuser_layers=1,
        version="2.1",
        explicit_memory_in_dim=True,
    )
    cfg["name"] = "tiny_random_sam2"
    cfg["family"] = "sam2"
    return copy.deepcopy(cfg)
