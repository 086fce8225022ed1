"""Loading MobileSAMv2's prompt-guided mask decoder into a SAM / MobileSAM backbone.

MobileSAMv2 trains SAM's prompt encoder and mask decoder for box prompts and ships them as one
file, ``Prompt_guided_Mask_Decoder.pt``: a dict ``{"PromtEncoder": state dict, "MaskDecoder":
state dict}`` whose state dicts have the key names of SAM's ``PromptEncoder`` and ``MaskDecoder``
(the encoder is any image encoder giving SAM's 256-channel embedding). Also accepted: the same
entries spelled ``"PromptEncoder"``, a flat state dict with ``prompt_encoder.`` / ``mask_decoder.``
prefixes, or a bare mask-decoder state dict.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from persam.backbones.base import Backbone
from persam.backbones.sam import SamBackbone
from persam.errors import WeightsError, first_line
from persam.weights import describe_mismatch, file_sha256

#: Entry names of MobileSAMv2's decoder file (its spelling) and the backbone module they load into.
_PARTS = {"PromtEncoder": "prompt_encoder", "PromptEncoder": "prompt_encoder", "MaskDecoder": "mask_decoder"}


def read_decoder_file(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of a decoder file by module: ``{"mask_decoder": ..., "prompt_encoder": ...}``
    (the prompt encoder only when the file has it). Only tensors and plain containers are read.

    Raises:
        WeightsError: missing, unreadable or unsafe file, or one holding no decoder state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: decoder checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{p}: cannot be loaded safely ({first_line(e, max_len=160)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{p}: not a readable PyTorch checkpoint ({first_line(e, max_len=160)})") from None
    parts: dict[str, dict[str, torch.Tensor]] = {}
    if isinstance(obj, Mapping) and any(k in _PARTS for k in obj):
        for key, part in obj.items():
            if key in _PARTS:
                parts[_PARTS[key]] = _tensors(part, p, key)
    elif isinstance(obj, Mapping) and any(
        str(k).startswith(("mask_decoder.", "prompt_encoder.")) for k in obj
    ):
        flat = _tensors(obj, p, "state dict")
        for prefix in ("mask_decoder", "prompt_encoder"):
            sub = {k[len(prefix) + 1 :]: v for k, v in flat.items() if k.startswith(prefix + ".")}
            if sub:
                parts[prefix] = sub
    elif isinstance(obj, Mapping):
        parts["mask_decoder"] = _tensors(obj, p, "state dict")
    if "mask_decoder" not in parts:
        raise WeightsError(
            f"{p}: holds no mask decoder state dict (expected MobileSAMv2's 'MaskDecoder' entry)"
        )
    return parts


def _tensors(obj: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: {what} is not a state dict")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(f"{path}: {what} entry {bad!r} is not a tensor")
    return dict(obj)


def load_decoder_checkpoint(model: Backbone, path: str | os.PathLike) -> None:
    """Replaces ``model``'s mask decoder (and prompt encoder, when the file has one) with the
    weights of a decoder file, strictly (every key, every shape); nothing changes on a mismatch.

    The backbone's ``checkpoint_id`` gains the file's digest, so concepts learned with the new
    decoder are told apart from those learned with the old one; its current image is forgotten.

    Raises:
        WeightsError: unreadable file, a backbone without SAM's decoder modules (EfficientSAM, SAM
            2), or state dicts that do not fit.
    """
    p = Path(path)
    parts = read_decoder_file(p)
    modules = {name: getattr(model.model, name, None) for name in parts}
    if not isinstance(model, SamBackbone) or any(m is None for m in modules.values()):
        raise WeightsError(
            f"{p}: a SAM mask decoder file fits SAM and MobileSAM backbones only, not {model.name!r}"
        )
    for name, state in parts.items():
        problem = describe_mismatch(modules[name].state_dict(), state)
        if problem is not None:
            raise WeightsError(f"{p}: does not fit the {name} of {model.name!r}: {problem}")
    with torch.no_grad():
        for name, state in parts.items():
            for key, target in modules[name].state_dict().items():
                target.copy_(state[key].to(target.dtype))
    model.reset_image()  # the cached positional encoding depends on the prompt encoder
    model.checkpoint_id = f"{model.checkpoint_id}+decoder:{file_sha256(p)[:16]}"
