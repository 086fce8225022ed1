"""SAM 2 memory attention: conditions the current frame's features on the memory bank.

A stack of pre-norm layers (RoPE self-attention, RoPE cross-attention to the memory, ReLU MLP) and a
final LayerNorm. Constructors take the field names of the official config trees
(``model.memory_attention`` / ``.layer`` / ``.self_attention`` / ``.cross_attention``); nested
settings may be passed as dicts (a ``_target_`` entry is ignored), see
:meth:`MemoryAttention.from_config`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.sam2.rope import RoPEAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config tree without its ``_target_`` entry (the class is implied by the field)."""
    return {k: v for k, v in cfg.items() if k != "_target_"}


def _attention(spec: RoPEAttention | dict[str, Any]) -> RoPEAttention:
    return spec if isinstance(spec, nn.Module) else RoPEAttention(**_settings(spec))


class MemoryAttentionLayer(nn.Module):
    """One pre-norm layer: ``x += SA(norm1 x)``, ``x += CA(norm2 x, memory)``, ``x += MLP(norm3 x)``."""

    def __init__(
        self,
        *,
        d_model: int,
        dim_feedforward: int,
        self_attention: RoPEAttention | dict[str, Any],
        cross_attention: RoPEAttention | dict[str, Any],
        activation: str = "relu",
        dropout: float = 0.0,
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MemoryAttentionLayer: unknown activation {activation!r}")
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        # Registration order = the official state-dict order.
        self.self_attn = _attention(self_attention)
        self.cross_attn_image = _attention(cross_attention)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.activation = activation
        self.dropout_p = dropout
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout_p, self.training) if self.dropout_p > 0 else x

    def self_block(self, tgt: torch.Tensor, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """The self-attention sub-layer: ``tgt [B, HW, C]`` -> ``tgt + SA(norm1 tgt)``."""
        x = self.norm1(tgt)
        q = x + query_pos if self.pos_enc_at_attn else x
        return tgt + self._drop(self.self_attn(q, q, x))

    def memory_block(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """The cross-attention and MLP sub-layers (the part that reads the memory)."""
        x = self.norm2(tgt)
        x = self.cross_attn_image(
            x + query_pos if self.pos_enc_at_cross_attn_queries else x,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
        )
        tgt = tgt + self._drop(x)

        x = self.norm3(tgt)
        x = self.linear2(self._drop(_ACTIVATIONS[self.activation](self.linear1(x))))
        return tgt + self._drop(x)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """``tgt [B, HW, C]``, ``memory [B, M, Cm]`` (+ PEs of the same shapes) -> ``[B, HW, C]``."""
        tgt = self.self_block(tgt, query_pos)
        return self.memory_block(tgt, memory, pos, query_pos, num_k_exclude_rope)


class MemoryAttention(nn.Module):
    """``num_layers`` memory-attention layers and a final LayerNorm (batch-first tensors)."""

    def __init__(
        self,
        *,
        d_model: int,
        layer: MemoryAttentionLayer | dict[str, Any],
        num_layers: int,
        pos_enc_at_input: bool = True,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("MemoryAttention: only batch_first=True is supported")
        self.d_model = d_model
        self.num_layers = num_layers
        self.pos_enc_at_input = pos_enc_at_input
        self.layers = nn.ModuleList(self._make_layer(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    @staticmethod
    def _make_layer(layer: MemoryAttentionLayer | dict[str, Any]) -> MemoryAttentionLayer:
        if isinstance(layer, nn.Module):
            # Independent copies, like the official clones of one prototype layer.
            return copy.deepcopy(layer)
        return MemoryAttentionLayer(**_settings(layer))

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MemoryAttention:
        """Builds from the official ``model.memory_attention`` tree (``_target_`` entries ignored)."""
        return cls(**_settings(cfg))

    def frame_prefix(self, curr: torch.Tensor, curr_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, HW, C]``: the current frame's tokens through the input PE and the first layer's
        self-attention, the part of :meth:`forward` that does not read the memory (the same for
        every object tracked on a frame, so a tracker can compute it once per frame)."""
        out = curr
        if self.pos_enc_at_input and curr_pos is not None:
            out = out + 0.1 * curr_pos
        return self.layers[0].self_block(out, curr_pos)

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor,
        curr_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditions the current frame on the memory.

        Args:
            curr: ``[B, HW, C]`` current-frame tokens (row-major square map).
            memory: ``[B, M, Cm]`` memory tokens: spatial memories of the stored frames, then
                ``num_obj_ptr_tokens`` object-pointer tokens (which are not rotated).
            curr_pos: ``[B, HW, C]`` sine PE of the current frame (added ×0.1 at the input).
            memory_pos: ``[B, M, Cm]`` PE of the memory (added to the cross-attention keys).
            prefix: ``[B, HW, C]`` or ``[1, HW, C]``, :meth:`frame_prefix` of ``curr`` when already
                computed (``curr`` is then not read again).

        Returns:
            ``[B, HW, C]``.
        """
        if prefix is None:
            if curr.shape[0] != memory.shape[0]:
                raise ValueError("MemoryAttention: curr and memory must have the same batch size")
            prefix = self.frame_prefix(curr, curr_pos)
        out = prefix.expand(memory.shape[0], -1, -1) if prefix.shape[0] != memory.shape[0] else prefix
        for i, layer in enumerate(self.layers):
            if i > 0:
                out = layer.self_block(out, curr_pos)
            out = layer.memory_block(
                out, memory, pos=memory_pos, query_pos=curr_pos, num_k_exclude_rope=num_obj_ptr_tokens
            )
        return self.norm(out)
