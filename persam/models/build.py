"""Model registry: names (or JSON configs) -> modules -> ready-to-use backbones.

>>> list_models()
['efficient_sam_vit_s', 'efficient_sam_vit_t', 'mobile_sam_vit_t', 'sam_vit_b', 'sam_vit_h', 'sam_vit_l']
>>> model = build_model("sam_vit_b", checkpoint="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from persam.backbones.base import Backbone

_SAM_MODELS = "persam.models.sam"
_EFFICIENT_SAM_MODELS = "persam.models.efficient_sam"
_SAM_BACKBONE = "persam.backbones.sam:SamBackbone"
_EFFICIENT_SAM_BACKBONE = "persam.backbones.efficient_sam:EfficientSamBackbone"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: ``module:function`` of its builder and ``module:Class`` of its
    backbone (both imported on first use)."""

    builder: str
    backbone: str

    def build(self) -> nn.Module:
        return _resolve(self.builder)()


_REGISTRY: dict[str, ModelEntry] = {
    "sam_vit_b": ModelEntry(f"{_SAM_MODELS}:sam_vit_b", _SAM_BACKBONE),
    "sam_vit_l": ModelEntry(f"{_SAM_MODELS}:sam_vit_l", _SAM_BACKBONE),
    "sam_vit_h": ModelEntry(f"{_SAM_MODELS}:sam_vit_h", _SAM_BACKBONE),
    "mobile_sam_vit_t": ModelEntry(f"{_SAM_MODELS}:mobile_sam_vit_t", _SAM_BACKBONE),
    "efficient_sam_vit_t": ModelEntry(
        f"{_EFFICIENT_SAM_MODELS}:efficient_sam_vit_t", _EFFICIENT_SAM_BACKBONE
    ),
    "efficient_sam_vit_s": ModelEntry(
        f"{_EFFICIENT_SAM_MODELS}:efficient_sam_vit_s", _EFFICIENT_SAM_BACKBONE
    ),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def list_models() -> list[str]:
    """Names accepted by :func:`build_module` / :func:`build_model`."""
    return sorted(_REGISTRY)


def _load_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read model config ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a model config must be a JSON object")
    return cfg


def _config_family(cfg: dict[str, Any]) -> str:
    """``"efficient_sam"`` for EfficientSAM build settings, ``"sam"`` for SAM/MobileSAM sections."""
    if "constructor_kwargs" in cfg or "config" in cfg:
        return "efficient_sam"
    if "image_encoder" in cfg and "mask_decoder" in cfg:
        return "sam"
    raise ValueError(
        "unrecognised model config: expected SAM sections ('image_encoder', 'prompt_encoder', "
        "'mask_decoder') or EfficientSAM settings ('config' / 'constructor_kwargs')"
    )


def _from_config(cfg: dict[str, Any]) -> tuple[nn.Module, str]:
    """Module and backbone class path for a config dict."""
    if _config_family(cfg) == "efficient_sam":
        return _resolve(f"{_EFFICIENT_SAM_MODELS}:efficient_sam_from_config")(cfg), _EFFICIENT_SAM_BACKBONE
    return _resolve(f"{_SAM_MODELS}:sam_from_config")(cfg), _SAM_BACKBONE


def _build(name_or_config: str | Path | dict) -> tuple[nn.Module, str, str, str | None]:
    """Returns ``(module, name, backbone class path, registry name or None)``."""
    if isinstance(name_or_config, dict):
        module, backbone = _from_config(name_or_config)
        return module, str(name_or_config.get("name", "custom")), backbone, None
    key = str(name_or_config)
    if not isinstance(name_or_config, Path) and key in _REGISTRY:
        entry = _REGISTRY[key]
        return entry.build(), key, entry.backbone, key
    path = Path(key).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"{path}: model config file not found")
        cfg = _load_config(path)
        module, backbone = _from_config(cfg)
        return module, str(cfg.get("name", path.stem)), backbone, None
    raise ValueError(
        f"unknown model {key!r}: expected one of {', '.join(list_models())} or a JSON config file"
    )


def build_module(name_or_config: str | Path | dict) -> nn.Module:
    """A randomly initialised module from a registry name, a JSON config file or a config dict."""
    return _build(name_or_config)[0]


def _config_seed(name_or_config: str | Path | dict) -> int:
    """``_init.seed`` of a config (dict or JSON file) when it has one, else 0."""
    cfg: Any = name_or_config
    if not isinstance(cfg, dict):
        path = Path(str(name_or_config)).expanduser()
        if path.suffix.lower() != ".json" or not path.is_file():
            return 0
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError):
            return 0
    init = cfg.get("_init") if isinstance(cfg, dict) else None
    try:
        return int(init.get("seed", 0)) if isinstance(init, dict) else 0
    except (TypeError, ValueError):
        return 0


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (expected float32, bfloat16 or float16)") from None


def build_model(
    name_or_config: str | Path | dict,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int | None = None,
) -> Backbone:
    """Builds a backbone ready for :meth:`~persam.backbones.base.Backbone.set_image`.

    Args:
        name_or_config: registry name (see :func:`list_models`), JSON config file or config dict.
        checkpoint: ``None`` / ``"none"`` for random weights, ``"auto"`` for the official
            checkpoint of a registered model (downloaded into the cache if missing), or a path.
        device: where the model runs.
        dtype: image-encoder compute dtype (``float32``, ``bfloat16`` or ``float16``).
        seed: seed of the random initialisation (default: the config's ``_init.seed``, else 0).
            Random models are therefore reproducible, and their ``checkpoint_id``
            (``"random:<name>:<seed>"``) tells two differently seeded ones apart.
    """
    compute_dtype = _as_dtype(dtype)
    if seed is None:
        seed = _config_seed(name_or_config)
    # Seeded without touching the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, name, backbone_path, registry_name = _build(name_or_config)
    checkpoint_id = f"random:{name}:{seed}"
    if checkpoint is not None and str(checkpoint).lower() != "none":
        from persam.weights import checkpoint_identity, load_into, read_state_dict, resolve_checkpoint

        path = resolve_checkpoint(registry_name, checkpoint)
        load_into(module, read_state_dict(path), path, name)
        checkpoint_id = checkpoint_identity(path)
    module = module.to(torch.device(device))
    backbone_cls = _resolve(backbone_path)
    return backbone_cls(module, name, checkpoint_id, dtype=compute_dtype)
