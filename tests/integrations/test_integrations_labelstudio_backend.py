"""The Label Studio ML backend, called as label-studio-ml's server calls it (no server): its
predictions decode with the Label Studio SDK to the concept's own masks, and pass the SDK's check of
the labeling config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import astronaut_scene, fast_sam_config
from PIL import Image

from persam.errors import InputError

pytest.importorskip("label_studio_ml.model")
brush = pytest.importorskip("label_studio_sdk.converter.brush")
from label_studio_sdk.label_interface import LabelInterface  # noqa: E402

from persam.integrations import labelstudio as ls  # noqa: E402
from persam.integrations.labelstudio_backend import PerSAMBackend  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = ls.labeling_config(["astronaut", "cat"], from_name="brush", to_name="photo", data_key="img")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """A concept file learned on a small random model (given as a config file), and the photo."""
    from persam import learn
    from persam.registry import build_model

    folder = tmp_path_factory.mktemp("lsml")
    (folder / "model.json").write_text(json.dumps(fast_sam_config()))
    img, mask = astronaut_scene()
    concept = learn(build_model(str(folder / "model.json"), checkpoint="none"), img, mask, name="astronaut")
    assert concept.segment(img).found  # so that the predictions below hold a region
    concept.save(folder / "astronaut.persam")
    Image.fromarray(img).save(folder / "photo.png")
    return folder, concept, img


@pytest.fixture
def env(setup, monkeypatch):
    folder, _, _ = setup
    monkeypatch.setenv("PERSAM_CONCEPT", str(folder / "astronaut.persam"))
    monkeypatch.setenv("PERSAM_MODEL", str(folder / "model.json"))
    monkeypatch.setenv("PERSAM_CHECKPOINT", "none")
    monkeypatch.setenv("PERSAM_DEVICE", "cpu")
    return folder


def _alpha(region: dict) -> np.ndarray:
    h, w = region["original_height"], region["original_width"]
    return brush.decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


def test_predictions_are_the_concepts_masks(setup, env) -> None:
    _, concept, img = setup
    backend = PerSAMBackend(label_config=CONFIG)
    preds = backend.predict([{"id": 1, "data": {"img": str(env / "photo.png")}}])
    assert len(preds) == 1 and preds[0]["model_version"] == "persam-fast_random_sam-persam"
    want = concept.segment(img).masks
    want = want[want.found]
    regions = preds[0]["result"]
    assert len(regions) == len(want) >= 1
    for region, mask in zip(regions, want.masks, strict=True):
        assert (region["from_name"], region["to_name"]) == ("brush", "photo")
        assert region["value"]["brushlabels"] == ["astronaut"]  # the config's first label
        np.testing.assert_array_equal(_alpha(region), mask)
    assert LabelInterface(CONFIG).validate_prediction(preds[0], return_errors=True) == []


def test_local_storage_urls_and_settings_from_kwargs(setup, env, monkeypatch) -> None:
    import label_studio_tools.core.utils.io as lsio

    monkeypatch.setattr(lsio, "LOCAL_FILES_DOCUMENT_ROOT", str(env.parent))
    monkeypatch.delenv("PERSAM_CONCEPT")
    backend = PerSAMBackend(label_config=CONFIG, concept=str(env / "astronaut.persam"), label="cat")
    task = {"id": 7, "data": {"img": f"/data/local-files/?d={env.name}/photo.png"}}
    assert backend.image_path(task) == str(env / "photo.png")
    (pred,) = backend.predict([task])
    assert all(r["value"]["brushlabels"] == ["cat"] for r in pred["result"])


def test_bad_settings_are_one_line_errors(env: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="BrushLabels"):
        PerSAMBackend(label_config='<View><Image name="i" value="$i"/></View>')
    with pytest.raises(InputError, match="not in the labeling config"):
        PerSAMBackend(label_config=CONFIG, label="horse")
    with pytest.raises(InputError, match="no data.img"):
        PerSAMBackend(label_config=CONFIG).predict([{"id": 3, "data": {}}])
    monkeypatch.delenv("PERSAM_CONCEPT")
    with pytest.raises(InputError, match="no concept"):
        PerSAMBackend(label_config=CONFIG)
