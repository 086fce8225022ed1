"""EfficientSAM (ViT-T / ViT-S) behind the :class:`~persam.backbones.base.Backbone` interface.

Geometry (unlike SAM): the image is stretched anisotropically to the square encoder input
(bilinear, no antialias, no padding), so the ``64 x 64`` embedding grid always covers the whole
image, point x / y coordinates are scaled independently, and low-res logits go straight back to
the original size with one bicubic resize.

Prompts: EfficientSAM sees exactly ``decoder_max_num_input_points`` (6) labelled points per
prompt set. A box becomes its two corners, ``(x0, y0)`` with label 2 and ``(x1, y1)`` with label 3,
placed *before* the points so that a box is never lost when more than 6 prompts are given (the
decoder output does not depend on the token order otherwise; SAM puts points first). Sets with
fewer points are padded with ``(-1, -1)`` / label -1 (ragged prompt sets can be padded the same
way: a point at ``(-1, -1)`` with label -1 is exactly a padding token), longer ones are truncated
to the first 6. A coordinate below 0 becomes -1 independently of the other coordinate;
coordinates beyond the image are not clamped.
EfficientSAM has no dense (mask) prompt: ``mask_input`` is accepted and ignored, so PerSAM's
refinement steps rely on their points and box alone.

Masks: EfficientSAM's outputs are binarised with ``logits >= mask_threshold`` (0.0), whereas
SAM uses ``logits > 0``; use :meth:`EfficientSamBackbone.binarize`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone, DecoderOutput, check_image

BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3


class EfficientSamBackbone(Backbone):
    """An :class:`~persam.models.efficient_sam.EfficientSam` module bound to one image at a time;
    the arguments are those of :class:`~persam.backbones.base.Backbone`."""

    mask_threshold: float = 0.0

    # ------------------------------------------------------------------ image
    @property
    def img_size(self) -> int:
        """Side of the square encoder input (1024)."""
        return int(self.model.img_size)

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` RGB -> ``[1, 3, S, S]`` float32 encoder input: ``uint8 / 255``,
        anisotropic bilinear stretch, mean/std normalisation."""
        image = check_image(image)
        # A private copy: torch cannot wrap read-only arrays (e.g. decoded video frames) safely.
        x = torch.from_numpy(np.array(image, dtype=np.uint8, order="C", copy=True)).to(self.device)
        x = x.permute(2, 0, 1)[None].to(torch.float32) / 255.0
        return self.model.preprocess(x)

    # ---------------------------------------------------------------- decoder
    def prompt_points(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merges boxes and points into EfficientSAM's point prompts (original-image pixels).

        Returns ``coords [B, M, 2]`` float32 and ``labels [B, M]`` int64 with the two box corners
        (labels 2, 3) first, then the points; ``M`` may be 0 (every token is then padding).
        """
        dev = self.device
        parts_xy: list[torch.Tensor] = []
        parts_lb: list[torch.Tensor] = []
        batch = None
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=dev)
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must have shape [B, 4], got {tuple(boxes.shape)}")
            batch = boxes.shape[0]
            parts_xy.append(boxes.reshape(batch, 2, 2))
            corner_labels = torch.tensor([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], device=dev)
            parts_lb.append(corner_labels.expand(batch, 2))
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels is required with point_coords")
            point_coords = torch.as_tensor(point_coords, dtype=torch.float32, device=dev)
            point_labels = torch.as_tensor(point_labels, dtype=torch.int64, device=dev)
            if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
                raise ValueError(f"point_coords must have shape [B, N, 2], got {tuple(point_coords.shape)}")
            if point_labels.shape != point_coords.shape[:2]:
                want, got = tuple(point_coords.shape[:2]), tuple(point_labels.shape)
                raise ValueError(f"point_labels must have shape {want}, got {got}")
            if batch is not None and point_coords.shape[0] != batch:
                raise ValueError(f"{point_coords.shape[0]} point sets but {batch} boxes")
            batch = point_coords.shape[0]
            parts_xy.append(point_coords)
            parts_lb.append(point_labels)
        if batch is None:
            batch = 1
        if not parts_xy:
            return torch.zeros(batch, 0, 2, device=dev), torch.zeros(batch, 0, dtype=torch.int64, device=dev)
        return torch.cat(parts_xy, dim=1), torch.cat(parts_lb, dim=1)

    @torch.no_grad()
    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """See :meth:`Backbone.decode`. ``mask_input`` is ignored (EfficientSAM has no mask prompt);
        with ``multimask_output`` the 3 outputs are mask tokens 1..3 in token order (not sorted by
        IoU), otherwise mask token 0."""
        del mask_input  # no dense prompt in EfficientSAM
        coords, labels = self.prompt_points(point_coords, point_labels, boxes)
        h, w = self.original_size
        low_res, iou = self.model.predict_masks(
            self.features,
            coords[None],
            labels[None],
            multimask_output=multimask_output,
            input_h=h,
            input_w=w,
            attn_sim=None if attn_sim is None else attn_sim.to(self.device, torch.float32),
            target_embedding=None
            if target_embedding is None
            else target_embedding.to(self.device, torch.float32),
        )
        return DecoderOutput(low_res_logits=low_res[0].float(), iou_predictions=iou[0].float())

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        """``[B, C, 256, 256]`` -> ``[B, C, H, W]``: one bicubic resize (align_corners=False)."""
        return F.interpolate(low_res.float(), self.original_size, mode="bicubic", align_corners=False)

    def mask_to_embedding_grid(self, mask: torch.Tensor | np.ndarray, pad_value: float = 0.0) -> torch.Tensor:
        """``[H, W]`` map -> ``[h, w]`` float32 on the embedding grid: bilinear stretch to ``S x S``
        (as the image, values as given, no antialias), then bilinear down-sampling
        (align_corners=False). There is no padding, so ``pad_value`` is unused."""
        del pad_value
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        m = m.to(self.device, torch.float32)
        if m.ndim != 2:
            raise ValueError(f"mask must have shape [H, W], got {tuple(m.shape)}")
        m = m[None, None]
        s = self.img_size
        if tuple(m.shape[-2:]) != (s, s):
            m = F.interpolate(m, (s, s), mode="bilinear", align_corners=False)
        return F.interpolate(m, self.image_embedding_size, mode="bilinear", align_corners=False)[0, 0]

    # --------------------------------------------------------------- helpers
    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean masks from logits: ``logits >= mask_threshold`` (EfficientSAM's convention)."""
        return logits >= self.mask_threshold
