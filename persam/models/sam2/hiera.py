"""Hiera: the hierarchical vision transformer trunk of SAM 2.

Four stages of transformer blocks on a ``[B, H, W, C]`` token map (stride 4 after the patch
embedding, then 8, 16, 32). At each stage change the first block max-pools its queries 2x2 (and its
shortcut), doubling the width and the number of heads. Blocks attend within non-overlapping windows
(zero-padded at the bottom / right), except the ``global_att_blocks``, which attend over the whole
map. The first block of a stage still uses the previous stage's window size (measured before
pooling), as the checkpoints were trained that way.

State-dict keys follow the official ``sam2.modeling.backbones.hieradet.Hiera``: ``pos_embed``,
``pos_embed_window``, ``patch_embed.proj``,
``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.layers.<j>,proj}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.mask_decoder import MLP

LAYER_NORM_EPS = 1e-6


#: Tokens per chunk of a block's token-wise work with one thread: the intermediates of a chunk
#: (LayerNorm, MLP hidden layer, attention windows) stay small enough for the caches and for the
#: allocator to recycle, instead of streaming full-map temporaries through memory.
CHUNK_TOKENS = 4096


def chunk_tokens() -> int:
    """:data:`CHUNK_TOKENS` scaled by the square of the intra-op thread count: every operation of
    a chunk is split among the threads, whose fork / join costs more the more threads must meet,
    so more threads need fewer, larger chunks."""
    return CHUNK_TOKENS * torch.get_num_threads() ** 2


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C]`` -> windows ``[B * nW, ws, ws, C]`` and the padded size ``(Hp, Wp)``; the map
    is zero-padded at the bottom / right to a multiple of ``window_size``."""
    return partition_filled(x, window_size, None)


