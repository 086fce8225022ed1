"""Small building blocks shared by the SAM image encoder, prompt encoder and mask decoder."""

from __future__ import annotations

import torch
from torch import nn


def is_tracing() -> bool:
    """Whether the running forward is being traced into a graph (TorchScript trace,
    ``torch.compile``, ``torch.export``). Caches keyed on storage pointers and version counters,
    and loops that write into preallocated buffers, then take their plain form: a graph must
    not depend on what an earlier call left behind."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def may_overwrite(x: torch.Tensor) -> bool:
    """Whether an in-place op on ``x`` (a tensor the caller has just made) is safe: autograd
    does not need it and no graph is being traced."""
    return not ((torch.is_grad_enabled() and x.requires_grad) or is_tracing())


def act_inplace(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` written over ``x`` for a GELU or ReLU when nothing is recorded for autograd or
    a trace; any other activation, or with autograd, out of place. Same values either way.

    Only for a tensor the caller has just made and owns. At 1024x1024 the encoders' MLP and
    early-stage activations are 16-64 MB; on the CPU a fresh buffer of that size is new memory
    from the kernel (page faults, zero-filling on first touch), which costs about as much as the
    activation itself.
    """
    if not may_overwrite(x):
        return act(x)
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if type(act) is nn.ReLU:
        return x.relu_()
    return act(x)


def init_constant_buffers(module: nn.Module, device: torch.device | str | None = None) -> None:
    """Recreates the non-persistent buffers of ``module``'s descendants on ``device``.

    Checkpoints do not hold non-persistent buffers (constants such as pixel statistics or index
    tables), so a module built on the ``meta`` device and loaded with ``assign=True`` still has
    them on ``meta``. Every module that registers such buffers defines
    ``init_constant_buffers(device)``, responsible for its whole subtree; this walks the children
    and calls it on the first one of each branch that defines it.
    """
    for child in module.children():
        init = getattr(child, "init_constant_buffers", None)
        if callable(init):
            init(device)
        else:
            init_constant_buffers(child, device)


class PixelNormalization:
    """Mixin for a top-level model holding ``pixel_mean`` / ``pixel_std`` as non-persistent buffers.

    The statistics are constants, not part of checkpoints; they are kept as numbers so that the
    buffers (and those of the submodules) can be recreated after a meta-device build.
    ``pixel_stats_shape`` is the view the model's ``preprocess`` broadcasts against.
    """

    pixel_stats_shape: tuple[int, ...] = (-1, 1, 1)

    def _register_pixel_stats(self, pixel_mean, pixel_std) -> None:
        self._pixel_stats = (tuple(float(v) for v in pixel_mean), tuple(float(v) for v in pixel_std))
        self.register_buffer("pixel_mean", torch.empty(0), persistent=False)
        self.register_buffer("pixel_std", torch.empty(0), persistent=False)
        self._init_pixel_stats(None)

    def _init_pixel_stats(self, device: torch.device | str | None) -> None:
        mean, std = self._pixel_stats
        self.pixel_mean = torch.tensor(mean, dtype=torch.float32, device=device).view(*self.pixel_stats_shape)
        self.pixel_std = torch.tensor(std, dtype=torch.float32, device=device).view(*self.pixel_stats_shape)

    def init_constant_buffers(self, device: torch.device | str | None = None) -> None:
        """Recreates every non-persistent buffer (``pixel_mean`` / ``pixel_std`` and those of the
        submodules, e.g. TinyViT's attention index tables) on ``device`` (default: the device of
        the parameters). Needed after building on ``meta`` and loading with ``assign=True``."""
        if device is None:
            device = next(self.parameters()).device
        self._init_pixel_stats(device)
        init_constant_buffers(self, device)


class MLPBlock(nn.Module):
    """Two-layer transformer MLP ``lin2(act(lin1(x)))`` acting on the last dimension."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., embedding_dim]`` -> ``[..., embedding_dim]``."""
        return self.lin2(act_inplace(self.act, self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``[B, C, H, W]`` map (per pixel).

    The statistics are computed explicitly (biased variance, ``eps`` inside the square root) so
    that the result follows the reference arithmetic rather than a fused kernel.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]
