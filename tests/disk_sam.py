"""A scripted SAM whose masks are known in advance: discs around the prompt point.

It has SAM's module interface (``image_encoder`` / ``prompt_encoder`` / ``mask_decoder``), so the
same three modules can be placed inside our :class:`persam.models.sam.Sam` and inside the official
``segment_anything`` ``Sam``. Point ``p`` (first prompt point, on the 1024 frame) gives, for mask
token ``k``, the low-res logits ``(RADII[k] - |x - p| + TEXTURE * t(x)) / SLOPE`` where ``t`` is
the image brightness (mean normalised channel, averaged over 16x16 pixel cells): discs whose rim
follows the image a little, so that crops of the same image see slightly different masks. The
predicted IoU is a smooth function of the point and the token, so that filtering and ranking by it
are exercised. Point coordinates are snapped to 1/16 pixel, so that float32 and float64 callers
get the same masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.backbones.sam import SamBackbone
from persam.models.sam import Sam

#: Disc radius of each mask token, in pixels of the 1024 frame (token 0: the single-mask output).
RADII = (120.0, 40.0, 90.0, 160.0)
SLOPE = 50.0
TEXTURE = 20.0


class DiskImageEncoder(nn.Module):
    img_size = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.mean(1, keepdim=True), 16)


class DiskPromptEncoder(nn.Module):
    embed_dim = 2
    image_embedding_size = (64, 64)
    input_image_size = (1024, 1024)
    mask_input_size = (256, 256)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 1, 64, 64)

    def forward(self, points, boxes, masks):
        coords, _ = points
        snapped = torch.round((coords.double() + 0.5) * 16) / 16
        return snapped.float(), torch.zeros(coords.shape[0], 1, 64, 64)


class DiskMaskDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(
        self,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        multimask_output,
        attn_sim=None,
        target_embedding=None,
    ):
        p = sparse_prompt_embeddings[:, 0, :]  # [B, 2]
        centres = (torch.arange(256, dtype=torch.float32) + 0.5) * 4
        dx = centres[None, None, :] - p[:, 0, None, None]
        dy = centres[None, :, None] - p[:, 1, None, None]
        dist = torch.sqrt(dx * dx + dy * dy)  # [B, 256, 256]
        texture = F.interpolate(image_embeddings, size=(256, 256), mode="bilinear", align_corners=False)
        radii = torch.tensor(RADII)[None, :, None, None]
        logits = (radii - dist[:, None] + TEXTURE * texture) / SLOPE
        k = torch.arange(4, dtype=torch.float32)[None, :]
        iou = 0.5 + 0.45 * torch.sin(p[:, :1] / 97.0 + k) * torch.cos(p[:, 1:] / 53.0 - 2 * k)
        if multimask_output:
            return logits[:, 1:], iou[:, 1:]
        return logits[:, :1], iou[:, :1]


def disk_modules() -> tuple[nn.Module, nn.Module, nn.Module]:
    """Fresh (image encoder, prompt encoder, mask decoder)."""
    return DiskImageEncoder(), DiskPromptEncoder(), DiskMaskDecoder()


def disk_backbone() -> SamBackbone:
    """The disc model as our SAM backbone."""
    return SamBackbone(Sam(*disk_modules()).eval(), name="disk_sam", checkpoint_id="scripted")
