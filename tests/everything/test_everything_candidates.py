"""Finding a learned concept among generated masks, on synthetic scenes with a scripted backbone whose
image features are the pixel colours, so that which candidate matches is decidable: pasted copies of
the reference object must be chosen, distractors of other colours never, and a photo without the
object gives "not found"."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import persam
from persam.backbones.base import Backbone, DecoderOutput
from persam.errors import InputError
from persam.everything import calibrate, find_candidates
from persam.everything.candidates import _merge_duplicates, mask_pooled_features

RED, ORANGE, GREEN, BLUE, GREY = (220, 30, 30), (230, 140, 20), (30, 200, 40), (40, 60, 220), (110, 110, 110)
OPTIONS = dict(points_per_side=10)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


class _ColourEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Colour plus a constant channel: cosine similarity then ranks colours sensibly.
        return torch.cat([x, torch.full_like(x[:, :1], 0.1)], dim=1)


class ColourBackbone(Backbone):
    """Features: the mean colour of each of 64x64 cells (+ a constant channel); a point prompt
    segments the connected region of the colour under its first positive point (or, without one,
    under the centre of the box)."""

    def __init__(self) -> None:
        module = nn.Module()
        module.image_encoder = _ColourEncoder()
        module.prompt_encoder = SimpleNamespace(image_embedding_size=(64, 64), embed_dim=4)
        super().__init__(module, name="colour", checkpoint_id="scripted")

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        return F.interpolate(x, size=(64, 64), mode="area")

    def _encode_image(self, image: np.ndarray) -> None:
        super()._encode_image(image)
        # Connected regions of one colour, labelled on the 256x256 low-res frame.
        small = cv2.resize(np.asarray(image), (256, 256), interpolation=cv2.INTER_NEAREST)
        self._regions = np.zeros((256, 256), np.int32)
        for colour in np.unique(small.reshape(-1, 3), axis=0):
            n, labels = cv2.connectedComponents((small == colour).all(-1).astype(np.uint8), connectivity=4)
            self._regions = np.where(labels > 0, labels + self._regions.max(), self._regions)

    def _region_logits(self, x: float, y: float) -> torch.Tensor:
        h, w = self.original_size
        col = min(max(int(x * 256 / w), 0), 255)
        row = min(max(int(y * 256 / h), 0), 255)
        region = torch.from_numpy(self._regions == self._regions[row, col])
        return torch.where(region, 10.0, -10.0)

    def decode(
        self,
        point_coords,
        point_labels,
        *,
        boxes=None,
        mask_input=None,
        multimask_output=True,
        attn_sim=None,
        target_embedding=None,
    ) -> DecoderOutput:
        c = 3 if multimask_output else 1
        n = (point_coords if point_coords is not None else boxes).shape[0]
        lows = []
        for b in range(n):
            if point_coords is not None and bool((point_labels[b] == 1).any()):
                x, y = point_coords[b][point_labels[b] == 1][0].tolist()
            else:
                x0, y0, x1, y1 = boxes[b].tolist()
                x, y = (x0 + x1) / 2, (y0 + y1) / 2
            lows.append(self._region_logits(x, y).expand(c, 256, 256))
        return DecoderOutput(torch.stack(lows), torch.full((n, c), 0.95))

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=self.original_size, mode="bilinear", align_corners=False)

    def mask_to_embedding_grid(self, mask, pad_value: float = 0.0) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None]
        return F.interpolate(m, size=(64, 64), mode="area")[0, 0]


def scene(objects: list[tuple[tuple[int, int, int], str, tuple[int, int], int]]) -> tuple[np.ndarray, list]:
    """A grey 160x200 image with shapes ``(colour, "disc"|"square", centre, radius)``; returns the
    image and each shape's mask."""
    img = np.zeros((160, 200, 3), np.uint8)
    img[:] = GREY
    masks = []
    for colour, kind, (cx, cy), r in objects:
        m = np.zeros(img.shape[:2], np.uint8)
        if kind == "disc":
            cv2.circle(m, (cx, cy), r, 1, -1)
        else:
            cv2.rectangle(m, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
        img[m.astype(bool)] = colour
        masks.append(m.astype(bool))
    return img, masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


@pytest.fixture
def learned():
    model = ColourBackbone()
    ref, (ref_mask, _) = scene([(RED, "disc", (60, 70), 28), (GREEN, "square", (150, 80), 25)])
    concept = persam.learn(model, ref, ref_mask, name="red")
    return model, concept, ref, ref_mask


def test_copies_of_the_object_are_found_and_distractors_are_not(learned):
    _, concept, ref, ref_mask = learned
    target, (copy1, copy2, green, blue, orange) = scene(
        [
            (RED, "disc", (40, 40), 22),
            (RED, "disc", (150, 115), 30),
            (GREEN, "disc", (150, 35), 20),
            (BLUE, "square", (50, 120), 22),
            (ORANGE, "square", (100, 80), 12),
        ]
    )
    result = find_candidates(concept, target, ref_image=ref, ref_mask=ref_mask, **OPTIONS)
    assert result.found and result.concept == "red"
    # The copies come first; the orange square, close in colour, may follow but never precedes them.
    first_two = result.instances[:2]
    assert {int(np.argmax([iou(i.mask, copy1), iou(i.mask, copy2)])) for i in first_two} == {0, 1}
    for inst in first_two:
        assert max(iou(inst.mask, copy1), iou(inst.mask, copy2)) > 0.9
    assert all(iou(i.mask, orange) > 0.9 for i in result.instances[2:])
    scores = [i.score for i in result.instances]
    assert scores == sorted(scores, reverse=True) and result.score == scores[0]
    for distractor in (green, blue):
        assert not (result.mask & distractor).any()
    assert iou(result.instances[0].mask | result.instances[1].mask, copy1 | copy2) > 0.9


def test_scores_rank_the_copies_above_every_distractor(learned):
    model, concept, ref, ref_mask = learned
    target, shapes = scene(
        [(RED, "disc", (40, 40), 22), (GREEN, "disc", (150, 35), 20), (BLUE, "square", (50, 120), 22)]
    )
    matcher = calibrate(concept, ref, ref_mask, **OPTIONS)
    model.set_image(target)
    red, green, blue = matcher.scores(shapes).tolist()
    assert red > matcher.threshold > max(green, blue)
    assert matcher.calibration["own_score"] > matcher.calibration["other_score"]


def test_a_photo_without_the_object_gives_not_found(learned):
    _, concept, ref, ref_mask = learned
    target, _ = scene([(GREEN, "disc", (60, 60), 30), (BLUE, "square", (140, 100), 25)])
    result = find_candidates(concept, target, ref_image=ref, ref_mask=ref_mask, **OPTIONS)
    assert not result.found
    assert result.instances == [] and not result.mask.any() and result.box is None


def test_max_instances_keeps_the_best(learned):
    _, concept, ref, ref_mask = learned
    target, _ = scene([(RED, "disc", (40, 40), 22), (RED, "disc", (150, 115), 30)])
    matcher = calibrate(concept, ref, ref_mask, **OPTIONS)
    assert len(matcher.find(target, max_instances=1).instances) == 1
    with pytest.raises(InputError):
        matcher.find(target, max_instances=0)


def test_refinement_keeps_the_instances(learned):
    _, concept, ref, ref_mask = learned
    target, (copy1, copy2) = scene([(RED, "disc", (40, 40), 22), (RED, "disc", (150, 115), 30)])
    result = find_candidates(concept, target, ref_image=ref, ref_mask=ref_mask, refine=True, **OPTIONS)
    assert len(result.instances) == 2
    assert iou(result.mask, copy1 | copy2) > 0.9


def test_few_shot_compares_with_every_reference():
    model = ColourBackbone()
    ref1, (red, _) = scene([(RED, "disc", (60, 70), 28), (GREEN, "square", (150, 80), 25)])
    ref2, (blue, _) = scene([(BLUE, "disc", (60, 70), 28), (GREEN, "square", (150, 80), 25)])
    concept = persam.learn(model, [ref1, ref2], [red, blue])
    matcher = calibrate(concept, [ref1, ref2], [red, blue], **OPTIONS)
    assert matcher.references.shape == (3, 4)
    target, (r, b, g) = scene(
        [(RED, "disc", (40, 40), 22), (BLUE, "disc", (150, 115), 30), (GREEN, "square", (60, 120), 20)]
    )
    result = matcher.find(target)
    assert len(result.instances) == 2
    assert not (result.mask & g).any()


def test_explicit_threshold_and_bad_calls(learned):
    model, concept, ref, ref_mask = learned
    with pytest.raises(InputError, match="threshold"):
        find_candidates(concept, ref)
    everything = find_candidates(concept, ref, threshold=-1.0, max_instances=10, **OPTIONS)
    assert len(everything.instances) >= 2  # the object, the square and the background
    with pytest.raises(InputError):
        calibrate(concept, [ref, ref], [ref_mask])


def test_pooled_features_are_unit_vectors_and_a_sliver_gives_nan():
    model = ColourBackbone()
    img, (disc,) = scene([(RED, "disc", (60, 70), 28)])
    model.set_image(img)
    feats = mask_pooled_features(model, [disc, np.zeros_like(disc)])
    assert torch.allclose(feats[0].norm(), torch.tensor(1.0))
    assert torch.isnan(feats[1]).all()


def test_duplicates_merge_or_drop():
    a = np.zeros((10, 10), bool)
    a[:6, :6] = True
    near = np.zeros_like(a)
    near[:6, :7] = True  # IoU 6/7 with a: merged by union
    part = np.zeros_like(a)
    part[:3, :3] = True  # inside a, IoU 0.25: dropped
    other = np.zeros_like(a)
    other[7:, 7:] = True
    kept = _merge_duplicates([a, near, part, other], [0.9, 0.8, 0.7, 0.6])
    assert [s for _, s in kept] == [0.9, 0.6]
    np.testing.assert_array_equal(kept[0][0], a | near)
