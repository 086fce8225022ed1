"""Label Studio pre-annotations: the SDK's own brush decoder gives our masks back, and the SDK's own
labeling-interface check accepts the predictions and tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import astronaut_scene, fast_sam_config

from persam.errors import InputError
from persam.results import Masks

brush = pytest.importorskip("label_studio_sdk.converter.brush")
from label_studio_sdk.label_interface import LabelInterface  # noqa: E402

from persam.integrations import labelstudio as ls  # noqa: E402


def _masks() -> Masks:
    """Three masks on a 30 x 50 image (ids 2, 5, 8); the last one empty, so not found."""
    m = np.zeros((3, 30, 50), bool)
    m[3:12, 4:20] = True
    m[1, 15:29, 22:49] = True
    m[1, 20, 10] = True  # a lone pixel: runs of length 1 in the RLE
    m[0, 3:12, 4:20] = True
    return Masks(masks=m, scores=[0.875, 0.5, 0.25], object_ids=[2, 5, 8])


def test_prediction_has_label_studio_fields() -> None:
    pred = ls.to_prediction(_masks(), label="dog", model_version="persam-sam_vit_h")
    assert pred["model_version"] == "persam-sam_vit_h"
    assert pred["score"] == pytest.approx((0.875 + 0.5) / 2)
    assert len(pred["result"]) == 2  # the empty mask is not a detection
    region = pred["result"][0]
    assert region["type"] == "brushlabels"
    assert (region["from_name"], region["to_name"]) == ("tag", "image")
    assert (region["original_width"], region["original_height"]) == (50, 30)
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["dog"]
    assert all(isinstance(v, int) and 0 <= v < 256 for v in region["value"]["rle"])
    json.dumps(pred)  # JSON-ready


def test_sdk_decoder_gives_our_masks_back() -> None:
    m = _masks()
    pred = ls.to_prediction(m)
    for region, mask in zip(pred["result"], m.masks[m.found], strict=True):
        rgba = brush.decode_rle(region["value"]["rle"]).reshape(30, 50, 4)
        np.testing.assert_array_equal(rgba[:, :, 3] > 0, mask)
    # The SDK's own reader of exported annotations (it takes the flattened region form).
    flat = [{**r, **r["value"]} for r in pred["result"]]
    layers = brush.decode_from_annotation("tag", flat)
    assert sorted(layers) == ["tag-object-0", "tag-object-1"]
    np.testing.assert_array_equal(layers["tag-object-1"] > 0, m.masks[1])


def test_round_trip_is_identical() -> None:
    m = _masks()[[0, 1]]
    back = ls.from_prediction(ls.to_prediction(m))
    np.testing.assert_array_equal(back.masks, m.masks)
    np.testing.assert_array_equal(back.scores, m.scores)
    np.testing.assert_array_equal(back.object_ids, m.object_ids)
    # All masks (found or not), several labels, and the result list alone.
    everything = ls.to_prediction(_masks(), label=["a", "b", "c"], found_only=False)
    assert [r["value"]["brushlabels"] for r in everything["result"]] == [["a"], ["b"], ["c"]]
    back = ls.from_prediction(everything["result"])
    np.testing.assert_array_equal(back.masks, _masks().masks)
    assert ls.from_prediction(everything, from_name="other").image_size == (30, 50)


def test_regions_from_label_studio_itself() -> None:
    """A region drawn in Label Studio: its own id, no score."""
    mask = np.zeros((20, 20), np.uint8)
    mask[5:9, 2:17] = 255
    region = {
        "id": "Xk3a_9PqLm",
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": 20,
        "original_height": 20,
        "value": {"format": "rle", "rle": brush.mask2rle(mask), "brushlabels": ["object"]},
    }
    back = ls.from_prediction({"result": [region]})
    np.testing.assert_array_equal(back.masks[0], mask > 0)
    assert back.object_ids.tolist() == [1] and math.isnan(back.scores[0])
    with pytest.raises(InputError):
        ls.from_prediction({"result": []})


def test_sdk_validates_predictions_and_tasks(tmp_path: Path) -> None:
    config = ls.labeling_config(["dog", "cat"])
    interface = LabelInterface(config)
    pred = ls.to_prediction(_masks(), label=["dog", "cat", "cat"])
    assert interface.validate_prediction(pred, return_errors=True) == []
    task = ls.to_task("/data/local-files/?d=photos/1.jpg", _masks(), label="dog")
    ls.write_tasks(tmp_path / "tasks.json", [task])
    loaded = json.loads((tmp_path / "tasks.json").read_text())
    assert loaded[0]["data"] == {"image": "/data/local-files/?d=photos/1.jpg"}
    assert interface.validate_prediction(loaded[0]["predictions"][0], return_errors=True) == []
    # A label the config does not have is refused by the SDK: the check is real.
    wrong = ls.to_prediction(_masks(), label="horse")
    assert interface.validate_prediction(wrong) is False


def test_segmentation_result_exports(one_thread) -> None:
    from persam import learn
    from persam.registry import build_model

    img, mask = astronaut_scene()
    result = learn(build_model(fast_sam_config(), checkpoint="none"), img, mask).segment(img)
    assert result.found
    task = ls.to_task("astronaut.png", result, label="astronaut", model_version="persam")
    back = ls.from_prediction(task["predictions"][0])
    np.testing.assert_array_equal(back.masks[0], result.mask)
    assert back.scores[0] == pytest.approx(result.score)
