"""Box prompts (MobileSAMv2's object-aware prompts): one box, one mask, batched on an image encoded
once; MobileSAMv2's box handling on a SAM decoder; boxes from a JSON file; MobileSAMv2's decoder
file loaded into SAM / MobileSAM backbones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ColourBackbone, iou, make_scene
from PIL import Image

from persam.errors import InputError, WeightsError
from persam.everything import BoxFile, BoxMaskGenerator, load_decoder_checkpoint
from persam.everything.boxes import snap_to_border
from persam.registry import build_model
from persam.transforms import ResizeLongestSide


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def object_boxes(labels: np.ndarray, ids=(3, 7, 2)) -> np.ndarray:
    out = []
    for k in ids:
        ys, xs = np.nonzero(labels == k)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(out, np.float64)


def test_one_mask_per_box_best_score_first_batched_and_encoded_once():
    frames, labels = make_scene(t=1)
    boxes = object_boxes(labels[0])
    model = ColourBackbone()
    detector = lambda image: (boxes, np.array([0.2, 0.9, 0.5]))  # noqa: E731
    records = BoxMaskGenerator(model, detector, batch_size=2, border_margin=0).generate(frames[0])
    assert model.encoder_calls == 1 and model.decoder_batches == [2, 1]
    order = [7, 2, 3]  # by decreasing detector score
    assert [r.box_prompt for r in records] == [boxes[i].tolist() for i in (1, 2, 0)]
    for record, k in zip(records, order, strict=True):
        assert iou(record.mask, labels[0] == k) > 0.8
        assert record.point_coords == [] and "box_prompt" in record.as_dict()


def test_no_box_gives_no_mask():
    frames, _ = make_scene(t=1)
    detector = lambda image: (np.zeros((0, 4)), np.zeros(0))  # noqa: E731
    assert BoxMaskGenerator(ColourBackbone(), detector).generate(frames[0]) == []


def test_border_snapping_and_bad_boxes():
    boxes = np.array([[5.0, 30, 90, 95], [30, 3, 60, 40]])
    snapped = snap_to_border(boxes, (100, 120), 20)
    np.testing.assert_array_equal(snapped, [[0, 30, 90, 100], [30, 0, 60, 40]])
    frames, _ = make_scene(t=1)
    bad = lambda image: (np.array([[10.0, 10, 5, 20]]), np.ones(1))  # noqa: E731
    with pytest.raises(InputError, match="x1 < x0"):
        BoxMaskGenerator(ColourBackbone(), bad).generate(frames[0])


@pytest.mark.parametrize("name", ["tiny_random_sam", "tiny_random_mobile_sam"])
def test_sam_box_decoding_follows_mobilesamv2(name):
    """Boxes scaled to the 1024 frame in float64, decoded with multimask_output=False, up-sampled
    and cut at 0, one call of the modules for all boxes (MobileSAMv2's Inference.py)."""
    model = build_model(name)
    frames, labels = make_scene(t=1)
    image = frames[0]
    boxes = object_boxes(labels[0])
    records = BoxMaskGenerator(model, lambda im: (boxes, np.ones(3)), border_margin=0).generate(image)
    sam = model.model
    transform = ResizeLongestSide(sam.img_size)
    with torch.no_grad():
        scaled = torch.from_numpy(transform.apply_boxes(boxes, image.shape[:2]))
        sparse, dense = sam.prompt_encoder(points=None, boxes=scaled, masks=None)
        low, _ = sam.mask_decoder(
            image_embeddings=model.features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        full = sam.postprocess_masks(low, transform.target_size(image.shape[:2]), image.shape[:2]) > 0
    for record, expected in zip(records, full[:, 0].numpy(), strict=True):
        np.testing.assert_array_equal(record.mask, expected)


@pytest.mark.parametrize("name", ["tiny_random_efficient_sam", "tiny_random_sam2"])
def test_other_families_give_one_mask_per_box(name):
    model = build_model(name)
    frames, labels = make_scene(t=1)
    records = BoxMaskGenerator(model, lambda im: (object_boxes(labels[0]), np.ones(3))).generate(frames[0])
    assert len(records) == 3 and all(r.mask.shape == frames[0].shape[:2] for r in records)


def test_box_file_matches_images_by_name_and_content(tmp_path):
    frames, labels = make_scene(t=2)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(frames[i]).save(paths[-1])
    boxes = object_boxes(labels[1]).tolist()
    (tmp_path / "boxes.json").write_text(json.dumps({"f1.png": [b + [0.5] for b in boxes]}))
    detector = BoxFile(tmp_path / "boxes.json", paths)
    got, scores = detector(frames[1])
    np.testing.assert_array_equal(got, boxes)
    np.testing.assert_array_equal(scores, [0.5] * 3)
    with pytest.raises(InputError, match="no boxes for .*f0.png"):
        detector(frames[0])
    with pytest.raises(InputError, match="not one of the images"):
        detector(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize(
    "content, message",
    [("[1, 2]", "JSON object"), ('{"a.png": [[1, 2, 3]]}', "'a.png'"), ("{", "not a readable JSON")],
)
def test_bad_box_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "b.json").write_text(content)
    with pytest.raises(InputError, match=message):
        BoxFile(tmp_path / "b.json", [])


def mobilesamv2_decoder_file(model, path, seed: int = 1) -> dict:
    """A random decoder file in MobileSAMv2's layout for ``model``'s decoder sizes."""
    gen = torch.Generator().manual_seed(seed)
    parts = {
        "PromtEncoder": model.model.prompt_encoder.state_dict(),
        "MaskDecoder": model.model.mask_decoder.state_dict(),
    }
    parts = {k: {n: torch.randn(t.shape, generator=gen) for n, t in sd.items()} for k, sd in parts.items()}
    torch.save(parts, path)
    return parts


@pytest.mark.parametrize("name", ["tiny_random_sam", "tiny_random_mobile_sam"])
def test_mobilesamv2_decoder_file_loads_into_sam_decoders(tmp_path, name):
    model = build_model(name)
    parts = mobilesamv2_decoder_file(model, tmp_path / "Prompt_guided_Mask_Decoder.pt")
    old_id = model.checkpoint_id
    load_decoder_checkpoint(model, tmp_path / "Prompt_guided_Mask_Decoder.pt")
    for key, module in (("PromtEncoder", "prompt_encoder"), ("MaskDecoder", "mask_decoder")):
        for n, t in getattr(model.model, module).state_dict().items():
            torch.testing.assert_close(t, parts[key][n])
    assert model.checkpoint_id.startswith(old_id + "+decoder:")


def test_decoder_file_errors(tmp_path):
    model = build_model("tiny_random_sam")
    before = {k: v.clone() for k, v in model.model.mask_decoder.state_dict().items()}
    parts = mobilesamv2_decoder_file(model, tmp_path / "d.pt")
    parts["MaskDecoder"]["iou_token.weight"] = torch.zeros(1, 7)
    torch.save(parts, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="bad.pt.*iou_token.weight"):
        load_decoder_checkpoint(model, tmp_path / "bad.pt")
    for k, v in model.model.mask_decoder.state_dict().items():
        torch.testing.assert_close(v, before[k])  # nothing changed
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(WeightsError, match="text.pt"):
        load_decoder_checkpoint(model, tmp_path / "text.pt")
    with pytest.raises(WeightsError, match="SAM and MobileSAM"):
        load_decoder_checkpoint(build_model("tiny_random_efficient_sam"), tmp_path / "d.pt")
