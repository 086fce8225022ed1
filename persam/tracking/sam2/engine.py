"""One tracking step of SAM 2 for one object: memory-conditioned decoding and memory encoding.

:class:`MemoryEngine` wraps a :class:`persam.models.sam2.Sam2` module (its options keep the official
names) and implements the per-frame procedure of the official video model: features of a frame
conditioned on the object's memory bank (:mod:`.memory_bank`), the SAM heads with object-score
gating, the mask-as-output path for mask prompts, and the memory encoder (stored as bfloat16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.tracking.sam2.memory_bank import assemble_memory
from persam.tracking.sam2.state import FrameOutput, ObjectState, PointPrompt

#: Mask logit of every pixel of an object judged absent.
NO_OBJ_SCORE = -1024.0
#: Logits standing for a given binary mask (mask-as-output): sigmoid(±10) ~ 1 / 0.
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0


@dataclass
class FrameFeatures:
    """Backbone output of one frame, shared by all objects.

    Attributes:
        high_res: ``[feat_s0 [1, C/8, 256, 256], feat_s1 [1, C/4, 128, 128]]`` already projected by
            the decoder's ``conv_s0`` / ``conv_s1`` (empty without high-res features).
        vision: ``[1, C, 64, 64]`` raw stride-16 features.
        vision_pos: ``[1, C, 64, 64]`` their sine position encoding.
        memory_prefix: ``[1, 64 * 64, C]`` the frame's tokens through the memory attention's first
            self-attention (it does not read the memory: computed once per frame, on first use).
    """

    high_res: list[torch.Tensor]
    vision: torch.Tensor
    vision_pos: torch.Tensor
    memory_prefix: torch.Tensor | None = None


@dataclass
class StepResult:
    """A decoded frame: the object's output and the ``[1, 1, S, S]`` high-res logits it came from."""

    output: FrameOutput
    high_res_masks: torch.Tensor


