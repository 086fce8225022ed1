"""The Segment Anything model (image encoder + prompt encoder + mask decoder) and its builders.

Builders (random initialisation, checkpoint-compatible state-dict keys):
:func:`sam_vit_b`, :func:`sam_vit_l`, :func:`sam_vit_h`, :func:`mobile_sam_vit_t`, and
:func:`sam_from_config` for a JSON-style description of any size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import PixelNormalization
from persam.models.image_encoder import ImageEncoderViT
from persam.models.mask_decoder import MaskDecoder
from persam.models.prompt_encoder import PromptEncoder
from persam.models.transformer import TwoWayTransformer

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
PROMPT_EMBED_DIM = 256
IMAGE_SIZE = 1024
PATCH_SIZE = 16


class Sam(PixelNormalization, nn.Module):
    """Segment Anything: encodes a 1024x1024 padded image once, then decodes prompts.

    ``pixel_mean`` / ``pixel_std`` are non-persistent buffers (constants, not in checkpoints).
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self._register_pixel_stats(pixel_mean, pixel_std)

    @property
    def img_size(self) -> int:
        """Side of the square encoder input (1024)."""
        return int(self.prompt_encoder.input_image_size[0])

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``[B, 3, h, w]`` pixel values (uint8 or float, 0..255) and zero-pads them at
        the bottom/right to ``[B, 3, img_size, img_size]`` float32."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """``[B, C, 256, 256]`` low-res maps -> ``[B, C, H, W]``: bilinear to the padded frame, crop
        the resized image ``input_size``, bilinear to ``original_size`` (align_corners=False).

        Only the low-res rows / columns that reach the crop are up-sampled: with the scale kept at
        exactly ``img_size / 256``, every kept output pixel reads the same two source rows and
        columns with the same weights as in the full up-sampling, so the result is bit-identical,
        and the padding of non-square images costs nothing.
        """
        h_low, w_low = masks.shape[-2:]
        fy, fx = self.img_size / h_low, self.img_size / w_low
        if fy.is_integer() and fx.is_integer():
            fy, fx = int(fy), int(fx)
            # Output row i samples source row (i + 0.5) / fy - 0.5: the kept rows (< input_size[0])
            # read source rows up to ceil(input_size[0] / fy) at most; columns likewise.
            rows = min(h_low, -(-input_size[0] // fy) + 1)
            cols = min(w_low, -(-input_size[1] // fx) + 1)
            masks = F.interpolate(
                masks[..., :rows, :cols], (rows * fy, cols * fx), mode="bilinear", align_corners=False
            )
        else:
            masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)


def _prompt_and_decoder(embed_dim: int = PROMPT_EMBED_DIM) -> tuple[PromptEncoder, MaskDecoder]:
    grid = IMAGE_SIZE // PATCH_SIZE
    prompt_encoder = PromptEncoder(
        embed_dim=embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=embed_dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _sam_vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...]) -> Sam:
    image_encoder = ImageEncoderViT(
        img_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        out_chans=PROMPT_EMBED_DIM,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=global_attn_indexes,
    )
    return Sam(image_encoder, *_prompt_and_decoder())


def sam_vit_b() -> Sam:
    """SAM ViT-B (checkpoint ``sam_vit_b_01ec64.pth``)."""
    return _sam_vit(768, 12, 12, (2, 5, 8, 11))


def sam_vit_l() -> Sam:
    """SAM ViT-L (checkpoint ``sam_vit_l_0b3195.pth``)."""
    return _sam_vit(1024, 24, 16, (5, 11, 17, 23))


def sam_vit_h() -> Sam:
    """SAM ViT-H (checkpoint ``sam_vit_h_4b8939.pth``)."""
    return _sam_vit(1280, 32, 16, (7, 15, 23, 31))


def mobile_sam_vit_t() -> Sam:
    """MobileSAM: TinyViT image encoder with SAM's prompt encoder and mask decoder
    (checkpoint ``mobile_sam.pt``)."""
    from persam.models.tiny_vit import TinyViT

    image_encoder = TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        num_classes=1000,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
    )
    return Sam(image_encoder, *_prompt_and_decoder())


# ----------------------------------------------------------------- config
_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def parse_activation(spec: str | None, default: type[nn.Module]) -> type[nn.Module]:
    """``"GELU"``, ``"nn.ReLU"``, ``"torch.nn.GELU"`` or ``"gelu"`` -> the activation class."""
    if spec is None:
        return default
    name = str(spec).rsplit(".", 1)[-1].strip().lower()
    if name.endswith("()"):
        name = name[:-2]
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {spec!r} (expected one of {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def parse_norm_layer(spec: str | None) -> Any:
    """``"LayerNorm"`` or ``"LayerNorm(eps=1e-6)"`` -> a LayerNorm constructor."""
    if spec is None:
        return nn.LayerNorm
    m = re.fullmatch(r"\s*(?:torch\.)?(?:nn\.)?LayerNorm\s*(?:\(\s*(?:eps\s*=\s*([^)\s]+))?\s*\))?\s*", spec)
    if m is None:
        raise ValueError(f"unsupported norm_layer {spec!r} (expected 'LayerNorm' or 'LayerNorm(eps=...)')")
    return partial(nn.LayerNorm, eps=float(m.group(1))) if m.group(1) else nn.LayerNorm


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _image_encoder_from_config(cfg: dict[str, Any]) -> nn.Module:
    kwargs = {k: v for k, v in cfg.items() if k != "class"}
    cls = cfg.get("class", "ImageEncoderViT")
    if cls == "ImageEncoderViT":
        kwargs["norm_layer"] = parse_norm_layer(kwargs.get("norm_layer"))
        kwargs["act_layer"] = parse_activation(kwargs.get("act_layer"), nn.GELU)
        return ImageEncoderViT(**_tuples(kwargs))
    if cls == "TinyViT":
        from persam.models.tiny_vit import TinyViT

        return TinyViT(**_tuples(kwargs))
    raise ValueError(f"unknown image_encoder class {cls!r} (expected 'ImageEncoderViT' or 'TinyViT')")


def sam_from_config(cfg: dict[str, Any]) -> Sam:
    """Builds a :class:`Sam` from a description with ``image_encoder``, ``prompt_encoder``,
    ``mask_decoder`` (with a nested ``transformer``) and optional ``pixel_mean`` / ``pixel_std``
    (every constructor argument by name; classes and activations as strings). Keys starting
    with ``_`` are ignored."""
    try:
        enc_cfg, pe_cfg, dec_cfg = cfg["image_encoder"], cfg["prompt_encoder"], cfg["mask_decoder"]
    except KeyError as e:
        raise ValueError(f"SAM config is missing the section {e.args[0]!r}") from None
    image_encoder = _image_encoder_from_config(enc_cfg)

    pe_kwargs = {k: v for k, v in pe_cfg.items() if k != "class"}
    pe_kwargs["activation"] = parse_activation(pe_kwargs.get("activation"), nn.GELU)
    prompt_encoder = PromptEncoder(**_tuples(pe_kwargs))

    dec_kwargs = {k: v for k, v in dec_cfg.items() if k != "class"}
    tr_kwargs = {k: v for k, v in dec_kwargs.pop("transformer").items() if k != "class"}
    tr_kwargs["activation"] = parse_activation(tr_kwargs.get("activation"), nn.ReLU)
    dec_kwargs["activation"] = parse_activation(dec_kwargs.get("activation"), nn.GELU)
    mask_decoder = MaskDecoder(transformer=TwoWayTransformer(**tr_kwargs), **dec_kwargs)

    return Sam(
        image_encoder,
        prompt_encoder,
        mask_decoder,
        pixel_mean=cfg.get("pixel_mean", PIXEL_MEAN),
        pixel_std=cfg.get("pixel_std", PIXEL_STD),
    )
