"""int8 image encoders for the CPU: every ``nn.Linear`` becomes an :class:`Int8Linear`.

An :class:`Int8Linear` keeps its weights as int8, one scale per output channel, and at every call
quantizes its input to int8 one token (row) at a time, multiplies in int8 with int32 accumulation
(the FBGEMM / oneDNN kernels behind ``torch.ops.quantized.linear_dynamic``) and returns float32.
Convolutions, normalisations and attention stay float32, so the encoder's interface (``[B, 3, S, S]``
float32 in, ``[B, C, h, w]`` float32 out) is unchanged. This is the scheme of torchao's int8
dynamic-activation / int8-weight configuration, run on the kernels that are fast on a CPU without
``torch.compile`` (``torch._int_mm``, which torchao's eager path uses, is more than 20x slower than
a float32 GEMM on the CPU).

Why per token. The tokens of one image differ in range by an order of magnitude (on the tiny random
models, the largest of a layer's per-token maxima is 5-10x their median). One scale per tensor,
which ``torch.ao.quantization.quantize_dynamic`` uses, spends the 7 bits the AVX2 kernels allow on
the largest token and leaves a few levels to the rest.

Embedding cosine to float32, random weights, lowest of the 4 fixture images (ViT-B: one image):

=====================  ==========  =========
encoder                per tensor  per token
=====================  ==========  =========
tiny MobileSAM         0.948       0.9986
MobileSAM (TinyViT)    0.989       0.998
SAM ViT-B              0.9993      0.9996
=====================  ==========  =========

Cost: a per-token ``max |x|``, the division of the input by it and the rescaling of the output
(one ``addcmul``), all memory-bound. On the 2-core AVX2 EPYC without VNNI (float32 = 1.00x, medians
of 3-7 interleaved runs, load ~1): SAM ViT-B 1.30x (one scale per tensor: 1.35x), SAM 2 Hiera-T
1.09x, MobileSAM 0.94x (1.09x), EfficientSAM-Ti 0.93x (0.98x). The speed-up is small on such a CPU
whatever the scheme: linear layers are ~44% of a float32 MobileSAM pass (GELU 18%, layout copies
16%, convolutions 12%, attention 9%), and int8 GEMMs without VNNI are only ~1.7x float32 ones.
OpenVINO 2026.4 with NNCF static int8 was measured too: SAM ViT-B 1.13x, MobileSAM 1.04x, with
embeddings further from float32 (cosine 0.973 and 0.898). The int8 gain needs a CPU with VNNI or
AMX.

What is left of the error is the format's: 8-bit weights and the 7-bit activations that the AVX2
kernels allow contribute about equally (simulated in float32 on MobileSAM), and a 24-layer encoder
adds up one such error per layer.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def _quantized_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` float weight -> per-output-channel symmetric ``qint8``: the scale
    ``max |w| / 127.5`` of ``torch.ao``'s per-channel weight observer, zero point 0."""
    w = weight.detach().float()
    scale = (w.abs().amax(1) / 127.5).clamp_min(torch.finfo(torch.float32).eps)
    with warnings.catch_warnings():
        # torch announces that quantized tensors will move out of core; the packed int8 GEMM
        # that needs one is still the fast CPU kernel.
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*")
        zero_point = torch.zeros_like(scale, dtype=torch.long)
        return torch.quantize_per_channel(w, scale.double(), zero_point, 0, torch.qint8)


class Int8Linear(nn.Module):
    """``nn.Linear`` in int8: per-output-channel int8 weights, inputs quantized per token.

    ``bias`` stays a float32 tensor (or None), as in ``nn.Linear``, so code that reads a layer's
    bias works on both. Inference only: nothing here has a gradient.
    """

    def __init__(self, *, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``weight``: ``[out, in]`` float; ``bias``: ``[out]`` float or None."""
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self._packed = torch.ops.quantized.linear_prepack(_quantized_weight(weight), None)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(weight=linear.weight, bias=linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in]`` float32 -> ``[..., out]`` float32."""
        # Each token scaled to [-1, 1] before the kernel's per-tensor quantization is per-token
        # quantization; a token of zeros (window padding) stays zeros.
        scale = torch.maximum(x.amax(-1, keepdim=True), -x.amin(-1, keepdim=True))
        scale = scale.clamp_min(torch.finfo(torch.float32).tiny)
        # reduce_range: 7-bit activations, so that the AVX2 kernels' 16-bit pair sums never saturate.
        y = torch.ops.quantized.linear_dynamic(x / scale, self._packed, reduce_range=True)
        if self.bias is None:
            return y.mul_(scale)
        return torch.addcmul(self.bias, y, scale, out=y)

    def extra_repr(self) -> str:
        has_bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={has_bias}"


def quantize_linear_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (on the CPU, eval mode) whose ``nn.Linear`` layers are
    :class:`Int8Linear`; ``module`` itself is unchanged.

    Raises:
        ValueError: ``module`` has parameters off the CPU (the int8 kernels are CPU-only).
    """
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU only, the module is on {sorted(devices)}")
    quantized = copy.deepcopy(module).eval()
    for parent in list(quantized.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, child_name, Int8Linear.from_linear(child))
    return quantized


def is_int8_quantized(module: nn.Module) -> bool:
    """Whether ``module`` holds :class:`Int8Linear` layers."""
    return any(isinstance(m, Int8Linear) for m in module.modules())


def int8_supported() -> bool:
    """Whether this torch build has a quantized CPU engine (FBGEMM / oneDNN / x86 / QNNPACK)."""
    return any(e != "none" for e in torch.backends.quantized.supported_engines)
