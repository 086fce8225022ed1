"""The CVAT auto-annotation function module, called as CVAT calls it: ``create(**params)``, then
``spec`` / ``detect`` (and the interactive and tracking protocols) with PIL images; the shapes are
decoded with the SDK's own ``decode_mask`` and, where the SDK offers it, checked by its validator."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import astronaut_scene, disc_scene, fast_sam_config
from PIL import Image

from persam.errors import InputError

pytest.importorskip("cvat_sdk")
import cvat_sdk.auto_annotation as cvataa  # noqa: E402
from cvat_sdk import models  # noqa: E402
from cvat_sdk.masks import decode_mask  # noqa: E402

from persam import learn  # noqa: E402
from persam.integrations import cvat  # noqa: E402
from persam.registry import build_model  # noqa: E402
from persam.tracking import PerSAMTracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Context(cvataa.DetectionFunctionContext):
    def __init__(self, conf_threshold: float | None = None, conv_mask_to_poly: bool = False) -> None:
        self._t, self._p = conf_threshold, conv_mask_to_poly

    frame_name = property(lambda self: "frame.jpg")
    conf_threshold = property(lambda self: self._t)
    conv_mask_to_poly = property(lambda self: self._p)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model config, a reference photo and mask, and the concept file learned from them."""
    d = tmp_path_factory.mktemp("cvat")
    img, mask = astronaut_scene()
    (d / "model.json").write_text(json.dumps(fast_sam_config()))
    Image.fromarray(img).save(d / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(d / "ref_mask.png")
    learn(build_model(fast_sam_config(), checkpoint="none"), img, mask, name="astronaut").save(d / "a.persam")
    return {
        "model": d / "model.json",
        "ref": d / "ref.png",
        "ref_mask": d / "ref_mask.png",
        "concept": d / "a.persam",
    }


@pytest.fixture(scope="module")
def function(files):
    # The parameters as cvat-cli passes them from "-p concept=str:... -p model=str:...".
    return cvat.create(
        concept=str(files["concept"]),
        model=str(files["model"]),
        checkpoint="none",
        label="astronaut",
        device="cpu",
    )


def test_module_is_a_cvat_function_factory() -> None:
    """cvat-cli's loader: import the module, and call its ``create`` with the parameters."""
    module = importlib.import_module("persam.integrations.cvat")
    assert callable(module.create)
    with pytest.raises(InputError, match="concept"):
        module.create()
    with pytest.raises(InputError, match="mode"):
        module.create(mode="segment")


def test_spec_declares_one_mask_label(function) -> None:
    spec = function.spec
    assert isinstance(spec, cvataa.DetectionFunctionSpec)
    assert [(label.name, label.id, label.type) for label in spec.labels] == [("astronaut", 0, "mask")]


def test_detect_returns_mask_shapes_that_decode_to_our_mask(function) -> None:
    img, _ = astronaut_scene()
    expected = function.concept.segment(img).masks
    assert expected.found[0] and expected.masks[0].any()
    shapes = function.detect(_Context(), Image.fromarray(img))
    assert len(shapes) == 1
    shape = shapes[0]
    assert isinstance(shape, models.LabeledShapeRequest)
    assert (shape.type.value, shape.label_id, shape.frame) == ("mask", 0, 0)
    decoded = decode_mask(shape.points, image_width=img.shape[1], image_height=img.shape[0])
    np.testing.assert_array_equal(decoded, expected.masks[0])


def test_detect_follows_threshold_and_polygon_request(function) -> None:
    img, _ = astronaut_scene()
    score = function.concept.segment(img).score
    assert function.detect(_Context(conf_threshold=min(score + 1e-3, 1.0)), Image.fromarray(img)) == []
    assert len(function.detect(_Context(conf_threshold=score), Image.fromarray(img))) == 1
    polygons = function.detect(_Context(conv_mask_to_poly=True), Image.fromarray(img))
    assert polygons and all(s.type.value == "polygon" and len(s.points) >= 6 for s in polygons)


def test_shapes_pass_the_sdk_validator(function) -> None:
    """The SDK's own check of function output against a task's labels (what auto-annotate runs)."""
    driver = importlib.import_module("cvat_sdk.auto_annotation.driver")
    mapper_cls = getattr(driver, "_AnnotationMapper", None)
    if mapper_cls is None:
        pytest.skip("this cvat-sdk has no annotation mapper to check against")
    task_labels = [models.Label(id=42, name="astronaut", type="any", attributes=[], sublabels=[])]
    mapper = mapper_cls(
        logging.getLogger("test"),
        function.spec.labels,
        task_labels,
        allow_unmatched_labels=False,
        conv_mask_to_poly=False,
    )
    img, _ = astronaut_scene()
    _, shapes = mapper.validate_and_remap(function.detect(_Context(), Image.fromarray(img)), 7)
    assert [(s.label_id, s.frame, s.type.value) for s in shapes] == [(42, 7, "mask")]


def test_learning_from_a_reference_photo(files, function) -> None:
    fn = cvat.create(
        ref=str(files["ref"]),
        ref_mask=str(files["ref_mask"]),
        model=str(files["model"]),
        checkpoint="none",
        max_instances=2,
        device="cpu",
    )
    assert fn.spec.labels[0].name == "object" and fn.max_instances == 2
    img, _ = astronaut_scene()
    # The same reference as the concept file: the same masks.
    ours = [
        decode_mask(s.points, image_width=128, image_height=128)
        for s in fn.detect(_Context(), Image.fromarray(img))
    ]
    np.testing.assert_array_equal(ours[0], function.concept.segment(img).mask)
    with pytest.raises(InputError, match="not both"):
        cvat.create(concept=str(files["concept"]), ref=str(files["ref"]), ref_mask=str(files["ref_mask"]))


def test_interactive_clicks_give_a_mask(files) -> None:
    fn = cvat.create(mode="interactive", model=str(files["model"]), checkpoint="none", device="cpu")
    assert isinstance(fn.spec, cvataa.InteractionFunctionSpec) and fn.spec.min_pos_points == 1
    img, _ = astronaut_scene()
    pp = fn.preprocess_image(None, Image.fromarray(img))
    prompts = SimpleNamespace(
        pos_points=[(60.0, 50.0)], neg_points=[(5.0, 5.0)], bounding_box=((40, 20), (90, 80))
    )
    shapes = fn.detect(None, pp, prompts)
    expected = cvat.mask_from_prompts(
        fn.model, img, points=[[60, 50], [5, 5]], labels=[1, 0], box=[40, 20, 90, 80]
    )
    assert expected.any()
    assert (
        len(shapes) == 1 and isinstance(shapes[0], cvataa.InteractionResultShape) and shapes[0].type == "mask"
    )
    np.testing.assert_array_equal(decode_mask(shapes[0].points, image_width=128, image_height=128), expected)


def test_tracking_follows_a_mask_like_the_persam_tracker(files) -> None:
    fn = cvat.create(mode="tracking", model=str(files["model"]), checkpoint="none", device="cpu")
    assert fn.spec.supported_shape_types == {"mask", "rectangle", "polygon"}
    frames = [disc_scene(centre=(40 + 4 * i, 45)) for i in range(3)]
    first = np.zeros(frames[0].shape[:2], bool)
    first[27:64, 22:59] = True
    from cvat_sdk.masks import encode_mask

    shape = cvataa.TrackableShape(type="mask", points=encode_mask(first))
    state = fn.init_tracking_state(None, fn.preprocess_image(None, Image.fromarray(frames[0])), shape)
    ours = [fn.track(None, fn.preprocess_image(None, Image.fromarray(f)), state) for f in frames[1:]]

    ref = PerSAMTracker(fn.model)
    ref.initialize(frames[0], cvat.FirstMask(label_map=first.astype(np.uint8), object_ids=[1], masks=[first]))
    for i, (f, got) in enumerate(zip(frames[1:], ours, strict=True), start=1):
        want = ref.step(f, i).masks.masks[0]
        if not want.any():
            assert got is None
            continue
        assert got.type == "mask"
        np.testing.assert_array_equal(decode_mask(got.points, image_width=128, image_height=96), want)


def test_tracking_keeps_rectangles_and_polygons(files) -> None:
    fn = cvat.create(mode="tracking", model=str(files["model"]), checkpoint="none", device="cpu")
    frames = [
        fn.preprocess_image(None, Image.fromarray(disc_scene(centre=(40 + 4 * i, 45)))) for i in range(2)
    ]
    for shape in (
        cvataa.TrackableShape(type="rectangle", points=[22.0, 27.0, 59.0, 64.0]),
        cvataa.TrackableShape(type="polygon", points=[22.0, 27.0, 58.0, 27.0, 58.0, 63.0, 22.0, 63.0]),
    ):
        state = fn.init_tracking_state(None, frames[0], shape)
        got = fn.track(None, frames[1], state)
        assert got is not None and got.type == shape.type
        if shape.type == "rectangle":
            x0, y0, x1, y1 = got.points
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
    with pytest.raises(InputError):
        fn.init_tracking_state(None, frames[0], cvataa.TrackableShape(type="points", points=[1.0, 2.0]))


def test_mask_to_polygons_outlines_each_region() -> None:
    mask = np.zeros((30, 40), bool)
    mask[2:10, 3:12] = True
    mask[15:28, 20:38] = True
    polys = cvat.mask_to_polygons(mask)
    assert len(polys) == 2
    redrawn = np.zeros_like(mask)
    for p in polys:
        redrawn |= cvat._polygon_mask(p, mask.shape)
    np.testing.assert_array_equal(redrawn, mask)
