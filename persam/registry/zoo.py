"""Every model family and model persam knows, registered in this one place.

A new family adds a backbone class (in :mod:`persam.backbones`), one :func:`register_family` call
and one :func:`register` call per model size below; its official checkpoint files go into
:data:`persam.weights.CHECKPOINTS` under the names the specs point at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persam.registry.specs import ModelFamily, ModelSpec, register, register_family

_SAM_BACKBONE = "persam.backbones.sam:SamBackbone"
_EFFICIENT_SAM_BACKBONE = "persam.backbones.efficient_sam:EfficientSamBackbone"
_SAM2_BACKBONE = "persam.backbones.sam2:Sam2Backbone"


def _sam2_model_node(cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The official ``model`` node of a SAM 2 config tree: ``{"model": {...}}`` as the official
    YAML files have it, or that tree under ``"config"`` (as recordings of the official code store it)."""
    for tree in (cfg, cfg.get("config")):
        node = tree.get("model") if isinstance(tree, Mapping) else None
        if isinstance(node, Mapping) and "image_encoder" in node and "memory_attention" in node:
            return node
    return None


def _looks_like_sam2(cfg: Mapping[str, Any]) -> bool:
    """An official SAM 2 config tree (Hiera image encoder, memory attention / encoder)."""
    return _sam2_model_node(cfg) is not None


def sam2_from_any_config(cfg: Mapping[str, Any]) -> Any:
    """A SAM 2 module from an official config tree, also when nested under ``"config"``."""
    from persam.models.sam2 import sam2_from_config

    node = _sam2_model_node(cfg)
    return sam2_from_config({"model": dict(node)} if node is not None else dict(cfg))


def _looks_like_efficient_sam(cfg: Mapping[str, Any]) -> bool:
    """EfficientSAM build settings, nested under ``config`` (and ``constructor_kwargs``, as the
    reference recordings write them)."""
    return "constructor_kwargs" in cfg or "config" in cfg


def _looks_like_sam(cfg: Mapping[str, Any]) -> bool:
    """SAM / MobileSAM module sections."""
    return "image_encoder" in cfg and "mask_decoder" in cfg


# Configs without a "family" key are recognised in this order (SAM 2's tree is the most specific
# test, then EfficientSAM's settings).
register_family(
    ModelFamily(
        name="sam2",
        backbone=_SAM2_BACKBONE,
        from_config="persam.registry.zoo:sam2_from_any_config",
        recognise=_looks_like_sam2,
    )
)
register_family(
    ModelFamily(
        name="efficient_sam",
        backbone=_EFFICIENT_SAM_BACKBONE,
        from_config="persam.models.efficient_sam:efficient_sam_from_config",
        recognise=_looks_like_efficient_sam,
    )
)
register_family(
    ModelFamily(
        name="sam",
        backbone=_SAM_BACKBONE,
        from_config="persam.models.sam:sam_from_config",
        recognise=_looks_like_sam,
    )
)

for _size in ("b", "l", "h"):
    register(
        ModelSpec(
            name=f"sam_vit_{_size}",
            family="sam",
            backbone=_SAM_BACKBONE,
            builder=f"persam.models.sam:sam_vit_{_size}",
            checkpoint=f"sam_vit_{_size}",
        )
    )
register(
    ModelSpec(
        name="mobile_sam_vit_t",
        family="sam",
        backbone=_SAM_BACKBONE,
        builder="persam.models.sam:mobile_sam_vit_t",
        checkpoint="mobile_sam_vit_t",
    )
)
for _size in ("t", "s"):
    register(
        ModelSpec(
            name=f"efficient_sam_vit_{_size}",
            family="efficient_sam",
            backbone=_EFFICIENT_SAM_BACKBONE,
            builder=f"persam.models.efficient_sam:efficient_sam_vit_{_size}",
            checkpoint=f"efficient_sam_vit_{_size}",
        )
    )

# SAM 2.1 (2024-09) and SAM 2 (2024-07): Hiera tiny / small / base+ / large.
for _version, _prefix in (("2.1", "sam2.1"), ("2", "sam2")):
    for _size, _fn in (("t", "t"), ("s", "s"), ("b+", "b_plus"), ("l", "l")):
        register(
            ModelSpec(
                name=f"{_prefix}_hiera_{_size}",
                family="sam2",
                backbone=_SAM2_BACKBONE,
                builder=f"persam.models.sam2:{_prefix.replace('.', '_')}_hiera_{_fn}",
                checkpoint=f"{_prefix}_hiera_{_size}",
            )
        )

# Small random models for tests and demos (see persam.registry.configs).
register(
    ModelSpec(
        name="tiny_random_sam",
        family="sam",
        backbone=_SAM_BACKBONE,
        config="persam.registry.configs:tiny_sam_config",
        test_only=True,
    )
)
register(
    ModelSpec(
        name="tiny_random_mobile_sam",
        family="sam",
        backbone=_SAM_BACKBONE,
        config="persam.registry.configs:tiny_mobile_sam_config",
        test_only=True,
    )
)
register(
    ModelSpec(
        name="tiny_random_efficient_sam",
        family="efficient_sam",
        backbone=_EFFICIENT_SAM_BACKBONE,
        config="persam.registry.configs:tiny_efficient_sam_config",
        test_only=True,
    )
)
register(
    ModelSpec(
        name="tiny_random_sam2",
        family="sam2",
        backbone=_SAM2_BACKBONE,
        config="persam.models.sam2:tiny_sam2_config",
        test_only=True,
    )
)
