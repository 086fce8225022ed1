"""Image and prompt geometry of SAM: resize so that the longest side is ``target_length``.

The image resize is PIL's bilinear filter on the uint8 image (antialiased when shrinking), which
is what the reference predictor does, so resized images are byte-identical to it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side_length: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the longest side equal to ``long_side_length`` (rounded half up)."""
    scale = long_side_length * 1.0 / max(old_h, old_w)
    new_h, new_w = old_h * scale, old_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_uint8(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 ``[H, W]`` or ``[H, W, 3]`` array to ``size`` = (h, w)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"resize_uint8: expected a uint8 array, got {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"resize_uint8: expected [H, W] or [H, W, C], got shape {array.shape}")
    h, w = size
    return np.array(Image.fromarray(np.ascontiguousarray(array)).resize((w, h), Image.BILINEAR))


class ResizeLongestSide:
    """Resizes images (longest side to ``target_length``) and maps points/boxes accordingly."""

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    def target_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the resized image for an ``(H, W)`` original."""
        return get_preprocess_shape(int(original_size[0]), int(original_size[1]), self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W]`` or ``[H, W, C]`` -> uint8 resized array."""
        return resize_uint8(image, self.target_size(image.shape[:2]))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``[..., 2]`` (x, y) in original pixels -> float64 (x, y) on the resized image."""
        old_h, old_w = original_size
        new_h, new_w = self.target_size(original_size)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``[..., 4]`` XYXY boxes in original pixels -> float64 boxes on the resized image."""
        boxes = np.asarray(boxes)
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(boxes.shape)
