"""Which memories and object pointers a frame attends to, and their position encodings.

The selection of the official ``SAM2Base._prepare_memory_conditioned_features``:

* spatial memories: every selected conditioning frame (temporal slot 0, also frames *later* than
  the current one), then the ``num_maskmem - 1`` previous frames in tracking direction (slots
  1..6, the farthest first; missing frames are skipped); each gets
  ``maskmem_tpos_enc[num_maskmem - slot - 1]`` added to its sine PE;
* object pointers: conditioning frames not in the future (``only_obj_ptrs_in_the_past_for_eval``),
  then up to ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` previous frames. Their temporal PE
  is a 1-D sine encoding of the (signed) frame distance divided by
  ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` (so it depends on the video length), projected
  to ``mem_dim``; a ``C``-wide pointer becomes ``C / mem_dim`` tokens sharing that PE.

With ``num_frames=None`` (a stream of unknown length) the pointer window and its normalisation use
``max_obj_ptrs_in_encoder`` (16), i.e. the numbers of any video of at least 16 frames.
"""

from __future__ import annotations

import torch
from torch import nn

from persam.tracking.sam2.state import FrameOutput, ObjectState


def select_cond_frames(
    frame_idx: int, cond: dict[int, FrameOutput], max_cond_frames: int
) -> tuple[dict[int, FrameOutput], dict[int, FrameOutput]]:
    """``(selected, unselected)`` conditioning frames: all of them when ``max_cond_frames`` is -1
    or not exceeded, else the closest before, the closest at/after, then the nearest others."""
    if max_cond_frames == -1 or len(cond) <= max_cond_frames:
        return cond, {}
    if max_cond_frames < 2:
        raise ValueError("max_cond_frames_in_attn must allow at least 2 conditioning frames")
    selected: dict[int, FrameOutput] = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_cond_frames - len(selected)]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[N]`` positions -> ``[N, dim]``: ``[sin, cos]`` halves (not interleaved)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    angles = positions[:, None] / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def memory_frame_indices(
    frame_idx: int, num_maskmem: int, stride: int, reverse: bool
) -> list[tuple[int, int]]:
    """``(slot, frame)`` of the non-conditioning memories of ``frame_idx``: slot 1 is the farthest
    back, slot ``num_maskmem - 1`` the previous frame; with ``stride`` > 1 all but the previous
    frame are taken on the ``stride`` grid."""
    out = []
    for slot in range(1, num_maskmem):
        back = num_maskmem - slot
        if back == 1:
            t = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            t = ((frame_idx - 2) // stride) * stride - (back - 2) * stride
        else:
            t = -(-(frame_idx + 2) // stride) * stride + (back - 2) * stride
        out.append((slot, t))
    return out


def pointer_window(num_frames: int | None, max_obj_ptrs: int) -> int:
    """Number of pointer slots (the current frame's included) for a video of ``num_frames``."""
    return max_obj_ptrs if num_frames is None else min(num_frames, max_obj_ptrs)


def assemble_memory(
    model: nn.Module,
    frame_idx: int,
    state: ObjectState,
    mem_pos: torch.Tensor,
    *,
    num_frames: int | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The memory one object attends to on ``frame_idx``.

    Args:
        model: the SAM 2 module (official option names).
        state: the object's consolidated outputs.
        mem_pos: ``[1, mem_dim, h, w]`` sine PE of a memory.

    Returns:
        ``(memory [1, M, mem_dim], memory_pos [1, M, mem_dim], num_ptr_tokens)``; the pointer
        tokens are the last ``num_ptr_tokens`` entries.
    """
    m = model
    mem_dim = int(m.mem_dim)
    c = int(m.hidden_dim)
    device = mem_pos.device
    if not state.cond:
        raise RuntimeError(f"object {state.obj_id} has no conditioning frame")
    selected, unselected = select_cond_frames(frame_idx, state.cond, m.max_cond_frames_in_attn)

    slots: list[tuple[int, FrameOutput | None]] = [(0, out) for out in selected.values()]
    for slot, t in memory_frame_indices(frame_idx, m.num_maskmem, m.memory_temporal_stride_for_eval, reverse):
        out = state.non_cond.get(t)
        slots.append((slot, out if out is not None else unselected.get(t)))

    pos_flat = mem_pos.flatten(2).transpose(1, 2)  # [1, hw, mem_dim]
    memories, positions = [], []
    for slot, out in slots:
        if out is None or out.maskmem_features is None:
            continue
        # The bfloat16 memory joins the float32 pointers: promoted to float32.
        memories.append(out.maskmem_features.to(device).float().flatten(2).transpose(1, 2))
        positions.append(pos_flat + m.maskmem_tpos_enc[m.num_maskmem - slot - 1].reshape(1, 1, mem_dim))

    num_ptr_tokens = 0
    if m.use_obj_ptrs_in_encoder:
        window = pointer_window(num_frames, m.max_obj_ptrs_in_encoder)
        sign = -1 if reverse else 1
        if m.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
        else:
            ptr_cond = selected
        dists: list[int] = []
        ptrs: list[torch.Tensor] = []
        for t, out in ptr_cond.items():
            dists.append((frame_idx - t) * sign if m.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t))
            ptrs.append(out.obj_ptr)
        for t_diff in range(1, window):
            t = frame_idx + t_diff if reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = state.non_cond.get(t)
            if out is None:
                out = unselected.get(t)
            if out is not None:
                dists.append(t_diff)
                ptrs.append(out.obj_ptr)
        if ptrs:
            obj_ptrs = torch.stack([p.to(device) for p in ptrs], dim=0)  # [P, 1, C]
            if m.add_tpos_enc_to_obj_ptrs:
                tpos_dim = c if m.proj_tpos_enc_in_obj_ptrs else mem_dim
                d = torch.tensor(dists, device=device, dtype=torch.float32) / (window - 1)
                obj_pos = m.obj_ptr_tpos_proj(sine_1d(d, tpos_dim))  # [P, mem_dim]
            else:
                obj_pos = obj_ptrs.new_zeros(len(dists), mem_dim)
            if mem_dim < c:
                split = c // mem_dim
                obj_ptrs = obj_ptrs.reshape(-1, 1, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                obj_pos = obj_pos.repeat_interleave(split, dim=0)
            memories.append(obj_ptrs.transpose(0, 1))  # [1, P * split, mem_dim]
            positions.append(obj_pos[None])
            num_ptr_tokens = obj_ptrs.shape[0]

    return torch.cat(memories, dim=1), torch.cat(positions, dim=1), num_ptr_tokens
