"""The promptable-segmentation backbone interface shared by SAM, MobileSAM and EfficientSAM.

Every PerSAM algorithm and every pipeline talks to a backbone only through :class:`Backbone`:
one image-encoder pass per image (:meth:`Backbone.set_image`), then any number of decoder calls
(:meth:`Backbone.decode`, batched over prompt sets) whose low-resolution logits are brought back to
the original image with :meth:`Backbone.postprocess`. Each backbone keeps its own geometry
(SAM: longest side resized to 1024 and bottom-right zero padding; EfficientSAM: anisotropic
stretch to 1024x1024), so algorithms never need to know which one they run on.

Conventions: images are ``uint8`` RGB arrays of shape ``[H, W, 3]``; points are ``(x, y)`` =
(column, row) in pixels of the original image; boxes are ``XYXY`` in original pixels; point labels
are 1 (foreground) and 0 (background).

Setting the image that is already set costs no encoder pass: :meth:`Backbone.set_image` compares
a content fingerprint (:func:`image_fingerprint`) of the new image with that of the current one,
so e.g. a reference mask drawn from clicks and the concept learned from it, or several concepts
segmented one after the other in the same photo, share one encoding.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from persam.io import InputError

#: Compute dtypes that run the image encoder under ``torch.autocast``.
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass
class DecoderOutput:
    """One batched decoder call.

    Attributes:
        low_res_logits: ``[B, C, 256, 256]`` float32 mask logits on the backbone's low-res frame.
        iou_predictions: ``[B, C]`` float32 predicted mask quality.
        object_score_logits: ``[B]`` float32 "object present" logits (> 0: present) for backbones
            that predict them (SAM 2), else None.
    """

    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    object_score_logits: torch.Tensor | None = None


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` if it is a non-empty ``uint8 [H, W, 3]`` array, else an :class:`InputError`."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be a uint8 [H, W, 3] RGB array, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"image is empty (shape {image.shape})")
    return image


def image_fingerprint(image: np.ndarray) -> str:
    """A cheap identity of an array's content: shape, dtype and a 128-bit BLAKE2b digest of its
    bytes in C order (whatever the memory layout). Two arrays get the same fingerprint exactly
    when they have the same shape, dtype and bytes (up to a hash collision, ~2^-64 for any two
    arrays); hashing runs at memory speed, a small fraction of an encoder pass."""
    a = np.ascontiguousarray(image)
    if a.dtype.hasobject:
        raise TypeError(f"cannot fingerprint an array of Python objects (dtype {a.dtype})")
    digest = hashlib.blake2b(a.reshape(-1).view(np.uint8), digest_size=16).hexdigest()
    return f"{a.dtype} {a.shape} {digest}"


class Backbone(ABC):
    """A promptable segmentation model bound to at most one image at a time.

    A subclass implements :meth:`preprocess_image` (its image geometry), the decoder calls and the
    post-processing; :meth:`set_image` runs the encoder, and skips it when the image is the one
    already set (same :func:`image_fingerprint`). The encoding is tied to the model as it was at
    that time: after changing the weights, the device or the compute dtype, call
    :meth:`reset_image`.

    Args:
        module: the model, with ``image_encoder`` and ``prompt_encoder`` sub-modules; it is put in
            eval mode and its parameters are frozen.
        name: registry name of the model (``"sam_vit_b"``, ``"efficient_sam_vit_t"``, ...).
        checkpoint_id: identity of the loaded weights (sha256 of the checkpoint file, or
            ``"random:<name>:<seed>"``), stored in concept files.
        dtype: compute dtype of the image encoder. ``bfloat16`` / ``float16`` run it under
            ``torch.autocast`` (weights stay float32); features are stored as float32 and the
            prompt encoder / mask decoder run in float32.
    """

    name: str
    model: nn.Module
    checkpoint_id: str
    dtype: torch.dtype = torch.float32
    #: :func:`image_fingerprint` of the encoded image, None when there is none.
    _image_key: str | None = None
    _features: torch.Tensor | None = None
    _original_size: tuple[int, int] | None = None

    def __init__(
        self, module: nn.Module, *, name: str, checkpoint_id: str, dtype: torch.dtype = torch.float32
    ) -> None:
        if dtype not in (torch.float32, *AUTOCAST_DTYPES):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.model = module.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.name = name
        self.checkpoint_id = checkpoint_id
        self.dtype = dtype

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray) -> None:
        """Makes ``image`` (``uint8 [H, W, 3]`` RGB) the current image: runs the image encoder
        once and keeps the result, unless the same image (same content, shape and dtype) is
        already set."""
        image = np.asarray(image)
        # Object arrays are never valid images: the encoder step rejects them with a clear error.
        key = None if image.dtype.hasobject else image_fingerprint(image)
        if key is not None and key == self._image_key:
            return
        self._image_key = None  # an encoder that fails leaves no image set
        self._encode_image(image)
        self._image_key = key

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` RGB -> the encoder input ``[1, 3, S, S]`` float32 on the model's
        device (the backbone's image geometry; a wrapper that delegates :meth:`set_image` to
        another backbone need not implement it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement preprocess_image")

    @torch.no_grad()
    def _encode_image(self, image: np.ndarray) -> None:
        """Checks ``image``, runs the image encoder on it (under autocast for bfloat16 / float16)
        and keeps the features as float32 (called by :meth:`set_image` for a new image only)."""
        image = check_image(image)
        x = self.preprocess_image(image)
        with self._autocast():
            features = self.model.image_encoder(x)
        self._features = features.float()
        self._original_size = (int(image.shape[0]), int(image.shape[1]))

    def reset_image(self) -> None:
        """Forgets the current image and frees its embedding; the next :meth:`set_image` encodes
        again, even the same image."""
        self._image_key = None
        self._features = None
        self._original_size = None

    def _require_image(self) -> None:
        if self._features is None:
            raise RuntimeError("no image set: call set_image(image) first")

    @property
    def features(self) -> torch.Tensor:
        """Image embedding of the current image, ``[1, C, h, w]`` float32 (``h = w = 64``)."""
        self._require_image()
        return self._features

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        self._require_image()
        return self._original_size

    @property
    def image_embedding_size(self) -> tuple[int, int]:
        """``(h, w)`` of the image embedding grid (64, 64)."""
        return tuple(self.model.prompt_encoder.image_embedding_size)

    @property
    def embed_dim(self) -> int:
        """Channels of the image embedding and of the decoder tokens."""
        return int(self.model.prompt_encoder.embed_dim)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype in AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- decoder
    @abstractmethod
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
        """Runs the prompt encoder and mask decoder on the current image for ``B`` prompt sets.

        Args:
            point_coords: ``[B, N, 2]`` (x, y) in original-image pixels, or None.
            point_labels: ``[B, N]`` labels (1 foreground, 0 background), or None.
            boxes: ``[B, 4]`` XYXY in original-image pixels, or None.
            mask_input: ``[B, 1, 256, 256]`` low-res logits from an earlier call, or None.
            multimask_output: True returns the 3 multimask outputs (C = 3), False the single
                mask (C = 1).
            attn_sim: ``[B or 1, 1, 1, h*w]`` PerSAM target-guided attention bias, added to the
                token-to-image attention probabilities of every two-way block, or None.
            target_embedding: ``[B or 1, 1, C_emb]`` PerSAM target-semantic prompt, added to the
                decoder tokens, or None.
        """

    @abstractmethod
    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        """Brings ``[B, C, 256, 256]`` low-res logits (or any map on that frame) to ``[B, C, H, W]``
        at the original image size, exactly as the backbone's official mask post-processing does."""

    @abstractmethod
    def mask_to_embedding_grid(self, mask: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
        """Resamples a float map ``[H, W]`` on the original image onto the embedding grid ``[h, w]``
        with the same geometry the image goes through (resize, padding with ``pad_value``, then
        bilinear down-sampling, align_corners=False, no antialias)."""

    # --------------------------------------------------------------- helpers
    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean masks from original-size logits with the backbone's threshold rule (SAM:
        ``logits > 0``; a backbone with another convention overrides this)."""
        return logits > 0.0

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | torch.Tensor | None = None,
        multimask_output: bool = True,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """Single-prompt-set convenience call mirroring the official predictor.

        Returns ``(masks [C, H, W] bool, scores [C], low_res_logits [C, 256, 256],
        high_res_logits [C, H, W] torch float32)``.
        """
        dev = self.device
        pc = pl = bx = mi = None
        if point_coords is not None:
            pc = torch.as_tensor(np.asarray(point_coords), dtype=torch.float32, device=dev)[None]
            pl = torch.as_tensor(np.asarray(point_labels), dtype=torch.int64, device=dev)[None]
        if box is not None:
            bx = torch.as_tensor(np.asarray(box), dtype=torch.float32, device=dev).reshape(1, 4)
        if mask_input is not None:
            mi = torch.as_tensor(mask_input, dtype=torch.float32, device=dev).reshape(1, 1, 256, 256)
        out = self.decode(
            pc,
            pl,
            boxes=bx,
            mask_input=mi,
            multimask_output=multimask_output,
            attn_sim=attn_sim,
            target_embedding=target_embedding,
        )
        high = self.postprocess(out.low_res_logits)[0]
        return (
            self.binarize(high).cpu().numpy(),
            out.iou_predictions[0].float().cpu().numpy(),
            self.predictor_low_res(out.low_res_logits[0]).float().cpu().numpy(),
            high,
        )

    def predictor_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """The low-res logits :meth:`predict` returns, as the family's official predictor returns
        them (SAM: as decoded; a backbone whose predictor clamps them overrides this)."""
        return low_res
