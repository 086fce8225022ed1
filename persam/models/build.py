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
from persam.models.common import init_constant_buffers
from persam.models.configs import random_model_config, random_model_names

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
    """Registered architectures with official checkpoints, accepted by :func:`build_module` /
    :func:`build_model` (which also accept the small random test models of
    :mod:`persam.models.configs`)."""
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


@dataclass(frozen=True)
class _Spec:
    """A validated model argument: how to build the module, and what to call it."""

    build: Callable[[], nn.Module]
    name: str
    backbone: str
    registry_name: str | None


def _config_spec(cfg: dict[str, Any], name: str) -> _Spec:
    if _config_family(cfg) == "efficient_sam":
        builder = _resolve(f"{_EFFICIENT_SAM_MODELS}:efficient_sam_from_config")
        return _Spec(lambda: builder(cfg), name, _EFFICIENT_SAM_BACKBONE, None)
    builder = _resolve(f"{_SAM_MODELS}:sam_from_config")
    return _Spec(lambda: builder(cfg), name, _SAM_BACKBONE, None)


def _spec(name_or_config: str | Path | dict) -> _Spec:
    """Reads and checks a registry name, JSON config file or config dict without building anything."""
    if isinstance(name_or_config, dict):
        return _config_spec(name_or_config, str(name_or_config.get("name", "custom")))
    key = str(name_or_config)
    if not isinstance(name_or_config, Path) and key in _REGISTRY:
        entry = _REGISTRY[key]
        return _Spec(entry.build, key, entry.backbone, key)
    if not isinstance(name_or_config, Path) and key in random_model_names():
        return _config_spec(random_model_config(key), key)
    path = Path(key).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"{path}: model config file not found")
        cfg = _load_config(path)
        return _config_spec(cfg, str(cfg.get("name", path.stem)))
    raise ValueError(
        f"unknown model {key!r}: expected one of {', '.join(list_models())} or a JSON config file"
    )


def build_module(name_or_config: str | Path | dict) -> nn.Module:
    """A randomly initialised module from a registry name, a JSON config file or a config dict."""
    return _spec(name_or_config).build()


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


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, or a ValueError saying why it cannot be used here."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (use 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: Apple MPS is not available here (use 'cpu')")
    return dev


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

    With a checkpoint, the file is found (downloaded for ``"auto"``) and read before anything is
    built, so a missing or corrupt file fails at once; the module is then built on the ``meta``
    device (no random initialisation, no memory) and takes the checkpoint tensors themselves, so
    the weights are held once.

    Raises:
        ValueError: unknown model, bad config, dtype or device.
        persam.weights.WeightsError: checkpoint missing, unreadable or not for this model.
    """
    compute_dtype = _as_dtype(dtype)
    target = _check_device(device)
    spec = _spec(name_or_config)
    if checkpoint is not None and str(checkpoint).lower() != "none":
        module, checkpoint_id = _build_from_checkpoint(spec, checkpoint)
    else:
        if seed is None:
            seed = _config_seed(name_or_config)
        # Seeded without touching the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = spec.build()
        checkpoint_id = f"random:{spec.name}:{seed}"
    module = module.to(target)
    backbone_cls = _resolve(spec.backbone)
    return backbone_cls(module, spec.name, checkpoint_id, dtype=compute_dtype)


def _build_from_checkpoint(spec: _Spec, checkpoint: str | Path) -> tuple[nn.Module, str]:
    """``(module on the CPU holding the checkpoint's tensors, checkpoint id)``."""
    from persam.weights import checkpoint_identity, load_into, read_state_dict, resolve_checkpoint

    path = resolve_checkpoint(spec.registry_name, checkpoint)
    state_dict = read_state_dict(path)
    with torch.device("meta"):
        module = spec.build()
    load_into(module, _cast_like(state_dict, module), path, spec.name)
    del state_dict  # the module now holds the tensors
    materialize_constants(module)
    return module, checkpoint_identity(path)


def _cast_like(state_dict: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Floating-point entries converted to the dtype of the module's tensor of the same key.

    Assigning (instead of copying into) the module's tensors would otherwise keep e.g. a
    half-precision checkpoint in half precision; other entries are left for ``load_into`` to check.
    """
    expected = module.state_dict()
    out = dict(state_dict)
    for key, value in state_dict.items():
        want = expected.get(key)
        if (
            want is not None
            and value.dtype != want.dtype
            and value.is_floating_point()
            and want.is_floating_point()
        ):
            out[key] = value.to(want.dtype)
    return out


def materialize_constants(module: nn.Module) -> None:
    """Recreates the non-persistent buffers of a module loaded with ``assign=True`` on the device of
    its parameters (see :func:`persam.models.common.init_constant_buffers`), and checks that no
    tensor is left on the ``meta`` device.

    Raises:
        RuntimeError: naming a tensor that neither the checkpoint nor the module could provide.
    """
    device = next(module.parameters()).device
    init = getattr(module, "init_constant_buffers", None)
    if callable(init):
        init(device)
    else:
        init_constant_buffers(module, device)
    for kind, tensors in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for key, t in tensors:
            if t.is_meta:
                raise RuntimeError(
                    f"{type(module).__name__}: {kind} {key} was not loaded from the checkpoint and has no "
                    "init_constant_buffers() to recreate it"
                )
