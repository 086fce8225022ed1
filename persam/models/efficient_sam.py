"""EfficientSAM (Xiong et al. 2023): a plain ViT image encoder with SAM's two-way mask decoder.

Only what differs from SAM is written here; everything else is reused from the SAM modules:

* the image encoder is a global-attention ViT with a bicubically resized absolute position
  embedding (no windows, no relative positions) followed by SAM's neck;
* prompts are always exactly ``max_num_points`` points: a box is two corner points with labels
  2 (top-left) and 3 (bottom-right), padding points carry label -1, negative points get no type
  embedding at all, and there is no dense (mask) prompt;
* in the two-way blocks the query self-attention keeps its residual in the first layer and adds
  the query positional embedding into the residual stream in later layers;
* the MLPs are ``layers.<i>.0`` + ``fc`` with GELU everywhere, and the output upscaling uses
  ``GroupNorm(1, C)`` instead of :class:`LayerNorm2d`.

State-dict keys follow the official checkpoints (``efficient_sam_vitt.pt`` / ``efficient_sam_vits.pt``,
weights under the top-level key ``'model'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import LayerNorm2d, PixelNormalization
from persam.models.mask_decoder import MaskDecoder
from persam.models.prompt_encoder import PositionEmbeddingRandom
from persam.models.transformer import TwoWayAttentionBlock, TwoWayTransformer

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
# The ViT was pre-trained at 224 pixels; its position table keeps that grid plus a cls entry.
PRETRAIN_IMG_SIZE = 224

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


# ----------------------------------------------------------------------------- image encoder
class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: ``[B, 3, S, S]`` -> ``[B, D, S/p, S/p]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViTAttention(nn.Module):
    """Global multi-head self-attention over a token sequence ``[B, N, D]``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class ViTMlp(nn.Module):
    """``fc2(act(fc1(x)))`` on the last dimension."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6) on ``[B, N, D]`` tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_abs_pos(pos_embed: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The absolute position embedding for an ``h x w`` patch grid.

    Args:
        pos_embed: ``[1, 1 + s*s, D]`` pre-training table (cls entry first).
        hw: ``(h, w)`` patch grid of the current input.

    Returns:
        ``[1, h, w, D]`` (channels last), bicubically resized (align_corners=False, no antialias)
        when the grid differs from the ``s x s`` pre-training grid.
    """
    table = pos_embed[:, 1:]
    size = math.isqrt(table.shape[1])
    if size * size != table.shape[1]:
        raise ValueError(f"pos_embed holds {table.shape[1]} grid entries, not a square number")
    grid = table.reshape(1, size, size, -1)
    if (size, size) == tuple(hw):
        return grid
    resized = F.interpolate(grid.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class EfficientSamImageEncoder(nn.Module):
    """Plain global-attention ViT + SAM neck: ``[B, 3, S, S]`` -> ``[B, C_neck, S/p, S/p]``."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        patch_embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        neck_dims: Sequence[int] = (256, 256),
        act: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.image_embedding_size = img_size // patch_size
        # The official neck builds both convolutions with neck_dims[0] channels.
        self.out_chans = neck_dims[0]
        self.patch_embed = PatchEmbed(patch_size, in_chans, patch_embed_dim)
        num_positions = (PRETRAIN_IMG_SIZE // patch_size) ** 2 + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, patch_embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(patch_embed_dim, num_heads, mlp_ratio, act) for _ in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(patch_embed_dim, neck_dims[0], kernel_size=1, bias=False),
            LayerNorm2d(neck_dims[0]),
            nn.Conv2d(neck_dims[0], neck_dims[0], kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dims[0]),
        )

    def abs_pos(self, hw: tuple[int, int]) -> torch.Tensor:
        """``[1, h, w, D]`` position embedding added to the patch embeddings."""
        return resize_abs_pos(self.pos_embed, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised image -> ``[B, C_neck, S/p, S/p]`` image embedding."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"image encoder expects {self.img_size}x{self.img_size} input, got {tuple(x.shape)}"
            )
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        b, h, w, d = x.shape
        x = x + self.abs_pos((h, w))
        x = x.reshape(b, h * w, d)
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.reshape(b, h, w, d).permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------- prompt encoder
class EfficientSamPromptEncoder(nn.Module):
    """Embeds a fixed number of labelled points (a box is two labelled corner points).

    Labels: 1 positive point, 0 negative point (positional encoding only), 2 box top-left corner,
    3 box bottom-right corner, -1 padding (positional encoding of its coordinates plus
    ``invalid_points``; not zeroed). Any other label gets the positional encoding only.
    """

    def __init__(
        self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """``[1, C, h, w]`` positional encoding of the image-embedding cell centres."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_embeddings(self) -> dict[int, torch.Tensor]:
        return {
            -1: self.invalid_points.weight,
            1: self.point_embeddings.weight,
            2: self.bbox_top_left_embeddings.weight,
            3: self.bbox_bottom_right_embeddings.weight,
        }

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse prompt embeddings.

        Args:
            coords: ``[B, N, 2]`` (x, y) in pixels of the encoder input frame (1024 x 1024).
            labels: ``[B, N]`` integer labels (see the class docstring).

        Returns:
            ``[B, N, C]`` float32 embeddings.
        """
        # Pixel centres, normalised by the input frame (x by width, y by height).
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        for label, weight in self._label_embeddings().items():
            emb = emb + (labels == label).unsqueeze(-1).to(emb.dtype) * weight
        return emb


# ------------------------------------------------------------------------------ mask decoder
class EfficientSamMLP(nn.Module):
    """``num_layers`` hidden ``Linear + act`` stages (``layers.<i>.0``) and a linear output ``fc``."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act: type[nn.Module]
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden_dim), act()) for d in dims)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class EfficientSamTwoWayAttentionBlock(TwoWayAttentionBlock):
    """SAM's two-way block with EfficientSAM's query self-attention and MLP.

    The first layer keeps the self-attention residual; later layers add the query PE into the
    residual stream (and into the values) before attending.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.GELU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(
            embedding_dim,
            num_heads,
            mlp_dim,
            activation,
            attention_downsample_rate,
            skip_first_layer_pe,
            norm_layer,
        )
        self.mlp = EfficientSamMLP(embedding_dim, mlp_dim, embedding_dim, 1, activation)

    def _self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        return self.norm1(queries + self.self_attn(q=queries, k=queries, v=queries))


class EfficientSamTwoWayTransformer(TwoWayTransformer):
    """SAM's two-way transformer (PerSAM hooks included) built from EfficientSAM blocks."""

    block_class = EfficientSamTwoWayAttentionBlock


