"""Building a module straight from a checkpoint: read the file first, build on the ``meta`` device,
take the checkpoint's tensors, then recreate the constant buffers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from persam import weights
from persam.models.common import init_constant_buffers


def module_from_checkpoint(build: Callable[[], nn.Module], path: Path, name: str) -> nn.Module:
    """The module ``build()`` makes, on the CPU, holding the tensors of the checkpoint at ``path``.

    The file is read before anything is built, so a corrupt file fails at once; the module is
    built on the ``meta`` device (no random initialisation, no memory) and takes the checkpoint
    tensors themselves, so the weights are held once.

    Raises:
        persam.errors.WeightsError: unreadable file, or a checkpoint that does not fit ``name``.
    """
    # Looked up on the package at call time, so that the reading step can be observed in tests.
    state_dict = weights.read_state_dict(path)
    with torch.device("meta"):
        module = build()
    weights.load_into(module, _cast_like(state_dict, module), path, name)
    del state_dict  # the module now holds the tensors
    materialize_constants(module)
    return module


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
