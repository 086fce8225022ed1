"""The EfficientSAM model (image encoder + point prompt encoder + mask decoder) and its builders.

Builders (random initialisation, checkpoint-compatible state-dict keys):
:func:`efficient_sam_vit_t`, :func:`efficient_sam_vit_s`, and :func:`efficient_sam_from_config`
for the build settings of any size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import PixelNormalization
from persam.models.efficient_sam.image_encoder import EfficientSamImageEncoder
from persam.models.efficient_sam.mask_decoder import EfficientSamMaskDecoder, EfficientSamTwoWayTransformer
from persam.models.efficient_sam.prompt_encoder import EfficientSamPromptEncoder

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


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
