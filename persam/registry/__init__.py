"""The model registry: every model family and model name, and building them.

* :mod:`~persam.registry.specs`: :class:`ModelFamily`, :class:`ModelSpec`, :func:`register`,
  :func:`get_spec`, :func:`list_models`;
* :mod:`~persam.registry.zoo`: the registrations themselves (the one table of model names);
* :mod:`~persam.registry.configs`: configs of the small random test models;
* :mod:`~persam.registry.build`: :func:`build_module` and :func:`build_model` (names or JSON
  configs -> modules -> backbones).

>>> import persam
>>> model = persam.build_model("sam_vit_b", checkpoint="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from persam.registry import zoo as _zoo  # noqa: F401  (registers every model)
from persam.registry.configs import tiny_efficient_sam_config, tiny_mobile_sam_config, tiny_sam_config
from persam.registry.specs import (
    ModelFamily,
    ModelSpec,
    get_family,
    get_spec,
    is_registered,
    list_families,
    list_models,
    random_model_config,
    random_model_names,
    recognise_family,
    register,
    register_family,
)

if TYPE_CHECKING:
    from persam.registry.build import ModelChoice, build_model, build_module, resolve_model
    from persam.registry.loading import materialize_constants

# Building imports torch and the models: done on first use, so that listing names stays cheap.
_LAZY = {
    "ModelChoice": "persam.registry.build",
    "build_model": "persam.registry.build",
    "build_module": "persam.registry.build",
    "resolve_model": "persam.registry.build",
    "materialize_constants": "persam.registry.loading",
}

__all__ = [
    "ModelChoice",
    "ModelFamily",
    "ModelSpec",
    "build_model",
    "build_module",
    "get_family",
    "get_spec",
    "is_registered",
    "list_families",
    "list_models",
    "materialize_constants",
    "random_model_config",
    "random_model_names",
    "recognise_family",
    "register",
    "register_family",
    "resolve_model",
    "tiny_efficient_sam_config",
    "tiny_mobile_sam_config",
    "tiny_sam_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
