"""The SAM 2 / 2.1 model: image encoder, memory modules and SAM heads, with the official state-dict keys.

Top-level keys (as ``SAM2Base``): ``maskmem_tpos_enc``, ``no_mem_embed``, ``no_mem_pos_enc``,
``no_obj_ptr``, ``no_obj_embed_spatial`` (2.1), then ``image_encoder.*``, ``mask_downsample.*``,
``memory_attention.*``, ``memory_encoder.*``, ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``,
``obj_ptr_proj.*`` and ``obj_ptr_tpos_proj.*`` (2.1). The options keep their official names and
meaning (see ``sam2/modeling/sam2_base.py``); this module holds the weights and the image path
(:meth:`Sam2.forward_image`), the per-frame video procedure lives in the trackers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from persam.models.mask_decoder import MLP
from persam.models.sam2.image_encoder import Sam2EncoderOutput
from persam.models.sam2.mask_decoder import Sam2MaskDecoder
from persam.models.sam2.prompt_encoder import Sam2PromptEncoder

#: Logit given to every mask pixel of an object judged absent (video).
NO_OBJ_SCORE = -1024.0
#: ImageNet statistics of the image predictor, on 0..1 pixel values.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class Sam2(nn.Module):
    """SAM 2 with injected submodules; the remaining keyword arguments are the official
    ``SAM2Base`` options (defaults as there) and are kept as attributes of the same names.

    Args:
        image_encoder: a :class:`~persam.models.sam2.image_encoder.Sam2ImageEncoder` (its neck's
            ``d_model`` is the hidden width of everything downstream).
        memory_attention, memory_encoder: the video memory modules.
        sam_prompt_encoder, sam_mask_decoder: the SAM heads (``hidden_dim`` wide).
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        memory_attention: nn.Module,
        memory_encoder: nn.Module,
        sam_prompt_encoder: Sam2PromptEncoder,
        sam_mask_decoder: Sam2MaskDecoder,
        num_maskmem: int = 7,
        image_size: int = 512,
        backbone_stride: int = 16,
        sigmoid_scale_for_mem_enc: float = 1.0,
        sigmoid_bias_for_mem_enc: float = 0.0,
        binarize_mask_from_pts_for_mem_enc: bool = False,
        use_mask_input_as_output_without_sam: bool = False,
        max_cond_frames_in_attn: int = -1,
        directly_add_no_mem_embed: bool = False,
        use_high_res_features_in_sam: bool = False,
        multimask_output_in_sam: bool = False,
        multimask_min_pt_num: int = 1,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        use_obj_ptrs_in_encoder: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        add_tpos_enc_to_obj_ptrs: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = False,
        use_signed_tpos_enc_to_obj_ptrs: bool = False,
        only_obj_ptrs_in_the_past_for_eval: bool = False,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        fixed_no_obj_ptr: bool = False,
        soft_no_obj_ptr: bool = False,
        use_mlp_for_obj_ptr_proj: bool = False,
        no_obj_embed_spatial: bool = False,
        compile_image_encoder: bool = False,
    ) -> None:
        super().__init__()
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        self.hidden_dim = int(image_encoder.neck.d_model)
        out_proj = getattr(memory_encoder, "out_proj", None)
        # The memory may be narrower than the image features (a channel compression).
        self.mem_dim = int(out_proj.weight.shape[0]) if hasattr(out_proj, "weight") else self.hidden_dim

        # Parameters first: state_dict() lists a module's own parameters before its children.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            trunc_normal_(p, std=0.02)
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
            trunc_normal_(self.no_obj_ptr, std=0.02)
        self.no_obj_embed_spatial = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
            trunc_normal_(self.no_obj_embed_spatial, std=0.02)

        self.image_encoder = image_encoder
        if use_obj_ptrs_in_encoder:
            # Brings a full-resolution mask prompt to the 256x256 logit frame (stride 4).
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.sam_prompt_encoder = sam_prompt_encoder
        self.sam_mask_decoder = sam_mask_decoder
        if not use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = nn.Identity()
        elif use_mlp_for_obj_ptr_proj:
            self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
        else:
            self.obj_ptr_proj = nn.Linear(self.hidden_dim, self.hidden_dim)
        if proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(self.hidden_dim, self.mem_dim)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()

        self.num_maskmem = num_maskmem
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.use_obj_ptrs_in_encoder = use_obj_ptrs_in_encoder
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.only_obj_ptrs_in_the_past_for_eval = only_obj_ptrs_in_the_past_for_eval
        self.pred_obj_scores = pred_obj_scores
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        self.soft_no_obj_ptr = soft_no_obj_ptr
        self.use_mlp_for_obj_ptr_proj = use_mlp_for_obj_ptr_proj
        self.compile_image_encoder = compile_image_encoder  # accepted for config compatibility only

    # ------------------------------------------------------------------ aliases
    @property
    def prompt_encoder(self) -> Sam2PromptEncoder:
        """``sam_prompt_encoder`` under the name the other model families use."""
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> Sam2MaskDecoder:
        """``sam_mask_decoder`` under the name the other model families use."""
        return self.sam_mask_decoder

    @property
    def img_size(self) -> int:
        """Side of the square encoder input (``image_size``)."""
        return int(self.image_size)

    # -------------------------------------------------------------------- image
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``[B, 3, H, W]`` float pixel values in 0..1 with the ImageNet statistics."""
        mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def forward_image(self, x: torch.Tensor, *, with_pos_enc: bool = True) -> Sam2EncoderOutput:
        """Encodes ``[B, 3, S, S]`` normalised images (official ``forward_image``).

        With ``use_high_res_features_in_sam`` the two finest levels come back already projected
        by the decoder's ``conv_s0`` / ``conv_s1`` (``[B, d/8, S/4, S/4]``, ``[B, d/4, S/8, S/8]``),
        so that prompt decoding does not redo it; the last level is the raw stride-16 feature map
        ``[B, d, S/16, S/16]`` (without ``no_mem_embed``).
        """
        if not self.use_high_res_features_in_sam:
            return self.image_encoder(x, with_pos_enc=with_pos_enc)
        # The encoder applies the projections itself (folded into its lateral convolutions).
        proj = (self.sam_mask_decoder.conv_s0, self.sam_mask_decoder.conv_s1)
        return self.image_encoder(x, with_pos_enc=with_pos_enc, level_proj=proj)

    def image_embedding(self, vision_features: torch.Tensor) -> torch.Tensor:
        """The decoder's image embedding for a frame without memory: the stride-16 features plus
        ``no_mem_embed`` when ``directly_add_no_mem_embed`` (image predictor, initial frames)."""
        if self.directly_add_no_mem_embed:
            return vision_features + self.no_mem_embed.reshape(1, -1, 1, 1)
        return vision_features
