"""2-D axial rotary position encoding (RoPE) and the attention layer of SAM 2's memory attention.

Tokens of a square ``side x side`` map are numbered row-major: token ``t`` sits at
``x = t mod side``, ``y = t div side``. A head of dimension ``d`` is read as ``d / 2`` complex numbers
(consecutive channel pairs); the first ``d / 4`` rotate with ``x``, the last ``d / 4`` with ``y``, both
with the frequencies ``1 / theta^(4 i / d)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def axial_rope_freqs(head_dim: int, side_x: int, side_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotation table ``[side_x * side_y, head_dim / 2]`` (complex64), ``[x-part, y-part]``."""
    if head_dim % 4 != 0:
        raise ValueError(f"axial RoPE needs a head dimension divisible by 4, got {head_dim}")
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(side_x * side_y, dtype=torch.float32)
    t_x = t % side_x
    t_y = torch.div(t, side_x, rounding_mode="floor")
    angles_x = torch.outer(t_x, inv)
    angles_y = torch.outer(t_y, inv)
    rot_x = torch.polar(torch.ones_like(angles_x), angles_x)
    rot_y = torch.polar(torch.ones_like(angles_y), angles_y)
    return torch.cat([rot_x, rot_y], dim=-1)


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotates ``x [B, heads, N, d]`` by ``freqs [N, d / 2]`` (complex); returns ``x``'s dtype."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(3).type_as(x)


def rotate_(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """In-place :func:`rotate` of a float32 ``x`` (no new tensor); other dtypes are rotated out of
    place. Returns the rotated tensor."""
    if x.dtype != torch.float32 or x.stride(-1) != 1 or any(s % 2 for s in x.stride()[:-1]):
        return rotate(x, freqs)
    torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(freqs)
    return x


class RoPEAttention(nn.Module):
    """Multi-head attention with axial RoPE on queries and keys (no additive PE inside).

    ``kv_in_dim`` lets keys / values come from a narrower memory (e.g. 64 channels against a
    256-channel query). With ``rope_k_repeat`` the key sequence may be a whole number ``r`` of
    query-sized maps (``r`` memory frames): the rotation table is repeated ``r`` times.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] | list[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"RoPEAttention: num_heads={num_heads} must divide {self.internal_dim}")
        self.head_dim = self.internal_dim // num_heads
        self.dropout_p = dropout
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = (int(feat_sizes[0]), int(feat_sizes[1]))
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        # A constant, not a buffer: checkpoints do not hold it and meta-device builds stay valid.
        self._freqs: dict[tuple[int, str, int], torch.Tensor] = {}

    def freqs_for(self, num_tokens: int, device: torch.device, repeat: int = 1) -> torch.Tensor:
        """Rotation table for a square map of ``num_tokens`` tokens, ``repeat`` times over (``repeat``
        memory frames); cached per size, repeat and device."""
        key = (num_tokens, str(device), repeat)
        table = self._freqs.get(key)
        if table is None and repeat > 1:
            table = self.freqs_for(num_tokens, device).repeat(repeat, 1)
            self._freqs[key] = table
        if table is None:
            side_x, side_y = self.feat_sizes
            if side_x * side_y != num_tokens:
                side = math.isqrt(num_tokens)
                if side * side != num_tokens:
                    raise ValueError(f"RoPEAttention needs a square token map, got {num_tokens} tokens")
                side_x = side_y = side
            table = axial_rope_freqs(self.head_dim, side_x, side_y, self.rope_theta).to(device)
            self._freqs[key] = table
        return table

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        """``q [B, Nq, C]``, ``k, v [B, Nk, kv_in_dim]`` -> ``[B, Nq, C]``.

        The last ``num_k_exclude_rope`` keys (object-pointer tokens) are not rotated.
        """
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))

        # q and k are fresh projections: rotated in place.
        q = rotate_(q, self.freqs_for(q.shape[-2], q.device))
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope > 0:
            if num_rope != q.shape[-2] and (not self.rope_k_repeat or num_rope % q.shape[-2] != 0):
                raise ValueError(
                    f"RoPEAttention: {num_rope} rotated keys for {q.shape[-2]} queries "
                    "(needs rope_k_repeat and a whole number of maps)"
                )
            k_freqs = self.freqs_for(q.shape[-2], q.device, num_rope // q.shape[-2])
            rotated = rotate_(k[:, :, :num_rope], k_freqs)
            if rotated.data_ptr() != k.data_ptr():
                k = torch.cat([rotated, k[:, :, num_rope:]], dim=2)

        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))
