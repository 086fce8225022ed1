"""Small building blocks shared by the SAM image encoder, prompt encoder and mask decoder."""

from __future__ import annotations

import torch
from torch import nn


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


class MLPBlock(nn.Module):
    """Two-layer transformer MLP ``lin2(act(lin1(x)))`` acting on the last dimension."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., embedding_dim]`` -> ``[..., embedding_dim]``."""
        return self.lin2(self.act(self.lin1(x)))


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