class EfficientSamMaskDecoder(MaskDecoder):
    """SAM's mask decoder with EfficientSAM's heads.

    Differences: ``final_output_upscaling_layers`` (``ConvT -> GroupNorm(1, C) -> act`` for every
    stage but the last, which has no norm), GELU MLP heads (:class:`EfficientSamMLP`), no dense
    prompt, and prompts arriving as ``[B, Q, T, C]`` for ``B`` images with ``Q`` queries each.
    ``iou_head_depth`` counts the hidden ``Linear + act`` stages of the IoU head (its output ``fc``
    comes on top), as in the official decoder.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 2,
        iou_head_hidden_dim: int = 256,
        upscaling_layer_dims: Sequence[int] = (64, 32),
    ) -> None:
        if num_multimask_outputs < 2:
            raise ValueError(f"num_multimask_outputs must be at least 2, got {num_multimask_outputs}")
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=activation,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            mlp_activation=activation,
        )
        del self.output_upscaling
        stages = []
        in_dim = transformer_dim
        for i, out_dim in enumerate(upscaling_layer_dims):
            last = i == len(upscaling_layer_dims) - 1
            norm = nn.Identity() if last else nn.GroupNorm(1, out_dim)
            stages.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2), norm, activation()
                )
            )
            in_dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(stages)
        self.output_hypernetworks_mlps = nn.ModuleList(
            EfficientSamMLP(transformer_dim, transformer_dim, in_dim, 2, activation)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = EfficientSamMLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, activation
        )
        # Keep the official state_dict order (upscaling before the heads).
        for name in ("output_hypernetworks_mlps", "iou_prediction_head"):
            self._modules[name] = self._modules.pop(name)

    def _upscale(self, src: torch.Tensor) -> torch.Tensor:
        for stage in self.final_output_upscaling_layers:
            src = stage(src)
        return src

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts masks for ``Q`` queries on each of ``B`` images.

        Args:
            image_embeddings: ``[B, C, h, w]``; image ``b`` is shared by its ``Q`` queries.
            image_pe: ``[1, C, h, w]``.
            sparse_prompt_embeddings: ``[B, Q, T, C]``.
            multimask_output: True returns mask tokens 1..3, False mask token 0.
            attn_sim: ``[B*Q or 1, 1, 1, h*w]`` PerSAM attention bias, or None.
            target_embedding: ``[B*Q or 1, 1, C]`` PerSAM target embedding, or None.

        Returns:
            ``(masks [B*Q, K, 4h, 4w] logits, iou_pred [B*Q, K])`` in query-major order.
        """
        b, q, t, c = sparse_prompt_embeddings.shape
        if image_embeddings.shape[0] != 1:
            if image_embeddings.shape[0] != b:
                raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompt batches")
            image_embeddings = image_embeddings.repeat_interleave(q, dim=0)
        # No dense prompt: the image embedding enters the transformer unchanged (+ 0).
        return super().forward(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings.reshape(b * q, t, c),
            image_embeddings.new_zeros(()),
            multimask_output,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )


