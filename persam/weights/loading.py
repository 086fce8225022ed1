"""Loading a state dict into a module strictly, explaining a mismatch in one line (e.g. a ViT-B
checkpoint handed to a ViT-H model)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from persam.errors import WeightsError, first_line
from persam.weights.cache import PathLike

if TYPE_CHECKING:
    from torch import Tensor, nn


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(s) for s in t.shape) + "]"


_SAM_DIMS = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h"}
_EFFICIENT_SAM_DIMS = {192: "efficient_sam_vit_t", 384: "efficient_sam_vit_s"}
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


def infer_model_name(state_dict: Mapping[str, Tensor]) -> str | None:
    """Guesses which registry model a state dict belongs to from characteristic keys and shapes.

    Returns e.g. ``"sam_vit_b"``, ``"mobile_sam_vit_t"``, ``"efficient_sam_vit_s"``, or ``None``.
    """
    patch = state_dict.get(_PATCH_KEY)
    dim = int(patch.shape[0]) if patch is not None and patch.dim() == 4 else None
    if any(k.startswith("mask_decoder.final_output_upscaling_layers.") for k in state_dict):
        return _EFFICIENT_SAM_DIMS.get(dim) if dim is not None else None
    if any(k.startswith("image_encoder.layers.") for k in state_dict):
        return "mobile_sam_vit_t"
    if dim is not None and "mask_decoder.output_upscaling.0.weight" in state_dict:
        return _SAM_DIMS.get(dim)
    return None


def _differs(got: Tensor | None, want: Tensor) -> bool:
    return got is not None and got.shape != want.shape


def _first_shape_mismatch(
    expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]
) -> tuple[str, Tensor, Tensor] | None:
    mismatches = [(k, state_dict[k], t) for k, t in expected.items() if _differs(state_dict.get(k), t)]
    # The patch embedding is the most telling difference between encoder sizes.
    mismatches.sort(key=lambda m: m[0] != _PATCH_KEY)
    return mismatches[0] if mismatches else None


def describe_mismatch(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> str | None:
    """Missing / unexpected keys and shape differences between two state dicts, in one line."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    n_shape = sum(1 for k, t in expected.items() if _differs(state_dict.get(k), t))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) != 1)} (first: {missing[0]})")
    if unexpected:
        n = len(unexpected)
        parts.append(f"{n} unexpected key{'s' * (n != 1)} (first: {unexpected[0]})")
    first = _first_shape_mismatch(expected, state_dict)
    if first is not None:
        key, got, want = first
        parts.append(
            f"{n_shape} shape mismatch{'es' * (n_shape != 1)} (first: {key} is {_shape(got)}, "
            f"expected {_shape(want)})"
        )
    return ", ".join(parts) if parts else None


def load_into(module: nn.Module, state_dict: Mapping[str, Tensor], path: PathLike, model_name: str) -> None:
    """Loads ``state_dict`` (read from ``path``) into ``module`` strictly.

    Modules built on the ``meta`` device get the checkpoint tensors assigned instead of copied.

    Raises:
        WeightsError: naming the file and the problem, e.g. ``sam_vit_b_01ec64.pth is not a
            sam_vit_h checkpoint: it looks like sam_vit_b (shape of ... is [768,3,16,16], expected
            [1280,3,16,16])``.
    """
    name = Path(path).name
    expected = module.state_dict()
    problem = describe_mismatch(expected, state_dict)
    if problem is not None:
        guess = infer_model_name(state_dict)
        if guess is not None and guess != model_name:
            first = _first_shape_mismatch(expected, state_dict)
            if first is not None:
                key, got, want = first
                why = f"shape of {key} is {_shape(got)}, expected {_shape(want)}"
            else:
                why = problem
            article = "an" if model_name[:1] in tuple("aeiou") else "a"
            raise WeightsError(
                f"{name} is not {article} {model_name} checkpoint: it looks like {guess} ({why})"
            )
        raise WeightsError(f"{name} does not fit {model_name}: {problem}")
    on_meta = any(t.is_meta for t in expected.values())
    try:
        module.load_state_dict(dict(state_dict), strict=True, assign=on_meta)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise WeightsError(
            f"{name} cannot be loaded into {model_name}: {first_line(e, max_len=200)}"
        ) from None
