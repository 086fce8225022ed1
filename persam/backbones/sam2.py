"""SAM 2 / 2.1 behind the :class:`~persam.backbones.base.Backbone` interface (the official image
predictor's behaviour, ``SAM2ImagePredictor``).

Geometry: the image is stretched to 1024x1024 (``uint8 / 255``, bilinear with antialiasing, no
aspect-ratio preservation and no padding, unlike SAM), then normalised with the ImageNet
statistics; point ``x`` / ``y`` are scaled independently (``x / W * 1024``, ``y / H * 1024``); the
256x256 low-res logits go straight back to ``(H, W)`` with one bilinear resize.

Features: the stride-16 level plus ``no_mem_embed`` is the image embedding (:attr:`features`,
``[1, C, 64, 64]``); the stride-4 and stride-8 levels, already projected by the decoder's
``conv_s0`` / ``conv_s1``, are kept for the decoder's high-resolution skips
(:attr:`Sam2Backbone.high_res_features`).

Prompts: a box becomes two points labelled 2 and 3 placed *before* the clicks, and a padding
point (label -1) is appended to every non-empty point set, box corners included; a call with
neither points nor box has no sparse token. ``mask_input`` (``[B, 1, 256, 256]`` logits) goes into
the prompt encoder as given.

Where SAM 2's decoder differs from SAM's, and what PerSAM does there:

* **Object score.** An extra token predicts whether the object is present
  (:attr:`DecoderOutput.object_score_logits`, one logit per prompt set). As in the official image
  predictor it is reported only: masks are never replaced by "no object" logits on this path
  (the video model does gate on it).
* **High-resolution skips.** The up-scaling path adds the stride-8 / stride-4 encoder features;
  PerSAM's location prior and target embedding act on the stride-16 embedding only, and the skips
  are used unchanged.
* **Single-mask calls** use the dynamic fallback of the official decoder: when mask token 0 is
  unstable (stability below 0.98), the best of the three multimask outputs by predicted IoU is
  returned instead (:attr:`Sam2DecoderOutput.fallback_used`). IoU predictions are sigmoids.
* **PerSAM hooks** are those of SAM: ``attn_sim`` biases the token-to-image attention of every
  two-way block, ``target_embedding`` is added to all decoder tokens (the object-score token
  included). PerSAM-F's two weights blend SAM 2's three multimask outputs as they blend SAM's.
* ``low_res_logits`` are the decoder's raw logits (the official post-processing up-samples them
  unclamped); :meth:`Sam2Backbone.predict` returns them clamped to ±32 like the official
  predictor. A mask prompt built from ``low_res_logits`` is therefore fed unclamped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone, DecoderOutput, check_image
from persam.models.sam2 import Sam2
from persam.models.sam2.prompt_encoder import BOX_BOTTOM_RIGHT_LABEL, BOX_TOP_LEFT_LABEL

#: The official predictor clamps the low-res logits it returns to this range.
LOW_RES_CLAMP = 32.0


@dataclass
class Sam2DecoderOutput(DecoderOutput):
    """:class:`DecoderOutput` plus SAM 2's selection details.

    Attributes:
        all_iou_predictions: ``[B, 4]`` IoU predictions of all mask tokens, before selection.
        stability_scores: ``[B]`` stability score of mask token 0.
        fallback_used: bool ``[B]`` for single-mask calls (True where the best multimask output
            replaced token 0), None for multimask calls.
    """

    all_iou_predictions: torch.Tensor | None = None
    stability_scores: torch.Tensor | None = None
    fallback_used: torch.Tensor | None = None


class Sam2Backbone(Backbone):
    """A :class:`~persam.models.sam2.Sam2` module bound to one image at a time; the arguments are
    those of :class:`~persam.backbones.base.Backbone`."""

    _high_res: list[torch.Tensor] | None = None
    _image_pe: torch.Tensor | None = None

    def __init__(
        self, module: Sam2, *, name: str, checkpoint_id: str, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__(module, name=name, checkpoint_id=checkpoint_id, dtype=dtype)

    # ------------------------------------------------------------------ image
    @property
    def img_size(self) -> int:
        """Side of the square encoder input (1024)."""
        return int(self.model.image_size)

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` RGB -> ``[1, 3, 1024, 1024]`` float32: ``/ 255``, bilinear antialiased
        stretch, ImageNet normalisation (bit-exact with the official transforms)."""
        image = check_image(image)
        # A private copy: torch cannot wrap read-only arrays (e.g. decoded video frames) safely.
        x = torch.from_numpy(np.array(image, dtype=np.uint8, order="C", copy=True)).to(self.device)
        x = x.permute(2, 0, 1)[None].to(torch.float32) / 255.0
        s = self.img_size
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        return self.model.preprocess(x)

    @torch.no_grad()
    def _encode_image(self, image: np.ndarray) -> None:
        image = check_image(image)
        x = self.preprocess_image(image)
        with self._autocast():
            out = self.model.forward_image(x, with_pos_enc=False)
            features = self.model.image_embedding(out.vision_features)
        self._features = features.float()
        self._high_res = [f.float() for f in out.backbone_fpn[:-1]]
        self._original_size = (int(image.shape[0]), int(image.shape[1]))

    def reset_image(self) -> None:
        super().reset_image()
        self._high_res = None
        self._image_pe = None

    @property
    def high_res_features(self) -> list[torch.Tensor]:
        """The decoder's high-resolution inputs of the current image, already projected:
        ``[1, C/8, 256, 256]`` (stride 4) and ``[1, C/4, 128, 128]`` (stride 8), float32."""
        self._require_image()
        return self._high_res

    @property
    def image_pe(self) -> torch.Tensor:
        """Dense positional encoding of the embedding grid, ``[1, C, 64, 64]`` (computed once; it
        depends on the weights only, and :meth:`reset_image` drops it)."""
        if self._image_pe is None:
            self._image_pe = self.model.sam_prompt_encoder.get_dense_pe()
        return self._image_pe

    # ---------------------------------------------------------------- prompts
    def transform_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` (x, y) in original pixels -> float32 (x, y) on the 1024 frame (x and y scaled
        independently, ``x / W * 1024``)."""
        h, w = self.original_size
        coords = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
        return torch.stack([coords[..., 0] / w, coords[..., 1] / h], dim=-1) * self.img_size

    def prompt_points(
        self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Box corners (labels 2, 3) then clicks, on the 1024 frame: ``([B, M, 2], [B, M])``, or
        None without points and box."""
        dev = self.device
        coords, labels = [], []
        batch = None
        if boxes is not None:
            box_t = torch.as_tensor(boxes, dtype=torch.float32, device=dev)
            if box_t.ndim != 2 or box_t.shape[-1] != 4:
                raise ValueError(f"boxes must be [B, 4], got {tuple(box_t.shape)}")
            batch = box_t.shape[0]
            coords.append(self.transform_coords(box_t.reshape(-1, 2, 2)))
            corner = torch.tensor([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], device=dev)
            labels.append(corner.expand(batch, 2))
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords")
            pc = torch.as_tensor(point_coords, device=dev)
            pl = torch.as_tensor(point_labels, device=dev)
            if pc.ndim != 3 or pc.shape[-1] != 2:
                raise ValueError(f"point_coords must be [B, N, 2], got {tuple(pc.shape)}")
            if pl.shape != pc.shape[:2]:
                raise ValueError(
                    f"point_labels must be [B, N] = {tuple(pc.shape[:2])}, got {tuple(pl.shape)}"
                )
            if batch is not None and pc.shape[0] != batch:
                raise ValueError(
                    f"prompt sets disagree on the batch size B: {pc.shape[0]} points, {batch} boxes"
                )
            coords.append(self.transform_coords(pc))
            labels.append(pl.to(torch.int64))
        if not coords:
            return None
        return torch.cat(coords, dim=1), torch.cat(labels, dim=1)

    def encode_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-encoder outputs: sparse ``[B, T, C]`` (box corners, clicks, one padding token;
        ``T = 0`` without points and box) and dense ``[B, C, 64, 64]`` embeddings."""
        points = self.prompt_points(point_coords, point_labels, boxes)
        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, device=self.device, dtype=torch.float32)
            expected = tuple(self.model.sam_prompt_encoder.mask_input_size)
            if mask_t.ndim != 4 or mask_t.shape[1] != 1 or tuple(mask_t.shape[-2:]) != expected:
                raise ValueError(
                    f"mask_input must be [B, 1, {expected[0]}, {expected[1]}], got {tuple(mask_t.shape)}"
                )
            if points is not None and mask_t.shape[0] != points[0].shape[0]:
                raise ValueError(
                    f"prompt sets disagree on the batch size B: {points[0].shape[0]} point sets, "
                    f"{mask_t.shape[0]} masks"
                )
        return self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask_t)

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
    ) -> Sam2DecoderOutput:
        """See :meth:`Backbone.decode`. Multimask calls return mask tokens 1..3 in token order;
        single-mask calls token 0 or, where it is unstable, the best multimask output."""
        features = self.features
        sparse, dense = self.encode_prompts(point_coords, point_labels, boxes=boxes, mask_input=mask_input)
        dev = self.device
        out = self.model.sam_mask_decoder(
            features,
            self.image_pe,
            sparse,
            dense,
            multimask_output=multimask_output,
            high_res_features=self.high_res_features,
            attn_sim=None if attn_sim is None else attn_sim.to(dev, torch.float32),
            target_embedding=None if target_embedding is None else target_embedding.to(dev, torch.float32),
        )
        return Sam2DecoderOutput(
            low_res_logits=out.masks.float(),
            iou_predictions=out.iou_predictions.float(),
            object_score_logits=out.object_score_logits[:, 0].float(),
            all_iou_predictions=out.all_iou_predictions.float(),
            stability_scores=out.stability_scores,
            fallback_used=out.fallback_used,
        )

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        """``[B, C, 256, 256]`` -> ``[B, C, H, W]``: one bilinear resize (align_corners=False) of the
        unclamped logits, as the official predictor."""
        return F.interpolate(low_res.float(), self.original_size, mode="bilinear", align_corners=False)

    def mask_to_embedding_grid(self, mask: torch.Tensor | np.ndarray, pad_value: float = 0.0) -> torch.Tensor:
        """``[H, W]`` map -> ``[64, 64]`` float32 on the embedding grid: the image's stretch to
        1024x1024 (bilinear, antialiased; values as given), then bilinear down-sampling
        (align_corners=False). There is no padding, so ``pad_value`` is unused."""
        del pad_value
        m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
        m = m.to(self.device, torch.float32)
        if m.ndim != 2:
            raise ValueError(f"mask must be [H, W], got shape {tuple(m.shape)}")
        s = self.img_size
        m = F.interpolate(m[None, None], (s, s), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(m, self.image_embedding_size, mode="bilinear", align_corners=False)[0, 0]

    def predictor_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """``SAM2ImagePredictor.predict`` returns the low-res logits clamped to ±32."""
        return low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
