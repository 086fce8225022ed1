"""The official ``segment_anything`` automatic mask generator, importable without torchvision.

The official package imports ``torchvision`` for two things only: ``ops.boxes.batched_nms`` /
``box_area`` (automatic mask generator) and ``transforms.functional.resize`` / ``to_pil_image``
(``ResizeLongestSide.apply_image``). torchvision cannot be installed beside every torch, so
:func:`install_torchvision_stand_in` puts a minimal stand-in module into ``sys.modules``:

* ``batched_nms``: a plain greedy NMS written for clarity, not speed: boxes visited by decreasing
  score (a stable sort, so equal scores keep their index order, as torchvision's CPU kernel sorts),
  each kept box suppressing every box of the same category with IoU strictly above the threshold;
  the kept indices are returned by decreasing score.
* ``box_area``: ``(x1 - x0) * (y1 - y0)``.
* ``resize`` / ``to_pil_image``: PIL's bilinear resize of a PIL image to ``(h, w)``, which is what
  torchvision does for PIL input.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image


def _plain_greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    order = torch.sort(scores, descending=True, stable=True)[1]
    b = boxes.to(torch.float32)[order]
    cat = idxs[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    removed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(i)
        w = torch.clamp(torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0]), min=0)
        h = torch.clamp(torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1]), min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter)
        later = torch.arange(len(b)) > i
        removed |= later & (cat == cat[i]) & (iou.double() > iou_threshold)
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _resize(img: Image.Image, size) -> Image.Image:
    h, w = size
    return img.resize((w, h), Image.BILINEAR)


def _to_pil_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(array))


def install_torchvision_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Puts the stand-in ``torchvision`` modules into ``sys.modules`` (undone with ``monkeypatch``,
    which also forgets the ``segment_anything`` modules imported against it)."""
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _plain_greedy_nms
    boxes.box_area = _box_area
    ops.boxes = boxes
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = _resize
    functional.to_pil_image = _to_pil_image
    transforms.functional = functional
    tv.ops, tv.transforms = ops, transforms
    modules = {
        "torchvision": tv,
        "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    # Import the official package afresh against the stand-in, and forget it afterwards.
    for name in _OFFICIAL_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)


#: Modules of the official package: ``monkeypatch`` removes them again after the test.
_OFFICIAL_MODULES = (
    "segment_anything",
    "segment_anything.automatic_mask_generator",
    "segment_anything.build_sam",
    "segment_anything.predictor",
    "segment_anything.modeling",
    "segment_anything.modeling.common",
    "segment_anything.modeling.image_encoder",
    "segment_anything.modeling.mask_decoder",
    "segment_anything.modeling.prompt_encoder",
    "segment_anything.modeling.sam",
    "segment_anything.modeling.transformer",
    "segment_anything.utils",
    "segment_anything.utils.amg",
    "segment_anything.utils.transforms",
)


def official_sam(
    modeling,
    *,
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    global_attn: list[int],
    mask_in_chans: int,
    decoder_mlp_dim: int,
    **sam_options,
):
    """An official ``segment_anything`` ``Sam`` of a small size (ViT encoder, two-way decoder),
    built from the package's own ``modeling`` modules; load a state dict into it to compare."""
    from functools import partial

    m = modeling
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=depth,
            embed_dim=dim,
            img_size=1024,
            mlp_ratio=mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn,
            window_size=14,
            out_chans=dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=decoder_mlp_dim, num_heads=heads
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=dim,
        ),
        **sam_options,
    )
