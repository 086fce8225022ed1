"""``persam info``: versions, compute devices, available models and cached checkpoints."""

from __future__ import annotations

import argparse
import platform
from types import ModuleType


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show versions, devices, models and cached checkpoints",
        description="Print the persam, Python and torch versions, the usable compute devices, the "
        "model registry and which official checkpoints are in the local cache.",
    )
    parser.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    import torch

    import persam

    print(f"persam   {persam.__version__}")
    print(f"python   {platform.python_version()} ({platform.python_implementation()}, {platform.system()})")
    print(f"torch    {torch.__version__}")
    print("devices")
    for line in _device_lines(torch):
        print(f"  {line}")
    print(f"dtype    {_auto_dtype_line()}")
    print(f"malloc   {_allocator_line()}")
    print(f"models   {_models_line()}")
    for line in _weights_lines():
        print(line)
    return 0


def _device_lines(torch: ModuleType) -> list[str]:
    lines = [f"cpu      {torch.get_num_threads()} threads, {_cpu_precision()}"]
    if torch.cuda.is_available():
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gib = props.total_memory / 2**30
            lines.append(f"cuda:{i}   {props.name}, {gib:.0f} GiB, bf16 {bf16}")
    else:
        lines.append(f"cuda     not available{_cuda_hint(torch)}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        lines.append("mps      available")
    elif platform.system() == "Darwin":
        lines.append("mps      not available")
    return lines


def _cuda_hint(torch: ModuleType) -> str:
    # A CPU-only wheel cannot see a GPU no matter what the machine has.
    return " (CPU-only torch build)" if torch.version.cuda is None else ""


def _allocator_line() -> str:
    from persam.allocator import ENV_VAR, tune_cpu_allocator

    if tune_cpu_allocator():
        return f"large freed blocks kept for reuse (glibc; {ENV_VAR}=system turns it off)"
    return "the system's default"


def _models_line() -> str:
    try:
        from persam.registry import list_models

        models = list_models()
    except Exception as e:  # a diagnostic command reports problems rather than failing on them
        return f"unavailable ({type(e).__name__}: {e})"
    return ", ".join(models) if models else "(none registered)"


def _weights_lines() -> list[str]:
    try:
        from persam import registry, weights

        folder = weights.checkpoints_dir()
        # Registered models with official weights, by the name --model takes.
        specs = [registry.get_spec(name) for name in registry.list_models()]
        rows = [(spec.name, weights.cache_state(spec.checkpoint)) for spec in specs if spec.checkpoint]
    except Exception as e:
        return [f"weights  unavailable ({type(e).__name__}: {e})"]
    lines = [f"weights  {folder}"]
    width = max((len(name) for name, _ in rows), default=0)
    for name, state in rows:
        shown = {"no": "not cached", "yes": "cached"}.get(state, f"cached, {state.removeprefix('yes, ')}")
        lines.append(f"  {name.ljust(width)}  {shown}")
    n = sum(state != "no" for _, state in rows)
    lines.append(f"  {n} of {len(rows)} official checkpoints cached (download: persam weights download NAME)")
    return lines


def _cpu_precision() -> str:
    """The CPU's vector unit and whether it computes in bfloat16 / float16 natively."""
    from persam.devices import cpu_native_bf16, cpu_native_fp16

    capability = _torch_capability()
    bf16 = "native" if cpu_native_bf16() else "emulated"
    fp16 = "native" if cpu_native_fp16() else "emulated"
    return f"{capability}, bf16 {bf16}, fp16 {fp16}"


def _torch_capability() -> str:
    """The SIMD level torch's CPU kernels use (``AVX2``, ``AVX512``, ...), or ``unknown``."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # a diagnostic command reports what it can
        return "unknown"


def _auto_dtype_line() -> str:
    """What ``--dtype auto`` picks on the device ``--device auto`` picks."""
    from persam.devices import auto_dtype, best_device

    device = best_device()
    picked = str(auto_dtype(device)).removeprefix("torch.")
    return f"auto -> {picked} on {device.type} (bfloat16 only where the hardware computes in it)"
