"""ONNX export of the SAM-family prompt encoder + mask decoder (``persam.export``), run with
onnxruntime (skipped without it) and compared with our PyTorch path (``SamBackbone.decode`` /
``postprocess``) and, where ``segment_anything`` is installed, with the official ``SamOnnxModel``.

Tolerances: low-res logits and IoU predictions within 1e-5 (both runtimes compute the same float32
operations, in a different order); upscaled logits within 1e-4 (onnxruntime's Resize and torch's
bilinear interpolation round differently); binary masks then agree wherever |logit| > 1e-3.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch
from official_amg import install_torchvision_stand_in
from official_amg import official_sam as official_sam_of_size

from persam.everything.postprocess import stability_scores
from persam.export import export_decoder_onnx
from persam.export.decoder import INPUT_NAMES
from persam.registry import build_model

LOW_RES_TOL = 1e-5
MASK_TOL = 1e-4
SIGN_MARGIN = 1e-3

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx / onnxruntime are not installed (pip install 'persam[onnx]')",
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


@pytest.fixture(scope="module")
def backbones():
    return {name: build_model(name, checkpoint="none", dtype="float32") for name in MODELS}


MODELS = ("tiny_random_sam", "tiny_random_mobile_sam")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, backbones):
    """``(model, options) -> onnxruntime session``, each exported once."""
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(name: str, **options) -> ort.InferenceSession:
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            path = folder / f"{name}-{len(cache)}.onnx"
            export_decoder_onnx(backbones[name], path, **options)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            cache[key] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cache[key]

    return get


def image_of(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def run(session, embeddings, coords, labels, mask=None, orig_size=(1, 1)) -> list[np.ndarray]:
    mh, mw = 256, 256
    feeds = {
        "image_embeddings": np.asarray(embeddings, np.float32),
        "point_coords": np.asarray(coords, np.float32)[None],
        "point_labels": np.asarray(labels, np.float32)[None],
        "mask_input": np.zeros((1, 1, mh, mw), np.float32) if mask is None else np.asarray(mask, np.float32),
        "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
        "orig_im_size": np.array(orig_size, np.float32),
    }
    assert list(feeds) == list(INPUT_NAMES)
    return session.run(None, feeds)


def assert_close(actual: np.ndarray, expected: torch.Tensor, tol: float, what: str) -> None:
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = float(np.abs(actual - expected).max())
    assert err <= tol, f"{what}: max |difference| {err} > {tol}"


def assert_same_masks(actual: np.ndarray, expected: torch.Tensor, what: str) -> None:
    assert_close(actual, expected, MASK_TOL, what)
    expected = expected.numpy()
    clear = np.abs(expected) > SIGN_MARGIN
    assert clear.mean() > 0.5, f"{what}: too few pixels away from the threshold to compare"
    assert np.array_equal((actual > 0)[clear], (expected > 0)[clear]), f"{what}: binary masks differ"


# Prompt sets in original pixels: (points, labels, box or None). Without a box the ONNX input ends
# with a padding point (label -1), which the prompt encoder adds itself in the PyTorch path.
PROMPTS = {
    "one point": ([[0.3, 0.4]], [1], None),
    "points": ([[0.2, 0.3], [0.7, 0.6], [0.5, 0.9]], [1, 0, 1], None),
    "points and box": ([[0.5, 0.5]], [1], [0.1, 0.2, 0.8, 0.7]),
    "box": (np.zeros((0, 2)), [], [0.25, 0.1, 0.6, 0.95]),
}


def onnx_prompt(backbone, size, points, labels, box):
    h, w = size
    pts = torch.as_tensor(np.asarray(points, np.float64).reshape(-1, 2) * (w, h), dtype=torch.float32)
    coords = backbone.transform_coords(pts)
    lab = torch.as_tensor(labels, dtype=torch.float32)
    if box is None:
        coords = torch.cat([coords, torch.zeros(1, 2)])
        lab = torch.cat([lab, torch.tensor([-1.0])])
        box_t = None
    else:
        box_t = torch.as_tensor(np.asarray(box, np.float64) * (w, h, w, h))[None]
        coords = torch.cat([coords, backbone.transform_boxes(box_t).reshape(2, 2)])
        lab = torch.cat([lab, torch.tensor([2.0, 3.0])])
    torch_points = (pts[None], torch.as_tensor(labels)[None]) if len(labels) else (None, None)
    return coords, lab, torch_points, box_t


@needs_ort
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(60, 90), (130, 40), (700, 1100)])
def test_matches_pytorch_path(exported, backbones, name, size):
    backbone = backbones[name]
    backbone.set_image(image_of(size))
    session = exported(name)
    rng = np.random.default_rng(1)
    previous = torch.as_tensor(rng.normal(0, 3, (1, 1, 256, 256)), dtype=torch.float32)
    for what, (points, labels, box) in PROMPTS.items():
        coords, lab, (pts, pl), box_t = onnx_prompt(backbone, size, points, labels, box)
        for mask in (None, previous):
            case = f"{name} {size} {what}{' + mask' if mask is not None else ''}"
            masks, iou, low_res = run(session, backbone.features, coords, lab, mask, size)
            assert masks.shape == (1, 4, *size) and iou.shape == (1, 4) and low_res.shape == (1, 4, 256, 256)
            for multimask, sl in ((True, slice(1, None)), (False, slice(0, 1))):
                ref = backbone.decode(pts, pl, boxes=box_t, mask_input=mask, multimask_output=multimask)
                assert_close(low_res[:, sl], ref.low_res_logits, LOW_RES_TOL, f"{case}: low-res logits")
                assert_close(iou[:, sl], ref.iou_predictions, LOW_RES_TOL, f"{case}: IoU predictions")
                assert_same_masks(masks[:, sl], backbone.postprocess(ref.low_res_logits), f"{case}: masks")


@needs_ort
def test_number_of_points_is_dynamic(exported, backbones):
    session = exported("tiny_random_sam")
    emb = torch.randn(1, 32, 64, 64).numpy()
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 20):
        coords = rng.uniform(0, 1024, (n, 2))
        labels = rng.integers(-1, 4, n)
        masks, iou, low_res = run(session, emb, coords, labels, orig_size=(33, 47))
        assert masks.shape == (1, 4, 33, 47) and iou.shape == (1, 4) and np.isfinite(masks).all()


@needs_ort
def test_single_mask_and_extra_metrics(exported, backbones):
    backbone = backbones["tiny_random_sam"]
    size = (80, 120)
    backbone.set_image(image_of(size, seed=3))
    session = exported("tiny_random_sam", return_single_mask=True, return_extra_metrics=True)
    for what in ("one point", "points", "points and box", "box"):
        points, labels, box = PROMPTS[what]
        coords, lab, (pts, pl), box_t = onnx_prompt(backbone, size, points, labels, box)
        masks, iou, stability, areas, low_res = run(session, backbone.features, coords, lab, orig_size=size)
        assert masks.shape == (1, 1, *size) and low_res.shape == (1, 1, 256, 256)
        ref_multi = backbone.decode(pts, pl, boxes=box_t, multimask_output=True)
        ref_single = backbone.decode(pts, pl, boxes=box_t, multimask_output=False)
        if len(lab) > 2:  # three or more points (padding and box corners count): unambiguous
            ref_low, ref_iou = ref_single.low_res_logits, ref_single.iou_predictions
        else:
            best = int(ref_multi.iou_predictions[0].argmax())
            ref_low = ref_multi.low_res_logits[:, best : best + 1]
            ref_iou = ref_multi.iou_predictions[:, best : best + 1]
        assert_close(low_res, ref_low, LOW_RES_TOL, f"{what}: selected low-res mask")
        assert_close(iou, ref_iou, LOW_RES_TOL, f"{what}: selected IoU")
        own = torch.from_numpy(masks[0])
        expected = stability_scores(own, threshold=0.0, offset=1.0).numpy()
        np.testing.assert_allclose(stability[0], expected, rtol=1e-6, err_msg=f"{what}: stability")
        assert areas.dtype == np.int64 and areas[0, 0] == int((masks[0, 0] > 0).sum())


@needs_ort
def test_stability_score_replaces_iou(exported, backbones):
    session = exported("tiny_random_sam", use_stability_score=True)
    emb = (3 * torch.randn(1, 32, 64, 64)).numpy()
    masks, scores, low_res = run(session, emb, [[500.0, 300.0], [0.0, 0.0]], [1, -1], orig_size=(90, 90))
    expected = stability_scores(torch.from_numpy(low_res[0]), threshold=0.0, offset=1.0).numpy()
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)


# ------------------------------------------------------------------------------------ official
def official_sam(official, state_dict):
    """The official ``Sam`` with the modules of ``tiny_random_sam`` (the image encoder is unused
    by the decoder but part of the state dict)."""
    sam = official_sam_of_size(
        official.modeling, dim=32, depth=2, heads=2, mlp_ratio=2.0, global_attn=[1], mask_in_chans=8,
        decoder_mlp_dim=64,
    )  # fmt: skip
    sam.load_state_dict(state_dict, strict=True)
    return sam.eval()


@needs_ort
@pytest.mark.skipif(
    importlib.util.find_spec("segment_anything") is None, reason="segment-anything is not installed"
)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_single_mask": True},
        {"return_single_mask": True, "return_extra_metrics": True},
        {"use_stability_score": True},
    ],
    ids=["multi", "single", "single+metrics", "stability"],
)
def test_matches_official_onnx_model(monkeypatch, exported, backbones, options):
    install_torchvision_stand_in(monkeypatch)
    official = importlib.import_module("segment_anything")
    official_onnx = importlib.import_module("segment_anything.utils.onnx")
    ref_model = official_onnx.SamOnnxModel(
        official_sam(official, backbones["tiny_random_sam"].model.state_dict()),
        return_single_mask=options.get("return_single_mask", False),
        use_stability_score=options.get("use_stability_score", False),
        return_extra_metrics=options.get("return_extra_metrics", False),
    ).eval()
    session = exported("tiny_random_sam", **options)
    rng = np.random.default_rng(4)
    emb = torch.as_tensor(rng.normal(0, 3, (1, 32, 64, 64)), dtype=torch.float32)
    previous = torch.as_tensor(rng.normal(0, 3, (1, 1, 256, 256)), dtype=torch.float32)
    cases = [
        ([[400.0, 300.0], [0.0, 0.0]], [1, -1], None, (600, 800)),
        ([[100.0, 900.0], [700.0, 50.0], [0.0, 0.0]], [1, 0, -1], previous, (1024, 333)),
        ([[500.0, 500.0], [200.0, 100.0], [900.0, 800.0]], [1, 2, 3], None, (77, 64)),
    ]
    for coords, labels, mask, size in cases:
        ours = run(session, emb, coords, labels, mask, size)
        theirs = ref_model(
            emb,
            torch.tensor([coords], dtype=torch.float32),
            torch.tensor([labels], dtype=torch.float32),
            torch.zeros(1, 1, 256, 256) if mask is None else mask,
            torch.tensor([0.0 if mask is None else 1.0]),
            torch.tensor(size, dtype=torch.float32),
        )
        assert len(ours) == len(theirs)
        case = f"{options} {labels} {size}"
        assert_same_masks(ours[0], theirs[0], f"{case}: masks")
        assert_close(ours[1], theirs[1], LOW_RES_TOL, f"{case}: scores")
        assert_close(ours[-1], theirs[-1], LOW_RES_TOL, f"{case}: low-res logits")
        if len(ours) == 5:
            assert_close(ours[2], theirs[2], 0.01, f"{case}: stability scores")
            near = int((np.abs(ours[0]) <= SIGN_MARGIN).sum())
            assert np.abs(ours[3] - theirs[3].numpy()).max() <= near, f"{case}: areas"


@needs_ort
@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_decoder(tmp_path, exported, backbones):
    """The ``torch.export``-based exporter (the one left once torch drops tracing) gives the same
    interface and outputs, with the number of points and the original size still free."""
    import onnxruntime as ort

    pytest.importorskip("onnxscript")
    path = export_decoder_onnx(backbones["tiny_random_sam"], tmp_path / "d.onnx", exporter="dynamo")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    reference = exported("tiny_random_sam")
    rng = np.random.default_rng(5)
    emb = rng.normal(0, 3, (1, 32, 64, 64))
    previous = rng.normal(0, 3, (1, 1, 256, 256))
    for n, mask, size in ((2, None, (50, 70)), (5, previous, (300, 20))):
        coords, labels = rng.uniform(0, 1024, (n, 2)), rng.integers(-1, 4, n)
        ours = run(session, emb, coords, labels, mask, size)
        theirs = run(reference, emb, coords, labels, mask, size)
        for a, b, what in zip(ours, theirs, ("masks", "iou_predictions", "low_res_masks"), strict=True):
            assert_close(a, torch.from_numpy(b), MASK_TOL, f"dynamo {n} points {size}: {what}")
