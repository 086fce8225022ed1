"""TinyViT's windowed self-attention with learned relative attention biases, and the TinyViT
block built on it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import is_tracing
from persam.models.tiny_vit.layers import ConvBN, Mlp, _drop_path_or_identity


def attention_bias_index(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index of the learned bias for every (query, key) pair of a ``height x width`` window.

    Tokens are numbered row-major. The published rule enumerates the offsets
    ``(|dy|, |dx|)`` in order of first appearance over all (query, key) pairs; the first query
    (0, 0) already meets every offset, in row-major order, so offset ``(dy, dx)`` has index
    ``dy * width + dx``. Computed with tensor arithmetic only (works on the meta device).

    Returns:
        ``[height*width, height*width]`` int64, values in ``[0, height*width)``.
    """
    ys = torch.arange(height, device=device).repeat_interleave(width)
    xs = torch.arange(width, device=device).repeat(height)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * width + dx


class Attention(nn.Module):
    """Multi-head self-attention over one window with a learned bias per head and relative offset.

    ``softmax(q k^T / sqrt(key_dim) + B[h, |dy|, |dx|]) v``; LayerNorm is applied to the input
    inside this module. ``[Bw, N, dim] -> [Bw, N, dim]`` with ``N = resolution[0] * resolution[1]``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.resolution = resolution
        # attn_ratio 1: values have the same width as keys.
        self.value_dim = key_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)
        n_offsets = resolution[0] * resolution[1]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", attention_bias_index(*resolution), persistent=False)
        # The index table is not in checkpoints: rebuild it after loading, so that a model built on
        # the meta device (then ``to_empty`` / ``load_state_dict(assign=True)``) is usable.
        self.register_load_state_dict_post_hook(_rebuild_bias_index)

    def init_constant_buffers(self, device: torch.device | str | None = None) -> None:
        """Recomputes ``attention_bias_idxs`` on ``device`` (default: that of ``attention_biases``)."""
        if device is None:
            device = self.attention_biases.device
        self.attention_bias_idxs = attention_bias_index(*self.resolution, device=device)

    def attention_bias(self) -> torch.Tensor:
        """``[num_heads, N, N]`` additive attention bias gathered from ``attention_biases``.

        Without autograd the gathered table is kept and reused until ``attention_biases`` or the
        index table change (tracked by their version counters and storage), as every window of
        every image shares it."""
        if (torch.is_grad_enabled() and self.attention_biases.requires_grad) or is_tracing():
            return self.attention_biases[:, self.attention_bias_idxs]
        key = (
            self.attention_biases._version,
            self.attention_biases.data_ptr(),
            self.attention_bias_idxs._version,
            self.attention_bias_idxs.data_ptr(),
        )
        cached = self.__dict__.get("_bias_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                bias = self.attention_biases[:, self.attention_bias_idxs]
            cached = (key, bias)
            self.__dict__["_bias_cache"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        # The fused projection is laid out per head as [q | k | v].
        qkv = self.qkv(x).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [Bw, heads, N, d]
        # A 4-D mask lets SDPA use its fused CPU kernel; a 3-D one falls back to the unfused path.
        bias = self.attention_bias().to(q.dtype)[None]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.transpose(1, 2).reshape(b, n, self.num_heads * self.value_dim)
        return self.proj(x)


def _rebuild_bias_index(module: nn.Module, incompatible_keys: object) -> None:
    attn: Attention = module  # type: ignore[assignment]
    attn.init_constant_buffers()


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pads ``[B, H, W, C]`` at the bottom/right to multiples of ``window_size`` and splits it.

    Returns:
        ``[B * nH * nW, window_size**2, C]`` windows (row-major inside each window) and the padded
        size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_b = (window_size - h % window_size) % window_size
    pad_r = (window_size - w % window_size) % window_size
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    x = x.reshape(b, hp // window_size, window_size, wp // window_size, window_size, c)
    x = x.transpose(2, 3).reshape(-1, window_size * window_size, c)
    return x, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nH * nW, ws**2, C] -> [B, H, W, C]`` (padding cut)."""
    hp, wp = padded
    h, w = size
    c = windows.shape[-1]
    nh, nw = hp // window_size, wp // window_size
    x = windows.view(-1, nh, nw, window_size, window_size, c).transpose(2, 3).reshape(-1, hp, wp, c)
    if hp != h or wp != w:
        x = x[:, :h, :w]
    return x


class TinyViTBlock(nn.Module):
    """Windowed attention (residual) -> depthwise local ConvBN -> MLP (residual).

    Padding tokens are zeros before the attention's LayerNorm and take part as keys, as in the
    published model. ``[B, H, W, C] -> [B, H, W, C]`` (channels last).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"TinyViT block: dim {dim} is not divisible by num_heads {num_heads}")
        if window_size <= 0:
            raise ValueError(f"TinyViT block: window_size must be positive, got {window_size}")
        self.window_size = window_size
        self.drop_path = _drop_path_or_identity(drop_path)
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        windows, padded = window_partition(x, self.window_size)
        attn = window_unpartition(self.attn(windows), self.window_size, padded, (h, w))
        x = x + self.drop_path(attn)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))
