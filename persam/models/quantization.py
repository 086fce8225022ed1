"""int8 image encoders for the CPU: dynamic quantization of every ``nn.Linear``.

Each linear layer keeps its weights as per-output-channel int8 and, at every call, quantizes its
input per tensor from the observed range, multiplies in int8 with int32 accumulation (FBGEMM /
oneDNN kernels) and returns float32. Convolutions, normalisations and attention stay float32, so
the encoder's interface (``[B, 3, S, S]`` float32 in, ``[B, C, h, w]`` float32 out) is unchanged.

``torch.ao.quantization.quantize_dynamic`` is the path used: on torch 2.x CPUs it is the one with
fast int8 GEMM kernels without ``torch.compile`` (``torch._int_mm`` on the CPU is more than 20x
slower than a float32 GEMM), and it is still shipped, with deprecation notices that are silenced
here because the model cannot act on them.

Why every linear layer, and why the gain is modest (medians of 3 interleaved runs, random weights,
2-core AVX2 EPYC without VNNI, load 6-10): linear layers are ~44% of a float32 MobileSAM encoder
pass (GELU 18%, layout copies 16%, convolutions 12%, attention 9%), so even free linear layers
would cap the speed-up near 1.8x; int8 linears with per-call activation quantization run ~1.7x
faster than float32 ones here, hence ~1.2x end to end (SAM ViT-B 1.20x, EfficientSAM-T 1.15x,
MobileSAM 1.20x). Quantizing only the MLP linears is slower on ViT-B (1.07x) and EfficientSAM-T
(1.04x) and barely closer to float32 (ViT-B relative error 0.026 vs 0.027): the MLPs carry both
most of the time and most of the error.

The alternatives were measured on the same machine, quiet, ours float32 = 1.00x: OpenVINO 2026.4
with NNCF static int8 (calibrated on 3 photos) runs SAM ViT-B at 1.13x, slower than OpenVINO float32
(1.25x; 1.17x against the in-place activations of ``common.act_inplace``), and MobileSAM at 1.04x
(OpenVINO float32 0.97x), with embeddings further from float32
(cosine 0.973 and 0.898, against 0.9995 and 0.993 here). Without VNNI no int8 path reaches 1.7x.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_linear_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (on the CPU, eval mode) whose ``nn.Linear`` layers are dynamically
    quantized to int8 (per-channel weights); other layers are shared with ``module``.

    Raises:
        ValueError: ``module`` has parameters off the CPU (the int8 kernels are CPU-only).
    """
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU only, the module is on {sorted(devices)}")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch announces the move of this API to torchao; the kernels are unchanged.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*")
        return quantize_dynamic(module.eval(), {nn.Linear: per_channel_dynamic_qconfig}, inplace=False)


def is_int8_quantized(module: nn.Module) -> bool:
    """Whether ``module`` holds dynamically quantized int8 linear layers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in module.modules())


def int8_supported() -> bool:
    """Whether this torch build has a quantized CPU engine (FBGEMM / oneDNN / x86 / QNNPACK)."""
    return any(e != "none" for e in torch.backends.quantized.supported_engines)
