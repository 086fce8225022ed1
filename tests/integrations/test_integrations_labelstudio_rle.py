"""Label Studio's brush RLE without Label Studio installed: the bits of a small mask written out by
hand from the format, round trips of any mask, and bad data refused. (Against the Label Studio SDK's
own encoder and decoder: tests/integrations/test_integrations_labelstudio.py, in the side venv.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from persam.errors import InputError
from persam.integrations import labelstudio as ls
from persam.integrations.labelstudio_rle import decode_brush_rle, encode_brush_rle
from persam.results import Masks


def _bytes(bits: str) -> list[int]:
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


# A 1 x 2 mask [object, background]: RGBA values 255 x 4 then 0 x 4, so 8 values in two runs of 4.
HAND = _bytes(
    "00000000000000000000000000001000"  # 8 values
    "00111"  # 8-bit words
    "0010 0011 0111 1111"  # run-length fields of 3, 4, 8 and 16 bits
    "1 00 011 11111111"  # repeat, field 0, 4 times, 255
    "1 00 011 00000000"  # repeat, field 0, 4 times, 0
)


def test_a_small_mask_has_the_bits_of_the_format() -> None:
    assert encode_brush_rle(np.array([[True, False]])) == HAND
    assert decode_brush_rle(HAND).tolist() == [255] * 4 + [0] * 4


def test_literal_groups_and_long_runs_decode() -> None:
    # A literal group (flag 0) of 3 values, as other writers of the format use, then a repeat.
    lit = _bytes(
        "0" * 28 + "0101"  # 5 values
        "00111"
        "0010 0011 0111 1111"
        "0 00 010 00000001 00000010 00000011"  # literal, field 0, 3 values: 1, 2, 3
        "1 00 001 11111111"  # repeat, field 0, twice, 255
    )
    assert decode_brush_rle(lit).tolist() == [1, 2, 3, 255, 255]
    # A run longer than the 16-bit field is split: 300 x 300 pixels of one value.
    values = decode_brush_rle(encode_brush_rle(np.ones((300, 300), bool)))
    assert values.size == 300 * 300 * 4 and (values == 255).all()


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_round_trip(mask: np.ndarray) -> None:
    rgba = decode_brush_rle(encode_brush_rle(mask)).reshape(*mask.shape, 4)
    np.testing.assert_array_equal(rgba, np.repeat(mask[..., None], 4, axis=2).astype(np.uint8) * 255)


def test_bad_data_is_refused() -> None:
    with pytest.raises(InputError, match="ends early"):
        decode_brush_rle(HAND[:5])
    with pytest.raises(InputError, match="byte values"):
        decode_brush_rle([300, 1])
    with pytest.raises(InputError, match="2-D"):
        encode_brush_rle(np.zeros((2, 2, 2), bool))
    region = ls.to_prediction(Masks(masks=np.ones((1, 4, 4), bool), scores=[0.5]))["result"][0]
    region["original_width"] = 5  # the region's size does not match its RLE
    with pytest.raises(InputError, match="5x4"):
        ls.from_prediction([region])


def test_tasks_round_trip_without_label_studio(tmp_path) -> None:
    m = np.zeros((2, 30, 50), bool)
    m[0, 3:12, 4:20] = True
    m[1, 15:29, 22:49] = True
    masks = Masks(masks=m, scores=[0.875, 0.5], object_ids=[3, 7])
    ls.write_tasks(tmp_path / "tasks.json", [ls.to_task("a.jpg", masks, label="dog")])
    task = json.loads((tmp_path / "tasks.json").read_text())[0]
    back = ls.from_prediction(task["predictions"][0])
    np.testing.assert_array_equal(back.masks, m)
    assert back.object_ids.tolist() == [3, 7] and back.scores.tolist() == [0.875, 0.5]


def test_tasks_from_a_coco_results_file(tmp_path) -> None:
    from persam.outputs.coco import CocoResults

    m = np.zeros((1, 20, 24), bool)
    m[0, 4:15, 2:20] = True
    coco = CocoResults(tmp_path / "coco.json")
    coco.add("a.jpg", Masks(masks=m, scores=[0.75]), "cup")
    coco.add("b.jpg", Masks.empty((20, 24)), "cup")
    tasks = ls.tasks_from_coco(coco.to_dict(), image_root="/data/local-files/?d=", model_version="v1")
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=a.jpg", "/data/local-files/?d=b.jpg"]
    (region,) = tasks[0]["predictions"][0]["result"]
    assert region["value"]["brushlabels"] == ["cup"] and region["score"] == 0.75
    np.testing.assert_array_equal(ls.from_prediction(tasks[0]["predictions"][0]).masks, m)
    assert tasks[1]["predictions"][0]["result"] == []
    with pytest.raises(InputError, match="not a COCO"):
        ls.tasks_from_coco({"images": [{"id": 1}]})
