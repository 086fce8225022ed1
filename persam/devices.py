"""Where and in which precision a model runs: one resolver for every interface.

``build_model``, the command line and the web demo all turn a user's ``--device`` / ``--dtype``
choice into a :class:`torch.device` / :class:`torch.dtype` here, so an unavailable accelerator or
a mistyped name gives the same one-line :class:`~persam.errors.InputError` everywhere. ``auto``
precision picks bfloat16 only where the hardware computes in it (see :func:`auto_dtype`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from persam.errors import InputError, first_line

if TYPE_CHECKING:  # torch is imported on first use: importing this module must stay cheap
    import torch

#: Device names the interfaces offer (``cuda:N`` is accepted as well).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Precisions of the image encoder, by their canonical name. ``auto`` picks per device (see
#: :func:`auto_dtype`); ``int8`` quantizes the encoder's linear layers (CPU only).
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "int8")

_DTYPE_ALIASES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "int8": "int8",
    "qint8": "int8",
}
_EXPECTED = "expected auto, float32, bfloat16, float16 or int8"

#: CPU feature flags (``torch.cpu.get_capabilities`` / ``/proc/cpuinfo`` names) that compute in
#: bfloat16 / float16 in hardware; without them oneDNN converts to float32 and back.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"})
CPU_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "fp16_arith", "fphp"})


class EmulatedPrecisionWarning(UserWarning):
    """A 16-bit precision was chosen on a CPU without hardware support for it."""


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


def cpu_features() -> frozenset[str]:
    """Lower-case feature flags of this machine's CPU.

    ``torch.cpu.get_capabilities()`` (recent torch) where it exists, else the ``flags`` /
    ``Features`` line of ``/proc/cpuinfo`` (Linux); an empty set when neither is readable."""
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return frozenset(str(k).lower() for k, v in get().items() if v is True)
        except Exception:  # a failing probe must not stop a model from loading
            pass
    return proc_cpuinfo_flags()


def proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first ``flags`` (x86) / ``Features`` (Arm) line of ``path``; empty when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.lower().split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 in hardware (AVX512-BF16, AMX-BF16, Arm BF16)."""
    return bool(cpu_features() & CPU_BF16_FLAGS)


def cpu_native_fp16() -> bool:
    """Whether this CPU computes in float16 in hardware (AVX512-FP16, AMX-FP16, Arm FP16)."""
    return bool(cpu_features() & CPU_FP16_FLAGS)


def auto_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The precision ``auto`` picks on ``device``: bfloat16 where the hardware computes in it (a
    CUDA GPU with ``torch.cuda.is_bf16_supported()``, a CPU with :func:`cpu_native_bf16`),
    float32 elsewhere (MPS included)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif dev.type == "cpu":
        native = cpu_native_bf16()
    else:
        native = False
    return torch.bfloat16 if native else torch.float32


def resolve_dtype(
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
    *,
    option: str = "dtype",
) -> torch.dtype:
    """The image encoder's precision as a :class:`torch.dtype`.

    Args:
        dtype: ``auto`` (or None: :func:`auto_dtype` of ``device``; float32 without a device),
            ``float32``, ``bfloat16``, ``float16``, ``int8`` (aliases ``fp32``, ``bf16``,
            ``fp16``) or the :class:`torch.dtype` itself. ``int8`` comes back as ``torch.int8``:
            dynamic int8 quantization of the encoder's linear layers, activations in float32.
        device: where the model runs; enables ``auto``, the CPU-only check of ``int8`` and an
            :class:`EmulatedPrecisionWarning` for a 16-bit precision on a CPU without it.
        option: how the caller names the setting in messages (``"--dtype"`` on the command line).

    Raises:
        InputError: any other value, or ``int8`` on an accelerator, in one line.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.int8):
            raise InputError(f"{option} {dtype}: unsupported dtype ({_EXPECTED})")
        name = str(dtype).removeprefix("torch.")
    else:
        name = "auto" if dtype is None else _DTYPE_ALIASES.get(str(dtype).strip().lower())
        if name is None:
            raise InputError(f"unknown {option} {dtype!r} ({_EXPECTED})")
    if name == "auto":
        return auto_dtype(device) if device is not None else torch.float32
    resolved: torch.dtype = getattr(torch, name)
    if device is None:
        return resolved
    dev = torch.device(device)
    if resolved is torch.int8 and dev.type != "cpu":
        raise InputError(f"{option} int8: int8 runs on the CPU only (on {dev.type} use auto or bfloat16)")
    if dev.type == "cpu" and resolved in (torch.bfloat16, torch.float16):
        native = cpu_native_bf16() if resolved is torch.bfloat16 else cpu_native_fp16()
        if not native:
            warnings.warn(
                EmulatedPrecisionWarning(
                    f"{option} {name}: this CPU has no native {name} arithmetic, it is emulated "
                    f"(results differ more from float32; {option} auto picks float32 here)"
                ),
                stacklevel=2,
            )
    return resolved
