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


def _looks_like_efficient_sam(cfg: Mapping[str, Any]) -> bool:
    """EfficientSAM build settings, nested under ``config`` (and ``constructor_kwargs``, as the
    reference recordings write them)."""
    return "constructor_kwargs" in cfg or "config" in cfg


def _looks_like_sam(cfg: Mapping[str, Any]) -> bool:
    """SAM / MobileSAM module sections."""
    return "image_encoder" in cfg and "mask_decoder" in cfg


# Configs without a "family" key are recognised in this order (EfficientSAM's settings are the
# more specific test).
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
