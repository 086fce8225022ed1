"""Where and in which precision a model runs: one resolver for every interface.

``build_model``, the command line and the web demo all turn a user's ``--device`` / ``--dtype``
choice into a :class:`torch.device` / :class:`torch.dtype` here, so an unavailable accelerator or
a mistyped name gives the same one-line :class:`~persam.errors.InputError` everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from persam.errors import InputError, first_line

if TYPE_CHECKING:  # torch is imported on first use: importing this module must stay cheap
    import torch

#: Device names the interfaces offer (``cuda:N`` is accepted as well).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Compute dtypes of the image encoder, by their canonical name.
DTYPE_CHOICES = ("float32", "bfloat16", "float16")

_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def _mps_available(torch_module) -> bool:
    mps = getattr(torch_module.backends, "mps", None)
    return mps is not None and mps.is_available()


def best_device() -> torch.device:
    """The fastest available device: ``cuda``, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available(torch):
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device = "auto", *, option: str = "device") -> torch.device:
    """``device`` as a usable :class:`torch.device`.

    Args:
        device: ``"auto"`` (see :func:`best_device`), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
            or a :class:`torch.device`.
        option: how the caller names the setting in messages (``"--device"`` on the command line).

    Raises:
        InputError: one line naming the device: unknown name, or an accelerator this machine
            (or this torch build) does not have.
    """
    import torch

    if isinstance(device, str) and device.strip().lower() == "auto":
        return best_device()
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as e:
        reason = first_line(e, max_len=120)
        raise InputError(
            f"{option} {device!r}: unknown device ({reason}; expected auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{option} {device}: CUDA is not available here (use cpu or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{option} {device}: only {count} CUDA device(s) here")
    elif dev.type == "mps" and not _mps_available(torch):
        raise InputError(f"{option} {device}: Apple MPS is not available here (use cpu or auto)")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise InputError(f"{option} {device}: unsupported device type (expected auto, cpu, cuda or mps)")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "float32", *, option: str = "dtype") -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` (or ``fp32`` / ``bf16`` / ``fp16``, or the
    :class:`torch.dtype` itself) as a :class:`torch.dtype`.

    Raises:
        InputError: any other value, in one line.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
        raise InputError(f"{option} {dtype}: unsupported dtype (expected float32, bfloat16 or float16)")
    name = _DTYPE_ALIASES.get(str(dtype).strip().lower())
    if name is None:
        raise InputError(f"unknown {option} {dtype!r} (expected float32, bfloat16 or float16)")
    return getattr(torch, name)