# ------------------------------------------------------------------------------- full model
class EfficientSam(PixelNormalization, nn.Module):
    """Image encoder + point prompt encoder + mask decoder, with EfficientSAM's geometry.

    Images are ``[B, 3, H, W]`` floats in ``[0, 1]`` (``uint8 / 255``); points are ``(x, y)`` in
    pixels of that image with labels 1 (positive), 0 (negative), 2 / 3 (box top-left /
    bottom-right corner) and -1 (padding). Masks are ``logits >= mask_threshold``.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    pixel_stats_shape = (1, 3, 1, 1)

    def __init__(
        self,
        image_encoder: EfficientSamImageEncoder,
        prompt_encoder: EfficientSamPromptEncoder,
        mask_decoder: EfficientSamMaskDecoder,
        decoder_max_num_input_points: int = 6,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.decoder_max_num_input_points = decoder_max_num_input_points
        self.mask_decoder = mask_decoder
        self._register_pixel_stats(pixel_mean, pixel_std)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    # ------------------------------------------------------------------ image
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 3, S, S]``: anisotropic bilinear stretch
        (align_corners=False, no antialias, also when shrinking) and mean/std normalisation."""
        s = self.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        return (x - self.pixel_mean) / self.pixel_std

    def get_image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, C, h, w]``."""
        return self.image_encoder(self.preprocess(images))

    # ---------------------------------------------------------------- prompts
    def get_rescaled_pts(self, points: torch.Tensor, input_h: int, input_w: int) -> torch.Tensor:
        """``[..., 2]`` (x, y) image pixels -> encoder-frame pixels; each coordinate below 0
        becomes -1 on its own, and nothing is clamped."""
        s = self.img_size
        x, y = points[..., 0], points[..., 1]
        return torch.stack(
            [
                torch.where(x >= 0, x * s / input_w, -1.0),
                torch.where(y >= 0, y * s / input_h, -1.0),
            ],
            dim=-1,
        )

    def fit_num_points(self, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Truncates ``[..., N, 2]`` / ``[..., N]`` to the first ``decoder_max_num_input_points``
        or right-pads with ``(-1, -1)`` / label -1."""
        n, m = points.shape[-2], self.decoder_max_num_input_points
        if n > m:
            return points[..., :m, :], labels[..., :m]
        if n < m:
            points = F.pad(points, (0, 0, 0, m - n), value=-1.0)
            labels = F.pad(labels, (0, m - n), value=-1)
        return points, labels

    def decoder_inputs(
        self, points: torch.Tensor, labels: torch.Tensor, input_h: int, input_w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, Q, N, 2]`` / ``[B, Q, N]`` -> the prompt-encoder input ``[B*Q, M, 2]`` (encoder
        frame) / ``[B*Q, M]`` with ``M = decoder_max_num_input_points``."""
        b, q = points.shape[:2]
        pts, lbl = self.fit_num_points(self.get_rescaled_pts(points, input_h, input_w), labels)
        m = self.decoder_max_num_input_points
        return pts.reshape(b * q, m, 2), lbl.reshape(b * q, m)

    # ---------------------------------------------------------------- decoder
    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        batched_points: torch.Tensor,
        batched_point_labels: torch.Tensor,
        multimask_output: bool,
        input_h: int,
        input_w: int,
        output_h: int = -1,
        output_w: int = -1,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for ``Q`` point-prompt queries on each of ``B`` images.

        Args:
            image_embeddings: ``[B, C, h, w]``.
            batched_points: ``[B, Q, N, 2]`` (x, y) pixels of the ``input_h x input_w`` image.
            batched_point_labels: ``[B, Q, N]``.
            multimask_output: True: mask tokens 1..3 (``K = 3``, token order); False: token 0.
            input_h, input_w: original image size.
            output_h, output_w: when both > 0, masks are bicubically resized to this size.
            attn_sim, target_embedding: PerSAM hooks (``[B*Q or 1, 1, 1, h*w]``, ``[B*Q or 1, 1, C]``).

        Returns:
            ``(masks [B, Q, K, 256, 256] or [B, Q, K, output_h, output_w] logits, iou [B, Q, K])``.
        """
        b, q = batched_points.shape[:2]
        pts, lbl = self.decoder_inputs(batched_points, batched_point_labels, input_h, input_w)
        sparse = self.prompt_encoder(pts, lbl)
        low_res, iou = self.mask_decoder(
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse.reshape(b, q, *sparse.shape[1:]),
            multimask_output=multimask_output,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
        if output_h > 0 and output_w > 0:
            low_res = F.interpolate(low_res, (output_h, output_w), mode="bicubic", align_corners=False)
        return low_res.reshape(b, q, *low_res.shape[1:]), iou.reshape(b, q, -1)

    def forward(
        self,
        batched_images: torch.Tensor,
        batched_points: torch.Tensor,
        batched_point_labels: torch.Tensor,
        scale_to_original_image_size: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """End to end, always multimask: ``(masks [B, Q, 3, H, W] (or 256 x 256), iou [B, Q, 3])``
        in token order (not sorted by IoU)."""
        _, _, h, w = batched_images.shape
        emb = self.get_image_embeddings(batched_images)
        out_h, out_w = (h, w) if scale_to_original_image_size else (-1, -1)
        return self.predict_masks(emb, batched_points, batched_point_labels, True, h, w, out_h, out_w)


# ---------------------------------------------------------------------------------- builders
_DEFAULT_CONFIG: dict[str, Any] = {
    "img_size": 1024,
    "encoder_patch_size": 16,
    "encoder_in_chans": 3,
    "encoder_patch_embed_dim": 192,
    "encoder_depth": 12,
    "encoder_num_heads": 3,
    "encoder_mlp_ratio": 4.0,
    "encoder_neck_dims": [256, 256],
    "decoder_max_num_input_points": 6,
    "decoder_transformer_depth": 2,
    "decoder_transformer_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "decoder_attention_downsample_rate": 2,
    "decoder_upscaling_layer_dims": [64, 32],
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "activation": "gelu",
    "normalization_type": "layer_norm",
    "normalize_before_activation": False,
    "pixel_mean": list(PIXEL_MEAN),
    "pixel_std": list(PIXEL_STD),
}


def efficient_sam_from_config(cfg: Mapping[str, Any]) -> EfficientSam:
    """Builds an (uninitialised) :class:`EfficientSam` from build settings.

    ``cfg`` holds the settings named like the arguments of the official builder (``img_size``,
    ``encoder_patch_embed_dim``, ``decoder_transformer_mlp_dim``, ...; missing ones take the
    official ViT-T value), either directly or under a ``"config"`` key. ``iou_head_depth`` counts
    the IoU head's linear layers, as in the official builder.
    """
    if "config" in cfg and isinstance(cfg["config"], Mapping):
        cfg = cfg["config"]
    unknown = sorted(set(cfg) - set(_DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"EfficientSAM config: unknown setting(s) {unknown}")
    c = {**_DEFAULT_CONFIG, **cfg}
    if c["activation"] not in _ACTIVATIONS:
        raise ValueError(
            f"EfficientSAM config: activation must be one of {sorted(_ACTIVATIONS)}, got {c['activation']!r}"
        )
    if c["normalization_type"] != "layer_norm" or c["normalize_before_activation"]:
        raise ValueError(
            "EfficientSAM config: only normalization_type='layer_norm' without "
            "normalize_before_activation is supported"
        )
    act = _ACTIVATIONS[c["activation"]]
    img_size = int(c["img_size"])
    encoder = EfficientSamImageEncoder(
        img_size=img_size,
        patch_size=int(c["encoder_patch_size"]),
        in_chans=int(c["encoder_in_chans"]),
        patch_embed_dim=int(c["encoder_patch_embed_dim"]),
        depth=int(c["encoder_depth"]),
        num_heads=int(c["encoder_num_heads"]),
        mlp_ratio=float(c["encoder_mlp_ratio"]),
        neck_dims=list(c["encoder_neck_dims"]),
        act=act,
    )
    dim = encoder.out_chans
    grid = encoder.image_embedding_size
    prompt_encoder = EfficientSamPromptEncoder(dim, (grid, grid), (img_size, img_size))
    transformer = EfficientSamTwoWayTransformer(
        depth=int(c["decoder_transformer_depth"]),
        embedding_dim=dim,
        num_heads=int(c["decoder_num_heads"]),
        mlp_dim=int(c["decoder_transformer_mlp_dim"]),
        activation=act,
        attention_downsample_rate=int(c["decoder_attention_downsample_rate"]),
    )
    mask_decoder = EfficientSamMaskDecoder(
        transformer_dim=dim,
        transformer=transformer,
        num_multimask_outputs=int(c["num_multimask_outputs"]),
        activation=act,
        # The official builder hands the decoder one layer fewer (the output fc is separate).
        iou_head_depth=int(c["iou_head_depth"]) - 1,
        iou_head_hidden_dim=int(c["iou_head_hidden_dim"]),
        upscaling_layer_dims=list(c["decoder_upscaling_layer_dims"]),
    )
    return EfficientSam(
        encoder,
        prompt_encoder,
        mask_decoder,
        decoder_max_num_input_points=int(c["decoder_max_num_input_points"]),
        pixel_mean=c["pixel_mean"],
        pixel_std=c["pixel_std"],
    )


def efficient_sam_vit_t() -> EfficientSam:
    """EfficientSAM-Ti: ViT-T encoder (width 192, 3 heads), 10.2M parameters."""
    return efficient_sam_from_config({"encoder_patch_embed_dim": 192, "encoder_num_heads": 3})


def efficient_sam_vit_s() -> EfficientSam:
    """EfficientSAM-S: ViT-S encoder (width 384, 6 heads), 26.4M parameters."""
    return efficient_sam_from_config({"encoder_patch_embed_dim": 384, "encoder_num_heads": 6})
