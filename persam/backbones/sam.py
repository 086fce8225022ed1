"""SAM and MobileSAM as a :class:`~persam.backbones.base.Backbone`.

Geometry (as the reference ``SamPredictor``): the image is resized with PIL bilinear so that its
longest side is 1024, normalised with ``pixel_mean`` / ``pixel_std`` and zero-padded at the
bottom/right to 1024x1024; prompts are scaled by the same factors; low-res logits (256x256 on the
padded frame) are brought back by bilinear up-sampling, cropping and bilinear resizing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone, DecoderOutput
from persam.models.sam import Sam
from persam.transforms import ResizeLongestSide, resize_uint8


class SamBackbone(Backbone):
    """A :class:`Sam` module (SAM ViT-B/L/H or MobileSAM) bound to one image at a time; the
    arguments are those of :class:`~persam.backbones.base.Backbone`."""

    def __init__(
        self, module: Sam, *, name: str, checkpoint_id: str, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__(module, name=name, checkpoint_id=checkpoint_id, dtype=dtype)
        self.transform = ResizeLongestSide(self.model.img_size)
        self._input_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ image
    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` -> normalised, padded encoder input ``[1, 3, 1024, 1024]`` float32."""
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(x)

    def _encode_image(self, image: np.ndarray) -> None:
        super()._encode_image(image)
        self._input_size = self.transform.target_size(self._original_size)

    def reset_image(self) -> None:
        super().reset_image()
        self._input_size = None
        self._image_pe = None

    def _dense_pe(self) -> torch.Tensor:
        """``prompt_encoder.get_dense_pe()``, computed once: it depends on the weights only (and
        :meth:`reset_image`, to be called after changing them, drops it)."""
        if getattr(self, "_image_pe", None) is None:
            self._image_pe = self.model.prompt_encoder.get_dense_pe()
        return self._image_pe

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the resized image inside the padded 1024x1024 frame."""
        self._require_image()
        return self._input_size

    # ---------------------------------------------------------------- prompts
    def _scale(self) -> tuple[float, float]:
        (h0, w0), (h1, w1) = self.original_size, self.input_size
        return w1 / w0, h1 / h0

    def transform_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` (x, y) in original pixels -> (x, y) on the resized image (scaled in float64
        like the reference): float32, or float64 for float64 input, which the prompt encoder then
        normalises in float64 as the reference's batched ``predict_torch`` path does."""
        sx, sy = self._scale()
        scale = torch.tensor([sx, sy], dtype=torch.float64, device=coords.device)
        out = torch.float64 if coords.dtype == torch.float64 else torch.float32
        return (coords.to(torch.float64) * scale).to(out)

    def transform_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, 4]`` XYXY in original pixels -> float32 boxes on the resized image."""
        return self.transform_coords(boxes.reshape(-1, 2, 2)).reshape(-1, 4)

    def encode_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder output for ``B`` prompt sets in original pixels: sparse ``[B, T, C]`` and
        dense ``[B, C, 64, 64]`` embeddings."""
        dev = self.device
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords")
            coords = torch.as_tensor(point_coords, device=dev)
            labels = torch.as_tensor(point_labels, device=dev)
            if coords.ndim != 3 or coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be [B, N, 2], got {tuple(coords.shape)}")
            if labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point_labels must be [B, N] = {tuple(coords.shape[:2])}, got {tuple(labels.shape)}"
                )
            points = (self.transform_coords(coords), labels.to(torch.int64))
        box_t = None
        if boxes is not None:
            box_t = torch.as_tensor(boxes, device=dev)
            if box_t.ndim != 2 or box_t.shape[-1] != 4:
                raise ValueError(f"boxes must be [B, 4], got {tuple(box_t.shape)}")
            box_t = self.transform_boxes(box_t)
        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, device=dev, dtype=torch.float32)
            expected = self.model.prompt_encoder.mask_input_size
            if mask_t.ndim != 4 or mask_t.shape[1] != 1 or tuple(mask_t.shape[-2:]) != expected:
                raise ValueError(
                    f"mask_input must be [B, 1, {expected[0]}, {expected[1]}], got {tuple(mask_t.shape)}"
                )
        sizes = {t.shape[0] for t in (points[0] if points else None, box_t, mask_t) if t is not None}
        if len(sizes) > 1:
            raise ValueError(f"prompt sets disagree on the batch size B: {sorted(sizes)}")
        return self.model.prompt_encoder(points=points, boxes=box_t, masks=mask_t)

    # ---------------------------------------------------------------- decoder
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
        features = self.features
        sparse, dense = self.encode_prompts(point_coords, point_labels, boxes, mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=features,
            image_pe=self._dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            attn_sim=None if attn_sim is None else attn_sim.to(self.device, torch.float32),
            target_embedding=None
            if target_embedding is None
            else target_embedding.to(self.device, torch.float32),
        )
        return DecoderOutput(low_res_logits=low_res.float(), iou_predictions=iou.float())

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        low_res = low_res.float()
        if low_res.device.type != "cpu" or low_res.shape[0] * low_res.shape[1] == 1:
            return self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        # On the CPU, one prompt set at a time in channels-last layout: the same per-pixel
        # arithmetic (bit-identical) but 2-4x faster than one NCHW call, and the large
        # intermediate of only one set is alive at a time.
        b, c = low_res.shape[:2]
        out = torch.empty(b, c, *self.original_size, dtype=torch.float32)
        for i in range(b):
            one = low_res[i : i + 1].contiguous(memory_format=torch.channels_last)
            out[i] = self.model.postprocess_masks(one, self.input_size, self.original_size)[0]
        return out

    # ------------------------------------------------------------------ masks
    def resize_uint8(self, array: np.ndarray) -> np.ndarray:
        """Resizes a uint8 ``[H, W]`` or ``[H, W, 3]`` array exactly like an image (PIL bilinear,
        longest side to 1024)."""
        return self.transform.apply_image(np.asarray(array))

    def mask_to_embedding_grid(self, mask: torch.Tensor | np.ndarray, pad_value: float = 0.0) -> torch.Tensor:
        """Resamples ``[H, W]`` onto the ``[64, 64]`` embedding grid (float32).

        A uint8 map is resized with the image's PIL bilinear filter (bit-exact with the image
        path); a float map with torch's antialiased bilinear filter (PIL's filter in float). The
        result is padded with ``pad_value`` to the 1024x1024 frame and down-sampled bilinearly
        (align_corners=False, no antialias).
        """
        is_uint8 = (isinstance(mask, np.ndarray) and mask.dtype == np.uint8) or (
            isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8
        )
        if mask.ndim != 2:
            raise ValueError(f"mask must be [H, W], got shape {tuple(mask.shape)}")
        size = self.transform.target_size(tuple(mask.shape))
        if is_uint8:
            array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else mask
            resized = torch.from_numpy(resize_uint8(array, size).astype(np.float32)).to(self.device)
        else:
            m = torch.as_tensor(mask, dtype=torch.float32, device=self.device)[None, None]
            resized = F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]
        frame = self.model.img_size
        padded = F.pad(resized, (0, frame - size[1], 0, frame - size[0]), value=float(pad_value))
        grid = F.interpolate(
            padded[None, None], size=self.image_embedding_size, mode="bilinear", align_corners=False
        )
        return grid[0, 0]