class MemoryEngine:
    """The per-object video procedure over a SAM 2 module.

    Args:
        model: a :class:`persam.models.sam2.Sam2` (eval mode; official option attributes).
        binarize_mask_from_pts_for_mem_enc: binarise (instead of sigmoid) the masks of prompted
            frames before encoding them (the official video builder sets it).
        decoder_trace: when a list, one record per mask-decoder call is appended (debugging and
            conformance checks).
        encoder_dtype: ``bfloat16`` / ``float16`` run the image encoder under autocast (features
            are kept as float32; everything after the encoder runs in float32).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        binarize_mask_from_pts_for_mem_enc: bool = True,
        decoder_trace: list[dict[str, Any]] | None = None,
        encoder_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.encoder_dtype = encoder_dtype
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.decoder_trace = decoder_trace
        self.image_size = int(model.image_size)
        self._mem_pos: dict[tuple[int, int, str], torch.Tensor] = {}
        self._dense_pe: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ backbone
    @torch.no_grad()
    def encode_frame(self, image: torch.Tensor) -> FrameFeatures:
        """``[1, 3, S, S]`` normalised frame -> :class:`FrameFeatures` (one backbone pass)."""
        image = image.to(self.device)
        if self.encoder_dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(device_type=image.device.type, dtype=self.encoder_dtype):
                out = self.model.forward_image(image)
        else:
            out = self.model.forward_image(image)
        n = getattr(self.model, "num_feature_levels", 3)
        fpn = [f.float() for f in list(out.backbone_fpn)[-n:]]
        pos = [p.float() for p in list(out.vision_pos_enc)[-n:]]
        return FrameFeatures(high_res=fpn[:-1], vision=fpn[-1], vision_pos=pos[-1])

    # ------------------------------------------------------------------ SAM heads
    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's ``[1, C, h, w]`` dense position encoding (a constant: computed once)."""
        if self._dense_pe is None:
            self._dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
        return self._dense_pe

    def _use_multimask(self, is_init_cond_frame: bool, points: PointPrompt | None) -> bool:
        m = self.model
        num_pts = 0 if points is None else points.labels.shape[1]
        return bool(
            m.multimask_output_in_sam
            and (is_init_cond_frame or m.multimask_output_for_tracking)
            and m.multimask_min_pt_num <= num_pts <= m.multimask_max_pt_num
        )

    def sam_heads(
        self,
        pix_feat: torch.Tensor,
        high_res: list[torch.Tensor],
        points: PointPrompt | None,
        mask_inputs: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder with object-score gating (official ``_forward_sam_heads``).

        Returns ``(low_res [1, 1, 256, 256], high_res [1, 1, S, S], obj_ptr [1, C],
        object_score_logits [1, 1])`` of the selected mask.
        """
        m = self.model
        dev = pix_feat.device
        if points is None:
            # No prompt: one padding point (the prompt encoder then pads once more).
            coords = torch.zeros(1, 1, 2, device=dev)
            labels = -torch.ones(1, 1, dtype=torch.int32, device=dev)
        else:
            coords, labels = points.coords.to(dev), points.labels.to(dev)
        prompt_size = tuple(m.sam_prompt_encoder.mask_input_size)
        if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != prompt_size:
            mask_inputs = F.interpolate(
                mask_inputs.float(), size=prompt_size, mode="bilinear", align_corners=False, antialias=True
            )
        sparse, dense = m.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_inputs)
        dec = m.sam_mask_decoder(
            pix_feat,
            self.dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            high_res_features=high_res or None,
        )
        scores = dec.object_score_logits
        if self.decoder_trace is not None:
            self.decoder_trace.append(
                {
                    "multimask_output": multimask_output,
                    "iou_predictions": dec.iou_predictions.detach().clone(),
                    "iou_all_tokens": dec.all_iou_predictions.detach().clone(),
                    "object_score_logits": scores.detach().reshape(-1).clone(),
                    "num_sparse_tokens": int(sparse.shape[1]),
                    "singlemask_stability_score": dec.stability_scores.detach().clone(),
                }
            )
        low_multi = dec.masks
        present = scores > 0
        if m.pred_obj_scores:
            # A hard decision, also for the memory: an absent object has no pixel at all.
            low_multi = torch.where(present[:, None, None], low_multi, NO_OBJ_SCORE)
        low_multi = low_multi.float()
        token = dec.sam_tokens_out[:, 0]
        if multimask_output:
            best = torch.argmax(dec.iou_predictions, dim=-1)
            rows = torch.arange(low_multi.shape[0], device=dev)
            low = low_multi[rows, best][:, None]
            if dec.sam_tokens_out.shape[1] > 1:
                token = dec.sam_tokens_out[rows, best]
        else:
            low = low_multi
        # Only the selected mask is brought to the input resolution (the interpolation is per
        # channel, so this equals selecting among the up-sampled candidates).
        high = F.interpolate(
            low, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        obj_ptr = m.obj_ptr_proj(token)
        if m.pred_obj_scores:
            weight = torch.sigmoid(scores) if m.soft_no_obj_ptr else present.float()
            if m.fixed_no_obj_ptr:
                obj_ptr = weight * obj_ptr
            obj_ptr = obj_ptr + (1 - weight) * m.no_obj_ptr
        return low, high, obj_ptr, scores

    def mask_as_output(
        self, features: FrameFeatures, mask_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A binary ``[1, 1, S, S]`` mask prompt taken as the output itself (±10 logits); the
        object pointer still comes from the decoder, prompted with the learned down-sampling of
        the mask on the raw features (official ``_use_mask_as_output``)."""
        m = self.model
        mask = mask_inputs.float()
        high = mask * MASK_OUT_SCALE + MASK_OUT_BIAS
        low = F.interpolate(
            high,
            size=(high.shape[-2] // 4, high.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        if m.use_obj_ptrs_in_encoder:
            _, _, obj_ptr, _ = self.sam_heads(
                features.vision, features.high_res, None, m.mask_downsample(mask), multimask_output=False
            )
        else:
            obj_ptr = torch.zeros(1, m.hidden_dim, device=mask.device)
        present = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None].float()
        scores = MASK_OUT_SCALE * present + MASK_OUT_BIAS
        if m.pred_obj_scores:
            if m.fixed_no_obj_ptr:
                obj_ptr = present * obj_ptr
            obj_ptr = obj_ptr + (1 - present) * m.no_obj_ptr
        return low, high, obj_ptr, scores

    # ------------------------------------------------------------------ memory
    def conditioned_features(
        self,
        frame_idx: int,
        features: FrameFeatures,
        state: ObjectState,
        *,
        is_init_cond_frame: bool,
        num_frames: int | None,
        reverse: bool,
    ) -> torch.Tensor:
        """``[1, C, h, w]`` features of the frame fused with the object's memory (or, on an initial
        conditioning frame, plus ``no_mem_embed``)."""
        m = self.model
        vision = features.vision
        b, c, h, w = vision.shape
        if m.num_maskmem == 0:
            return vision
        if is_init_cond_frame:
            if m.directly_add_no_mem_embed:
                return vision + m.no_mem_embed.reshape(1, c, 1, 1)
            # A single dummy memory token (only possible when the memory is as wide as the image).
            memory = m.no_mem_embed.expand(b, 1, -1)
            memory_pos = m.no_mem_pos_enc.expand(b, 1, -1)
            num_ptr_tokens = 0
        else:
            memory, memory_pos, num_ptr_tokens = assemble_memory(
                m,
                frame_idx,
                state,
                self.memory_pos_enc(h, w, vision.device),
                num_frames=num_frames,
                reverse=reverse,
            )
        curr = vision.flatten(2).transpose(1, 2)
        curr_pos = features.vision_pos.flatten(2).transpose(1, 2)
        if features.memory_prefix is None:
            features.memory_prefix = m.memory_attention.frame_prefix(curr, curr_pos)
        out = m.memory_attention(
            curr=curr,
            memory=memory,
            curr_pos=curr_pos,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=num_ptr_tokens,
            prefix=features.memory_prefix,
        )
        return out.transpose(1, 2).reshape(b, c, h, w)

    @property
    def mem_dim(self) -> int:
        return int(self.model.mem_dim)

    def memory_pos_enc(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``[1, mem_dim, h, w]`` position encoding of every memory (the same for all frames)."""
        key = (h, w, str(device))
        pos = self._mem_pos.get(key)
        if pos is None:
            pos = self.model.memory_encoder.memory_pos_enc(h, w, device=device)
            self._mem_pos[key] = pos
        return pos

    def encode_memory(
        self,
        features: FrameFeatures,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        *,
        is_mask_from_pts: bool,
    ) -> torch.Tensor:
        """Memory of a frame from its ``[1, 1, S, S]`` mask logits: ``[1, mem_dim, h, w]`` bfloat16."""
        m = self.model
        if is_mask_from_pts and self.binarize_mask_from_pts_for_mem_enc:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks)
        # In place: the mask is a new full-resolution tensor.
        if m.sigmoid_scale_for_mem_enc != 1.0:
            mask.mul_(m.sigmoid_scale_for_mem_enc)
        if m.sigmoid_bias_for_mem_enc != 0.0:
            mask.add_(m.sigmoid_bias_for_mem_enc)
        feats, _ = m.memory_encoder(features.vision, mask, skip_mask_sigmoid=True)
        if m.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            feats = feats + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        # Stored in bfloat16 as the official predictor does; the rounding is part of its numbers.
        return feats.to(torch.bfloat16)

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(
        self,
        frame_idx: int,
        features: FrameFeatures,
        state: ObjectState,
        *,
        is_init_cond_frame: bool,
        points: PointPrompt | None = None,
        mask_inputs: torch.Tensor | None = None,
        num_frames: int | None,
        reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_mask_logits: torch.Tensor | None = None,
    ) -> StepResult:
        """Decodes the object on one frame (official ``track_step`` + compact output)."""
        m = self.model
        if mask_inputs is not None and m.use_mask_input_as_output_without_sam:
            low, high, obj_ptr, scores = self.mask_as_output(features, mask_inputs)
        else:
            pix = self.conditioned_features(
                frame_idx,
                features,
                state,
                is_init_cond_frame=is_init_cond_frame,
                num_frames=num_frames,
                reverse=reverse,
            )
            if prev_mask_logits is not None:
                mask_inputs = prev_mask_logits
            multimask = self._use_multimask(is_init_cond_frame, points)
            low, high, obj_ptr, scores = self.sam_heads(
                pix, features.high_res, points, mask_inputs, multimask
            )
        memory = None
        if run_mem_encoder and m.num_maskmem > 0:
            memory = self.encode_memory(features, high, scores, is_mask_from_pts=points is not None)
        return StepResult(FrameOutput(low, obj_ptr, scores, memory), high)
