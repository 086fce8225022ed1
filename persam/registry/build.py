"""Model names (or JSON configs) -> modules -> ready-to-use backbones.

>>> list_models()
['efficient_sam_vit_s', 'efficient_sam_vit_t', 'mobile_sam_vit_t', 'sam_vit_b', 'sam_vit_h', 'sam_vit_l']
>>> model = build_model("sam_vit_b", checkpoint="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from persam import weights
from persam.devices import resolve_device, resolve_dtype
from persam.errors import InputError, WeightsError
from persam.models.quantization import quantize_linear_int8
from persam.registry.loading import module_from_checkpoint
from persam.registry.specs import (
    ModelFamily,
    get_family,
    get_spec,
    is_registered,
    list_models,
    recognise_family,
    resolve_target,
)

if TYPE_CHECKING:
    from persam.backbones.base import Backbone

ModelArg = str | Path | Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """A checked model argument: how to build the module, and what to call it.

    Attributes:
        name: the model's name (registry name, the config's ``"name"``, or the config file's stem).
        family: its family.
        backbone: ``"module:Class"`` of its backbone.
        build: builds the randomly initialised module.
        checkpoint: its entry in :data:`persam.weights.CHECKPOINTS`, or ``None``.
        registered: whether ``name`` is a registered model (a config is not).
        seed: default seed of its random initialisation (a config's ``_init.seed``, else 0).
    """

    name: str
    family: ModelFamily
    backbone: str
    build: Callable[[], nn.Module]
    checkpoint: str | None
    registered: bool
    seed: int = 0


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read model config ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: model config is not a JSON text file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: a model config must be a JSON object")
    return cfg


def _config_seed(cfg: Mapping[str, Any]) -> int:
    """``_init.seed`` of a config when it has one, else 0."""
    init = cfg.get("_init")
    try:
        return int(init.get("seed", 0)) if isinstance(init, dict) else 0
    except (TypeError, ValueError):
        return 0


def _from_config(cfg: Mapping[str, Any], name: str) -> ModelChoice:
    family = recognise_family(cfg)
    return ModelChoice(
        name=name,
        family=family,
        backbone=family.backbone,
        build=lambda: family.build_from_config(cfg),
        checkpoint=None,
        registered=False,
        seed=_config_seed(cfg),
    )


def resolve_model(name_or_config: ModelArg) -> ModelChoice:
    """Reads and checks a registered name, a JSON config file or a config dict without building
    anything.

    Raises:
        InputError: unknown name, missing or unreadable config file, or a config of no known family.
    """
    if isinstance(name_or_config, Mapping):
        return _from_config(name_or_config, str(name_or_config.get("name", "custom")))
    key = str(name_or_config)
    if not isinstance(name_or_config, Path) and is_registered(key):
        spec = get_spec(key)
        seed = _config_seed(spec.load_config()) if spec.config is not None else 0
        return ModelChoice(
            name=spec.name,
            family=get_family(spec.family),
            backbone=spec.backbone,
            build=spec.build_module,
            checkpoint=spec.checkpoint,
            registered=True,
            seed=seed,
        )
    path = Path(key).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise InputError(f"{path}: model config file not found")
        cfg = _read_config(path)
        try:
            return _from_config(cfg, str(cfg.get("name", path.stem)))
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
    raise InputError(
        f"unknown model {key!r}: expected one of {', '.join(list_models())} or a JSON config file"
    )


def build_module(name_or_config: ModelArg) -> nn.Module:
    """A randomly initialised module from a registered name, a JSON config file or a config dict."""
    return resolve_model(name_or_config).build()


def build_model(
    name_or_config: ModelArg,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    seed: int | None = None,
) -> Backbone:
    """Builds a backbone ready for :meth:`~persam.backbones.base.Backbone.set_image`.

    Args:
        name_or_config: registered name (see :func:`list_models`; the small random test models
            too), JSON config file or config dict.
        checkpoint: ``None`` / ``"none"`` for random weights, ``"auto"`` for the official
            checkpoint of a registered model (downloaded into the cache if missing), or a path.
        device: where the model runs (``"auto"`` picks the best available, see
            :func:`persam.devices.resolve_device`).
        dtype: image-encoder precision: ``"auto"`` (bfloat16 where the device computes in it
            natively, else float32; see :func:`persam.devices.auto_dtype`), ``float32``,
            ``bfloat16``, ``float16`` (autocast, weights stay float32) or ``int8`` (CPU only: the
            encoder's linear layers dynamically quantized, see
            :func:`persam.models.quantization.quantize_linear_int8`). The backbone's ``dtype``
            attribute holds the result (``torch.int8`` for int8).
        seed: seed of the random initialisation (default: the config's ``_init.seed``, else 0).
            Random models are therefore reproducible, and their ``checkpoint_id``
            (``"random:<name>:<seed>"``) tells two differently seeded ones apart.

    With a checkpoint, the file is found (downloaded for ``"auto"``) and read before anything is
    built, so a missing or corrupt file fails at once; the module is then built on the ``meta``
    device and takes the checkpoint tensors themselves, so the weights are held once.

    Raises:
        InputError: unknown model, bad config, dtype or device (a ``ValueError``).
        WeightsError: checkpoint missing, unreadable or not for this model.
    """
    target = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, target)
    choice = resolve_model(name_or_config)
    if checkpoint is not None and str(checkpoint).lower() != "none":
        path = _checkpoint_path(choice, checkpoint)
        module = module_from_checkpoint(choice.build, path, choice.name)
        checkpoint_id = weights.checkpoint_identity(path)
    else:
        seed = choice.seed if seed is None else seed
        # Seeded without touching the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = choice.build()
        checkpoint_id = f"random:{choice.name}:{seed}"
    module = module.to(target)
    backbone_cls: type[Backbone] = resolve_target(choice.backbone)
    if compute_dtype is not torch.int8:
        return backbone_cls(module, name=choice.name, checkpoint_id=checkpoint_id, dtype=compute_dtype)
    module.image_encoder = quantize_linear_int8(module.image_encoder)
    backbone = backbone_cls(module, name=choice.name, checkpoint_id=checkpoint_id, dtype=torch.float32)
    # The int8 encoder computes in float32 between its quantized layers, so it runs without
    # autocast, which a backbone applies to the 16-bit dtypes only.
    backbone.dtype = torch.int8
    return backbone


def _checkpoint_path(choice: ModelChoice, checkpoint: str | Path) -> Path:
    """The checkpoint file: the given path, or for ``"auto"`` the model's official file (cached,
    or downloaded first)."""
    if str(checkpoint) == "auto" and choice.registered and choice.checkpoint is None:
        raise WeightsError(
            f"{choice.name} has no official checkpoint: pass a checkpoint path, or 'none' for random weights"
        )
    return weights.resolve_checkpoint(choice.checkpoint, checkpoint)
