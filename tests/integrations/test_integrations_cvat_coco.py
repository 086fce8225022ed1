"""The CVAT "COCO 1.0" zip: the layout CVAT imports, RLE masks marked iscrowd, the masks unchanged
(decoded with pycocotools), and bad input refused without writing anything."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from persam.errors import InputError
from persam.integrations.cvat_coco import ANNOTATIONS_NAME, write_coco_zip
from persam.outputs.coco import CocoResults
from persam.results import Masks


def _coco(tmp_path: Path) -> tuple[Path, np.ndarray]:
    m = np.zeros((2, 30, 40), bool)
    m[0, 2:10, 3:20] = True
    m[1, 12:28, 25:39] = True
    results = CocoResults(tmp_path / "coco.json")
    results.add("a.jpg", Masks(masks=m, scores=[0.9, 0.6]), "dog")
    results.add("b.jpg", Masks.empty((30, 40)), "dog")
    results.save()
    return tmp_path / "coco.json", m


def test_zip_holds_the_masks_for_cvat(tmp_path: Path) -> None:
    path, m = _coco(tmp_path)
    out = write_coco_zip(path, tmp_path / "cvat.zip")
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [ANNOTATIONS_NAME] == ["annotations/instances_default.json"]
        coco = json.loads(zf.read(ANNOTATIONS_NAME))
    assert [c["name"] for c in coco["categories"]] == ["dog"]
    assert sorted(im["file_name"] for im in coco["images"]) == ["a.jpg", "b.jpg"]
    assert len(coco["annotations"]) == 2
    for ann, mask in zip(coco["annotations"], m, strict=True):
        assert ann["iscrowd"] == 1
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle) > 0, mask)
    # The results file itself is left as it was (iscrowd 0 for COCO evaluation).
    assert all(a["iscrowd"] == 0 for a in json.loads(path.read_text())["annotations"])


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    for bad in (tmp_path / "missing.json", tmp_path / "bad.json"):
        with pytest.raises(InputError, match=bad.name):
            write_coco_zip(bad, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()
