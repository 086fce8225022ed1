"""The SAM prompt encoder + mask decoder + mask post-processing as one traceable module, with the
input / output interface of the official SAM ONNX decoder.

Inputs (float32 throughout, so that any ONNX runtime, a browser's included, can feed them):

==================  ==================  ======================================================
name                shape               meaning
==================  ==================  ======================================================
``image_embeddings``  ``[1, C, 64, 64]``  the image encoder's output
``point_coords``    ``[1, N, 2]``       (x, y) on the resized image (longest side 1024)
``point_labels``    ``[1, N]``          -1 padding point, 0 background, 1 foreground,
                                        2 box top-left, 3 box bottom-right
``mask_input``      ``[1, 1, 256, 256]``  low-res mask logits of an earlier prediction
``has_mask_input``  ``[1]``             1 to use ``mask_input``, 0 to ignore it
``orig_im_size``    ``[2]``             (H, W) of the original image
==================  ==================  ======================================================

``N`` is free. Without a box, add one padding point (0, 0) with label -1, as
:class:`~persam.models.prompt_encoder.PromptEncoder` does itself.

Outputs: ``masks [1, M, H, W]`` logits at the original size, ``iou_predictions [1, M]`` and
``low_res_masks [1, M, 256, 256]``, with M = 4 (every mask token) or M = 1 with
``return_single_mask`` (mask 0 when N > 2 points, counting the padding point, else the best of
masks 1..3 by predicted IoU). ``use_stability_score`` replaces the IoU predictions by the
stability scores of the low-res masks; ``return_extra_metrics`` adds ``stability_scores [1, M]``
and ``areas [1, M]`` (int64 pixel counts of the masks > 0) before ``low_res_masks``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.sam import Sam

#: Offset of the stability score: IoU of the masks cut at logit +1 and at logit -1.
STABILITY_OFFSET = 1.0

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)


def output_names(return_extra_metrics: bool) -> tuple[str, ...]:
    """Names of the decoder's outputs, in order."""
    if return_extra_metrics:
        return ("masks", "iou_predictions", "stability_scores", "areas", "low_res_masks")
    return ("masks", "iou_predictions", "low_res_masks")


def stability_score(logits: torch.Tensor, threshold: float, offset: float = STABILITY_OFFSET) -> torch.Tensor:
    """``[B, M, H, W]`` logits -> ``[B, M]`` IoU of the masks cut at ``threshold +/- offset``
    (the stricter mask lies inside the looser one, so the IoU is the ratio of their areas)."""
    # int32 counts stay exact for any image size a runtime can hold (float32 would stop at 2^24).
    inner = (logits > threshold + offset).to(torch.int32).sum(dim=(-2, -1))
    outer = (logits > threshold - offset).to(torch.int32).sum(dim=(-2, -1))
    return inner.to(torch.float32) / outer.to(torch.float32)


class SamOnnxDecoder(nn.Module):
    """Prompt encoder, mask decoder and post-processing of a :class:`~persam.models.sam.Sam`
    (SAM ViT-B/L/H, MobileSAM), written with tensor arithmetic only, so that it traces into one
    graph whose number of points is dynamic. See the module docstring for the interface.

    The arithmetic is that of :meth:`persam.backbones.sam.SamBackbone.decode` and
    :meth:`~persam.models.sam.Sam.postprocess_masks`: a padding point carries the "not a point"
    embedding and no position, labels 0..3 add their type embedding to the position encoding,
    and ``has_mask_input`` blends the downscaled mask with the "no mask" embedding.
    """

    def __init__(
        self,
        model: Sam,
        *,
        return_single_mask: bool = False,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = int(model.img_size)
        self.mask_threshold = float(model.mask_threshold)
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.return_extra_metrics = return_extra_metrics
        # Depends on the weights only: computed once here, a constant of the exported graph.
        with torch.no_grad():
            image_pe = model.prompt_encoder.get_dense_pe()
        self.register_buffer("image_pe", image_pe, persistent=False)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """``[B, N, 2]`` coordinates + ``[B, N]`` float labels -> sparse tokens ``[B, N, C]``."""
        pe_layer = self.prompt_encoder.pe_layer
        pe = pe_layer.forward_with_coords(point_coords + 0.5, self.prompt_encoder.input_image_size)
        lab = point_labels[..., None]
        out = torch.where(lab == -1, self.prompt_encoder.not_a_point_embed.weight, pe)
        for i, embedding in enumerate(self.prompt_encoder.point_embeddings):
            out = torch.where(lab == i, pe + embedding.weight, out)
        return out

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 256, 256]`` logits and ``[1]`` flag -> dense embedding ``[B, C, 64, 64]``."""
        flag = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return flag * self.prompt_encoder.mask_downscaling(mask_input) + (1 - flag) * no_mask

    def resized_size(self, orig_im_size: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` -> int64 ``(h, w)`` of the image resized to longest side ``img_size``
        (rounded half up, as :class:`~persam.transforms.ResizeLongestSide`)."""
        size = orig_im_size.to(torch.float32)
        scale = self.img_size / torch.max(size)
        return torch.floor(size * scale + 0.5).to(torch.int64)

    def upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """``[B, M, 256, 256]`` -> ``[B, M, H, W]``: bilinear to the padded frame, crop the resized
        image, bilinear to the original size (align_corners=False throughout)."""
        masks = F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        resized = self.resized_size(orig_im_size)
        size = orig_im_size.to(torch.int64)
        if torch.jit.is_tracing():
            # The TorchScript exporter records 0-d tensors used as sizes as dynamic values.
            h_in, w_in, h, w = resized[0], resized[1], size[0], size[1]
        else:
            h_in, w_in = int(resized[0].item()), int(resized[1].item())
            h, w = int(size[0].item()), int(size[1].item())
            # Bounds torch.export cannot infer from data-dependent values.
            for value in (h_in, w_in, h, w):
                torch._check(value > 0)
            torch._check(h_in <= self.img_size)
            torch._check(w_in <= self.img_size)
        masks = masks[..., :h_in, :w_in]
        return F.interpolate(masks, (h, w), mode="bilinear", align_corners=False)

    def select_single(
        self, masks: torch.Tensor, iou: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt set: mask 0 for more than two points (the prompt is unambiguous),
        else the best of the multimask outputs by score."""
        num_points = torch.ones_like(point_labels).sum(dim=1)  # [B], a tensor: N stays dynamic
        best_multi = torch.argmax(iou[:, 1:], dim=1) + 1
        best = torch.where(num_points > 2, torch.zeros_like(best_multi), best_multi)
        index = best[:, None]
        picked = torch.gather(iou, 1, index)
        b, _, hh, ww = masks.shape
        picked_masks = torch.gather(masks, 1, index[:, :, None, None].expand(b, 1, hh, ww))
        return picked_masks, picked

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """See the module docstring for the shapes; returns the outputs named by :func:`output_names`."""
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        low_res, scores = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            # Expanded to the input's batch so that the tracer records an operation, not one
            # constant copy of the [4096, C] encoding per attention layer in the file.
            image_pe=self.image_pe.expand(image_embeddings.shape[0], -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        if self.use_stability_score:
            scores = stability_score(low_res, self.mask_threshold)
        if self.return_single_mask:
            low_res, scores = self.select_single(low_res, scores, point_labels)
        masks = self.upscale(low_res, orig_im_size)
        if self.return_extra_metrics:
            stability = stability_score(masks, self.mask_threshold)
            areas = (masks > self.mask_threshold).to(torch.int64).sum(dim=(-2, -1))
            return masks, scores, stability, areas, low_res
        return masks, scores, low_res
