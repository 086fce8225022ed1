"""What the registry knows: model families and named models, registered once and looked up by name.

A *family* (:class:`ModelFamily`) is one module type with one backbone: it says which
:class:`~persam.backbones.base.Backbone` subclass drives its modules, how a module is built from a
config dict (a JSON config file), and, for config files written before configs named their
family, how to recognise one. A *model* (:class:`ModelSpec`) is one named architecture of a family:
its size builder (or, for the small random test models, its config) and the entry of
:data:`persam.weights.CHECKPOINTS` holding its official weights.

Builders and backbones are given as ``"module:attribute"`` strings and imported on first use, so
listing models imports neither torch nor the models. Every name is registered in
:mod:`persam.registry.zoo`; adding a family means one backbone class plus
:func:`register_family` / :func:`register` calls there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persam.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from persam.backbones.base import Backbone


def resolve_target(target: str) -> Any:
    """The object named by ``"package.module:attribute"`` (imported now)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"{target!r}: expected 'package.module:attribute'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True, kw_only=True)
class ModelFamily:
    """One module type and the backbone that drives it.

    Attributes:
        name: the family name, as config files give it under ``"family"`` (``"sam"``, ...).
        backbone: ``"module:Class"`` of its :class:`~persam.backbones.base.Backbone` subclass.
        from_config: ``"module:function"`` building a randomly initialised module from a config
            dict (the dict without its ``"family"`` key).
        recognise: for config dicts without a ``"family"`` key only: whether a config is of this
            family (``None``: such configs must name the family).
    """

    name: str
    backbone: str
    from_config: str
    recognise: Callable[[Mapping[str, Any]], bool] | None = None

    def backbone_class(self) -> type[Backbone]:
        return resolve_target(self.backbone)

    def build_from_config(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A randomly initialised module of this family described by ``cfg``."""
        return resolve_target(self.from_config)({k: v for k, v in cfg.items() if k != "family"})


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: the name users give (``--model``, :func:`persam.build_model`).
        family: name of its :class:`ModelFamily`.
        backbone: ``"module:Class"`` of the :class:`~persam.backbones.base.Backbone` subclass that
            drives it.
        builder: ``"module:function"`` building the (randomly initialised) module with no
            arguments, e.g. ``"persam.models.sam:sam_vit_b"``; ``None`` when ``config`` is given.
        config: ``"module:function"`` returning the config dict the family builds the module
            from (the small random test models); ``None`` when ``builder`` is given.
        checkpoint: name of its entry in :data:`persam.weights.CHECKPOINTS` (the official
            weights), or ``None`` when there are none.
        test_only: a small random model for tests and demos, not listed by :func:`list_models`.
    """

    name: str
    family: str
    backbone: str
    builder: str | None = None
    config: str | None = None
    checkpoint: str | None = None
    test_only: bool = False

    def __post_init__(self) -> None:
        if (self.builder is None) == (self.config is None):
            raise ValueError(f"model {self.name!r}: give exactly one of builder and config")

    def load_config(self) -> dict[str, Any]:
        """A fresh copy of the model's config dict (only for models registered with ``config``)."""
        if self.config is None:
            raise ValueError(f"model {self.name!r} is built by {self.builder}, not from a config")
        return resolve_target(self.config)()

    def build_module(self) -> nn.Module:
        """The randomly initialised module (on the current default device)."""
        if self.builder is not None:
            return resolve_target(self.builder)()
        return get_family(self.family).build_from_config(self.load_config())

    def backbone_class(self) -> type[Backbone]:
        return resolve_target(self.backbone)


_FAMILIES: dict[str, ModelFamily] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Adds a family; its name must be new."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def register(spec: ModelSpec) -> ModelSpec:
    """Adds a model of an already registered family; its name must be new."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    if spec.family not in _FAMILIES:
        raise ValueError(f"model {spec.name!r}: unknown family {spec.family!r} (register it first)")
    _MODELS[spec.name] = spec
    return spec


def list_models(*, include_test_only: bool = False) -> list[str]:
    """Names of the registered models, sorted: those with official weights (and, with
    ``include_test_only``, also the small random test models)."""
    return sorted(name for name, spec in _MODELS.items() if include_test_only or not spec.test_only)


def list_families() -> list[str]:
    """Names of the registered model families, sorted."""
    return sorted(_FAMILIES)


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered model (test-only models included)."""
    return name in _MODELS


def get_spec(name: str) -> ModelSpec:
    """The registered model ``name``.

    Raises:
        InputError: unknown name, listing the known ones.
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r} (known: {', '.join(list_models())})") from None


def get_family(name: str) -> ModelFamily:
    """The registered family ``name``.

    Raises:
        InputError: unknown family, listing the known ones.
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        raise InputError(
            f"unknown model family {name!r} (expected one of {', '.join(list_families())})"
        ) from None


def recognise_family(cfg: Mapping[str, Any]) -> ModelFamily:
    """The family of a config dict: its ``"family"`` key, else the first family (in registration
    order) that recognises it.

    Raises:
        InputError: unknown family, or no family recognises the config.
    """
    if "family" in cfg:
        return get_family(str(cfg["family"]))
    for family in _FAMILIES.values():
        if family.recognise is not None and family.recognise(cfg):
            return family
    raise InputError(
        'unrecognised model config: give its "family" '
        f"({', '.join(list_families())}), or SAM sections ('image_encoder', 'prompt_encoder', "
        "'mask_decoder') or EfficientSAM settings ('config' / 'constructor_kwargs')"
    )


def random_model_names() -> list[str]:
    """Names of the small random test models, sorted."""
    return sorted(name for name, spec in _MODELS.items() if spec.test_only)


def random_model_config(name: str) -> dict[str, Any]:
    """A fresh copy of the config of the small random test model ``name``.

    Raises:
        InputError: ``name`` is not a random test model.
    """
    spec = _MODELS.get(name)
    if spec is None or not spec.test_only or spec.config is None:
        names = ", ".join(random_model_names())
        raise InputError(f"unknown random test model {name!r}: expected one of {names}")
    return spec.load_config()
