"""Builders of SAM 2 / 2.1 models (random initialisation, official state-dict keys).

:func:`sam2_from_config` reads a config tree in the official hydra layout (a dict, e.g. the
``config`` of a fixture's ``tiny_config.json`` or :func:`~persam.models.sam2.configs.official_config`):
every ``_target_`` of the image encoder is mapped by its class name to the module of this package
that takes the same keyword arguments, the memory modules read their own subtrees; no hydra is
involved. Named builders: :func:`sam2_1_hiera_t`, ``_s``,
``_b_plus``, ``_l`` (SAM 2.1) and :func:`sam2_hiera_t`, ``_s``, ``_b_plus``, ``_l`` (SAM 2.0).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from torch import nn

from persam.models.sam2.configs import official_config
from persam.models.sam2.mask_decoder import Sam2MaskDecoder
from persam.models.sam2.memory_attention import MemoryAttention
from persam.models.sam2.memory_encoder import MemoryEncoder
from persam.models.sam2.prompt_encoder import Sam2PromptEncoder
from persam.models.sam2.sam2 import Sam2
from persam.models.sam2.transformer import Sam2TwoWayTransformer

_PKG = "persam.models.sam2"
#: Official class name -> ``module:class`` here (image encoder tree; the memory modules read their
#: own subtrees with ``from_config``).
_CLASSES = {
    "Hiera": f"{_PKG}.hiera:Hiera",
    "FpnNeck": f"{_PKG}.neck:FpnNeck",
    "ImageEncoder": f"{_PKG}.image_encoder:Sam2ImageEncoder",
    "PositionEmbeddingSine": f"{_PKG}.position_encoding:PositionEmbeddingSine",
}
_MODEL_TARGETS = ("SAM2Base", "SAM2VideoPredictor", "SAM2VideoPredictorVOS")
#: What ``build_sam2`` / ``build_sam2_video_predictor`` add to every config (apply_postprocessing).
DYNAMIC_MULTIMASK = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
#: Video-predictor settings found in some configs; they are not model options.
_PREDICTOR_OPTIONS = ("fill_hole_area", "non_overlap_masks", "clear_non_cond_mem_around_input")


def _class_name(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def _resolve(name: str) -> type[nn.Module]:
    try:
        module, attr = _CLASSES[name].split(":")
    except KeyError:
        raise ValueError(f"SAM 2 config: unsupported _target_ class {name!r}") from None
    return getattr(importlib.import_module(module), attr)


def instantiate(node: Any) -> Any:
    """Builds the modules of a config (sub)tree: dicts with ``_target_`` become modules (their
    dict-valued arguments first), lists / plain values are passed as they are."""
    if isinstance(node, dict):
        kwargs = {k: instantiate(v) for k, v in node.items() if k != "_target_"}
        if "_target_" not in node:
            return kwargs
        return _resolve(_class_name(node["_target_"]))(**kwargs)
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    return node


def _sam_heads(hidden_dim: int, image_size: int, backbone_stride: int, decoder_options: dict[str, Any]):
    """The SAM prompt encoder and mask decoder with SAM 2's fixed sizes (``_build_sam_heads``)."""
    grid = image_size // backbone_stride
    prompt_encoder = Sam2PromptEncoder(
        embed_dim=hidden_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = Sam2MaskDecoder(
        num_multimask_outputs=3,
        transformer=Sam2TwoWayTransformer(depth=2, embedding_dim=hidden_dim, mlp_dim=2048, num_heads=8),
        transformer_dim=hidden_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        **decoder_options,
    )
    return prompt_encoder, mask_decoder


def sam2_from_config(cfg: dict[str, Any], *, apply_postprocessing: bool = True) -> Sam2:
    """Builds a :class:`Sam2` from an official-layout config tree (``{"model": {...}}`` or the
    ``model`` node itself).

    With ``apply_postprocessing`` (default, as the official builders) the mask decoder uses the
    dynamic multimask fallback (0.05 / 0.98) unless the config sets those options itself.
    """
    model_cfg = copy.deepcopy(cfg.get("model", cfg))
    target = _class_name(model_cfg.pop("_target_", "SAM2Base"))
    if target not in _MODEL_TARGETS:
        raise ValueError(f"SAM 2 config: the model _target_ must be SAM2Base, got {target!r}")
    try:
        encoder_cfg = model_cfg.pop("image_encoder")
        attention_cfg = model_cfg.pop("memory_attention")
        memory_cfg = model_cfg.pop("memory_encoder")
    except KeyError as e:
        raise ValueError(f"SAM 2 config is missing the section {e.args[0]!r}") from None
    extra = dict(model_cfg.pop("sam_mask_decoder_extra_args", None) or {})
    if apply_postprocessing:
        extra = {**DYNAMIC_MULTIMASK, **extra}
    for key in _PREDICTOR_OPTIONS:
        model_cfg.pop(key, None)

    image_encoder = instantiate(encoder_cfg)
    hidden_dim = int(image_encoder.neck.d_model)
    decoder_options = {
        "use_high_res_features": model_cfg.get("use_high_res_features_in_sam", False),
        "iou_prediction_use_sigmoid": model_cfg.get("iou_prediction_use_sigmoid", False),
        "pred_obj_scores": model_cfg.get("pred_obj_scores", False),
        "pred_obj_scores_mlp": model_cfg.get("pred_obj_scores_mlp", False),
        "use_multimask_token_for_obj_ptr": model_cfg.get("use_multimask_token_for_obj_ptr", False),
        **extra,
    }
    prompt_encoder, mask_decoder = _sam_heads(
        hidden_dim, model_cfg.get("image_size", 512), model_cfg.get("backbone_stride", 16), decoder_options
    )
    try:
        return Sam2(
            image_encoder=image_encoder,
            memory_attention=MemoryAttention.from_config(attention_cfg),
            memory_encoder=MemoryEncoder.from_config(memory_cfg),
            sam_prompt_encoder=prompt_encoder,
            sam_mask_decoder=mask_decoder,
            **model_cfg,
        )
    except TypeError as e:
        raise ValueError(f"SAM 2 config: {e}") from None


def _official(name: str) -> Sam2:
    return sam2_from_config(official_config(name))


def sam2_1_hiera_t() -> Sam2:
    """SAM 2.1 Hiera-T (checkpoint ``sam2.1_hiera_tiny.pt``)."""
    return _official("sam2.1_hiera_t")


def sam2_1_hiera_s() -> Sam2:
    """SAM 2.1 Hiera-S (checkpoint ``sam2.1_hiera_small.pt``)."""
    return _official("sam2.1_hiera_s")


def sam2_1_hiera_b_plus() -> Sam2:
    """SAM 2.1 Hiera-B+ (checkpoint ``sam2.1_hiera_base_plus.pt``)."""
    return _official("sam2.1_hiera_b+")


def sam2_1_hiera_l() -> Sam2:
    """SAM 2.1 Hiera-L (checkpoint ``sam2.1_hiera_large.pt``)."""
    return _official("sam2.1_hiera_l")


def sam2_hiera_t() -> Sam2:
    """SAM 2.0 Hiera-T (checkpoint ``sam2_hiera_tiny.pt``)."""
    return _official("sam2_hiera_t")


def sam2_hiera_s() -> Sam2:
    """SAM 2.0 Hiera-S (checkpoint ``sam2_hiera_small.pt``)."""
    return _official("sam2_hiera_s")


def sam2_hiera_b_plus() -> Sam2:
    """SAM 2.0 Hiera-B+ (checkpoint ``sam2_hiera_base_plus.pt``)."""
    return _official("sam2_hiera_b+")


def sam2_hiera_l() -> Sam2:
    """SAM 2.0 Hiera-L (checkpoint ``sam2_hiera_large.pt``)."""
    return _official("sam2_hiera_l")