def partition_filled(
    x: torch.Tensor, window_size: int, fill: torch.Tensor | None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`window_partition` with the padding filled by ``fill`` (``[C]``, zeros when None), in
    a single copy (no padded intermediate map)."""
    b, h, w, c = x.shape
    ws = window_size
    nh, nw = -(-h // ws), -(-w // ws)
    if h % ws == 0 and w % ws == 0:
        windows = x.unflatten(2, (nw, ws)).unflatten(1, (nh, ws)).transpose(2, 3)
        return windows.reshape(-1, ws, ws, c), (h, w)
    out = x.new_empty(b, nh, nw, ws, ws, c)
    if fill is None:
        out.zero_()
    else:
        out.copy_(fill.to(out.dtype).expand_as(out))
    grid = out.transpose(2, 3)  # [B, nh, ws, nw, ws, C]: map rows / columns split by window
    fh, fw = h // ws, w // ws  # full window rows / columns
    rh, rw = h - fh * ws, w - fw * ws  # rows / columns of the partial last window
    if fh and fw:
        grid[:, :fh, :, :fw] = x[:, : fh * ws, : fw * ws].unflatten(2, (fw, ws)).unflatten(1, (fh, ws))
    if fh and rw:
        grid[:, :fh, :, fw, :rw] = x[:, : fh * ws, fw * ws :].unflatten(1, (fh, ws))
    if rh and fw:
        grid[:, fh, :rh, :fw] = x[:, fh * ws :, : fw * ws].unflatten(2, (fw, ws))
    if rh and rw:
        grid[:, fh, :rh, fw, :rw] = x[:, fh * ws :, fw * ws :]
    return out.reshape(-1, ws, ws, c), (nh * ws, nw * ws)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]`` (padding removed)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5)
    if hp > h or wp > w:
        # Crop before the copy, so that the padding is never written.
        x = x.reshape(b, hp, wp // window_size, window_size, -1)[:, :h].reshape(b, h, wp, -1)
        return x[:, :, :w].contiguous()
    return x.reshape(b, hp, wp, -1)


def max_pool_hw(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """``nn.MaxPool2d(stride, stride)`` on a channels-last ``[B, H, W, C]`` map (trailing rows /
    columns that do not fill a cell are dropped), without leaving the channels-last layout: an
    element-wise maximum of the strided sub-grids, vectorised along the channels."""
    sh, sw = stride
    h, w = x.shape[1] // sh, x.shape[2] // sw
    out = None
    for i in range(sh):
        for j in range(sw):
            part = x[:, i : h * sh : sh, j : w * sw : sw]
            out = part.contiguous() if out is None else torch.maximum(out, part, out=out)
    return out


def pool_hw(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Applies a 2-D pooling to a channels-last ``[B, H, W, C]`` map."""
    if not x.is_contiguous() and isinstance(pool, nn.MaxPool2d) and _plain_stride(pool) is not None:
        # A strided map (queries sliced out of the qkv projection): gathering the sub-grids costs
        # less than the copy the pooling kernel would make first.
        return max_pool_hw(x, _plain_stride(pool))
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _plain_stride(pool: nn.MaxPool2d) -> tuple[int, int] | None:
    """The stride of a max-pool whose cells tile the map (kernel = stride, no padding / dilation)."""
    k, s = nn.modules.utils._pair(pool.kernel_size), nn.modules.utils._pair(pool.stride)
    plain = k == s and nn.modules.utils._pair(pool.padding) == (0, 0) and not pool.ceil_mode
    return s if plain and nn.modules.utils._pair(pool.dilation) == (1, 1) else None


class PatchEmbed(nn.Module):
    """7x7 convolution, stride 4, padding 3: ``[B, 3, H, W]`` -> channels-last ``[B, H/4, W/4, C]``."""

    def __init__(
        self, *, embed_dim: int, in_chans: int = 3, kernel_size: int = 7, stride: int = 4, padding: int = 3
    ):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries are optionally pooled (``q_pool``), so that the output
    map is smaller than the input one at a stage change."""

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]`` (``H' = H / stride`` with query pooling)."""
        return self.proj(self.attend(self.qkv(x)))

    def split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, H, W, 3 * dim_out]`` -> ``q`` ``[B, heads, H' * W', d]`` (pooled), ``k``, ``v``
        ``[B, heads, H * W, d]`` (strided views where possible), and ``(H', W')``."""
        b, h, w, _ = qkv.shape
        q, k, v = qkv.reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_pool is not None:
            q = pool_hw(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (h, w)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention before the output projection: ``[B, H, W, 3 * dim_out]`` -> ``[B, H', W', dim_out]``."""
        q, k, v, (h, w) = self.split(qkv)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(qkv.shape[0], h, w, -1)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block (windowed or global attention, GELU MLP) with optional query pooling.

    When the width changes, the shortcut is the projection of the *normalised* input, pooled like
    the queries. Everything but the attention is token-wise, so the block runs in chunks of
    window rows (windowed) or of query rows (global) of about :data:`CHUNK_TOKENS` tokens; the
    arithmetic of every token is the same as over the whole map.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim=dim, dim_out=dim_out, num_heads=num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, act=act_layer)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]``."""
        if self.window_size > 0:
            return self._forward_windowed(x)
        return self._forward_global(x)

    def _shortcut(self, x: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        if self.dim == self.dim_out:
            return x
        shortcut = self.proj(normed)
        return shortcut if self.pool is None else pool_hw(shortcut, self.pool)

    def _finish(self, shortcut: torch.Tensor, attn: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Residual, then the MLP half of the block, written into ``out`` (a slice of the output
        map, allocated by the caller from the first chunk) when given."""
        x = shortcut + attn
        y = self.mlp(self.norm2(x))
        if out is None or out.dtype != torch.result_type(x, y):
            return x + y
        return torch.add(x, y, out=out)

    def _forward_windowed(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        ws = self.window_size
        sh = self.q_stride[0] if self.q_stride else 1
        out_ws = ws // sh
        n_rows = -(-h // ws)
        # Chunks of whole window rows; with query pooling only where the windows pool like the map.
        rows = max(1, chunk_tokens() // (b * ws * w)) if ws % sh == 0 else n_rows
        out = None
        for i0 in range(0, n_rows, rows):
            xc = x[:, i0 * ws : (i0 + rows) * ws]
            normed = self.norm1(xc)
            shortcut = self._shortcut(xc, normed)
            if xc.shape[1] % ws or w % ws:
                # Padding tokens would be zeros after norm1, i.e. the qkv bias after the
                # projection: the projection skips them and the partition writes the bias.
                windows, (hp, wp) = partition_filled(self.attn.qkv(normed), ws, self.attn.qkv.bias)
            else:  # no padding: partition the narrower normalised map
                windows, (hp, wp) = partition_filled(normed, ws, None)
                windows = self.attn.qkv(windows)
            attn = self.attn.attend(windows)
            hs, w_s = shortcut.shape[1:3]
            if self.q_stride:
                # The pooled windows are smaller by the stride; the map is re-tiled at that size.
                hp, wp = hs + (-hs) % out_ws, w_s + (-w_s) % out_ws
            attn = self.attn.proj(window_unpartition(attn, out_ws, (hp, wp), (hs, w_s)))
            if rows >= n_rows:
                return self._finish(shortcut, attn, None)
            r0 = i0 * ws // sh
            if out is None:
                size = (b, (h // sh) if self.q_stride else h, w_s, attn.shape[-1])
                out = attn.new_empty(size, dtype=torch.result_type(shortcut, attn))
            res = self._finish(shortcut, attn, out[:, r0 : r0 + hs])
            if res.data_ptr() != out[:, r0 : r0 + hs].data_ptr():
                out[:, r0 : r0 + hs] = res
        return out

    def _forward_global(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        shortcut = self._shortcut(x, normed)
        b, h, w, c = shortcut.shape
        q, k, v, _ = self.attn.split(self.attn.qkv(normed))
        shortcut = shortcut.reshape(b, h * w, c)
        step = max(1, chunk_tokens() // b)
        if step >= h * w:
            attn = F.scaled_dot_product_attention(q, k, v)
            attn = self.attn.proj(attn.transpose(1, 2).flatten(2))
            return self._finish(shortcut, attn, None).reshape(b, h, w, -1)
        out = None
        for j in range(0, h * w, step):
            attn = F.scaled_dot_product_attention(q[:, :, j : j + step], k, v)
            attn = self.attn.proj(attn.transpose(1, 2).flatten(2))
            sc = shortcut[:, j : j + step]
            if out is None:
                out = attn.new_empty((b, h * w, attn.shape[-1]), dtype=torch.result_type(sc, attn))
            res = self._finish(sc, attn, out[:, j : j + step])
            if res.data_ptr() != out[:, j : j + step].data_ptr():
                out[:, j : j + step] = res
        return out.reshape(b, h, w, -1)


class Hiera(nn.Module):
    """The Hiera trunk: ``[B, 3, S, S]`` -> one ``[B, C_i, S/s_i, S/s_i]`` map per stage.

    Args (names as in the official configs):
        embed_dim: width of stage 1 (doubled at every stage change by ``dim_mul``).
        num_heads: heads of stage 1 (multiplied by ``head_mul``).
        q_pool: number of stage changes with query pooling (3: strides 4, 8, 16, 32).
        q_stride: pooling stride at those changes.
        stages: blocks per stage.
        window_pos_embed_bkg_spatial_size: size of the background position table, bicubically
            resized to the token grid.
        window_spec: window size per stage (0 = global).
        global_att_blocks: indices of blocks with global attention.
        return_interm_layers: return every stage's output (else only the last).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        num_heads: int = 1,
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        return_interm_layers: bool = True,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"Hiera: {len(stages)} stages but {len(window_spec)} window sizes")
        self.window_spec = tuple(window_spec)
        self.q_stride = tuple(q_stride)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        if not 0 <= q_pool <= len(self.stage_ends) - 1:
            raise ValueError(f"Hiera: q_pool={q_pool} must be between 0 and {len(self.stage_ends) - 1}")
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        self.global_att_blocks = tuple(global_att_blocks)

        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, self.window_spec[0], self.window_spec[0])
        )
        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self._pos_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}

        blocks = []
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            # Read before the stage counter moves: a stage's first block keeps the previous window.
            window_size = 0 if i in self.global_att_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    q_stride=self.q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        ends = self.stage_ends[::-1] if return_interm_layers else [self.stage_ends[-1]]
        #: Output widths, lowest resolution first (the order the FPN neck expects).
        self.channel_list = [self.blocks[i].dim_out for i in ends]

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """``[1, h, w, C]``: the background table resized bicubically plus the tiled window table.

        It depends on the weights and the grid size only, so it is kept per size, device and dtype
        until the tables change (in-place updates bump their versions); it is recomputed on every
        call while the tables are being trained.
        """
        tables = (self.pos_embed, self.pos_embed_window)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tables):
            return self._compute_pos_embed(hw)
        key = (tuple(hw), self.pos_embed.device, self.pos_embed.dtype)
        stamp = tuple((t.data_ptr(), t._version) for t in tables)
        hit = self._pos_cache.get(key)
        if hit is None or hit[0] != stamp:
            with torch.no_grad():
                hit = (stamp, self._compute_pos_embed(hw).contiguous())
            self._pos_cache[key] = hit
        return hit[1]

    def _compute_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile([p // q for p, q in zip(pos.shape, win.shape, strict=True)])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` -> stage outputs ``[B, C_i, h_i, w_i]``, highest resolution first."""
        x = self.patch_embed(x)
        # Table first: the sum takes its channels-last layout, which every block works in.
        x = self._pos_embed(x.shape[1:3]) + x
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.stage_ends[-1] or (self.return_interm_layers and i in self.stage_ends):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
