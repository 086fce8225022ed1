"""PerSeg evaluation: conformance with the reference eval_miou.py / boundary-iou-api numbers, our
documented differences on unusual input, and the ``persam eval perseg`` command."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_close, fixture_dir
from PIL import Image

from persam.cli import main as cli_main
from persam.evaluation.boundary import boundary_dilation, boundary_iou_stats, mask_to_boundary
from persam.evaluation.perseg import (
    PersegEvaluationError,
    evaluate_perseg,
    format_official,
    read_binary_mask,
    write_csv,
)

METHODS = ("perfect", "dilated", "eroded", "shifted", "empty", "mixed")
MEANS = ("mIoU", "mAcc", "mIoU_percent", "mAcc_percent", "bIoU", "bIoU_pooled", "bIoU_api_min")
CONCEPT_FIELDS = (
    "IoU",
    "Acc",
    "intersection_sum",
    "union_sum",
    "target_sum",
    "n_evaluated_images",
    "bIoU",
    "bIoU_pooled",
    "bIoU_api_min",
)
BOUNDARY_FIELDS = (
    "boundary_iou",
    "mask_iou_cocoapi",
    "boundary_iou_api_min",
    "boundary_intersection",
    "boundary_union",
    "gt_boundary_area",
    "pred_boundary_area",
    "dilation_px",
    "height",
    "width",
)
IMAGE_FIELDS = ("intersection", "union", "target", "mask_iou", *BOUNDARY_FIELDS)


def _assert_matches(result, expected: dict) -> None:
    """Every mean, per-concept and per-image number of ``result`` against a fixture result dict."""
    assert result.count == expected["count"]
    for key in MEANS:
        assert_close(getattr(result, key), expected[key], key)
    assert [c.name for c in result.concepts] == list(expected["concepts"])
    for c in result.concepts:
        ce = expected["concepts"][c.name]
        for key in CONCEPT_FIELDS:
            assert_close(getattr(c, key), ce[key], f"{c.name}.{key}")
        assert [(r.gt_path.name, r.pred_path.name) for r in c.images] == [
            (Path(i["gt"]).name, Path(i["pred"]).name) for i in ce["images"]
        ]
        for r, ie in zip(c.images, ce["images"], strict=True):
            for key in IMAGE_FIELDS:
                assert_close(getattr(r, key), ie[key], f"{c.name}/{r.name}.{key}")


@pytest.fixture(scope="module")
def perseg() -> Path:
    return fixture_dir("perseg")


def _edge(perseg: Path, case: str) -> tuple[Path, dict]:
    d = perseg / "edge_cases" / case
    return d, json.loads((d / "expected.json").read_text())


# ------------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("method", METHODS)
def test_fixture_methods_match_reference(perseg: Path, method: str) -> None:
    expected = json.loads((perseg / "expected" / f"{method}.json").read_text())
    result = evaluate_perseg(perseg / "data", perseg / "outputs" / method, ref_idx=expected["ref_idx"])
    _assert_matches(result, expected)
    assert (
        format_official(result, pred_path=method, gt_path="./data/Annotations") == expected["official_stdout"]
    )
    skipped = [f"{p.parent.name}/{p.name}" for p in result.reference_images]
    assert skipped == [f"{Path(s).parent.name}/{Path(s).name}" for s in expected["skipped_gt_files"]]


def test_annotations_folder_accepted_as_root(perseg: Path) -> None:
    a = evaluate_perseg(perseg / "data", perseg / "outputs" / "mixed")
    b = evaluate_perseg(perseg / "data" / "Annotations", perseg / "outputs" / "mixed")
    assert a.mIoU == b.mIoU and a.bIoU == b.bIoU


def test_perfect_prediction_keeps_epsilon_terms(perseg: Path) -> None:
    result = evaluate_perseg(perseg / "data", perseg / "outputs" / "perfect")
    assert result.mIoU < 1.0 and result.mIoU > 1.0 - 1e-12
    assert result.bIoU == 1.0


@pytest.mark.parametrize(
    "case",
    [
        "gt_empty_mask",
        "pred_colour_binarisation",
        "pred_extra_files",
        "other_ref_idx",
        "concept_name_contains_DS",
    ],
)
def test_edge_cases_with_valid_reference_numbers(perseg: Path, case: str) -> None:
    d, expected = _edge(perseg, case)
    for run in expected["runs"]:
        assert run["outcome"] == "ok"
        ds = case == "concept_name_contains_DS"
        with pytest.warns(UserWarning, match=r"\.DS") if ds else contextlib.nullcontext():
            result = evaluate_perseg(
                d / run["gt_path"], d / "outputs" / run["pred_path"], ref_idx=run["ref_idx"]
            )
        _assert_matches(result, run)
        assert format_official(result, run["pred_path"], run["gt_path"]) == run["official_stdout"]


def test_boundary_iou_unit_cases(perseg: Path) -> None:
    d = perseg / "edge_cases" / "boundary_iou_unit"
    expected = json.loads((d / "expected.json").read_text())
    assert expected["cases"]
    for case in expected["cases"]:
        gt = read_binary_mask(d / case["gt"])
        pred = read_binary_mask(d / case["pred"])
        stats = boundary_iou_stats(gt, pred, expected["dilation_ratio"])
        for key in (*BOUNDARY_FIELDS, "boundary_iou_plain_ratio"):
            assert_close(getattr(stats, key), case[key], f"{case['name']}.{key}")


# --------------------------------------------------------------------- our documented differences
def _independent_counts(gt_path: Path, pred_path: Path) -> tuple[int, int, int]:
    """Intersection, union, GT area with PIL (no OpenCV): any non-black RGB pixel is foreground."""
    gt = np.asarray(Image.open(gt_path).convert("RGB")).any(axis=2)
    pred = np.asarray(Image.open(pred_path).convert("RGB")).any(axis=2)
    return int((gt & pred).sum()), int((gt | pred).sum()), int(gt.sum())


def _assert_concept_iou(concept, pairs: list[tuple[Path, Path]]) -> None:
    """The concept's IoU and Acc are those of the pooled, independently counted ``(gt, pred)`` pairs."""
    counts = [_independent_counts(g, p) for g, p in pairs]
    i, u, t = (sum(c[k] for c in counts) for k in range(3))
    assert_close(concept.IoU, i / (u + 1e-10), "IoU")
    assert_close(concept.Acc, i / (t + 1e-10), "Acc")


def test_reference_excluded_by_exact_stem_not_substring_in_concept_name(perseg: Path) -> None:
    d, expected = _edge(perseg, "concept_name_contains_ref_idx")
    run = expected["runs"][0]
    result = evaluate_perseg(d / "data", d / "outputs" / "dilated")
    toy00 = result.concept("toy00")
    assert [r.name for r in toy00.images] == ["01", "02"]
    # toy00 holds the same data as toy, whose numbers the reference computed.
    for c in (result.concept("toy"), toy00):
        assert_close(c.IoU, run["concepts"]["toy"]["IoU"], c.name)
        assert_close(c.bIoU, run["concepts"]["toy"]["bIoU"], c.name)
    assert_close(result.mIoU, run["concepts"]["toy"]["IoU"], "mIoU")


def test_reference_excluded_by_exact_stem_not_substring_in_path(perseg: Path) -> None:
    d, _ = _edge(perseg, "gt_path_contains_ref_idx")
    ann = d / "data_2000" / "Annotations"
    result = evaluate_perseg(ann, d / "outputs" / "dilated")
    toy = result.concept("toy")
    assert [r.name for r in toy.images] == ["01", "02"]
    pairs = [(ann / "toy" / f"{n}.png", d / "outputs" / "dilated" / "toy" / f"{n}.png") for n in ("01", "02")]
    _assert_concept_iou(toy, pairs)


def test_file_named_100_is_evaluated(perseg: Path) -> None:
    d, _ = _edge(perseg, "file_named_100")
    result = evaluate_perseg(d / "data", d / "outputs" / "dilated")
    toy = result.concept("toy")
    assert [r.name for r in toy.images] == ["01", "02", "100"]
    pairs = [
        (d / "data/Annotations/toy" / f"{n}.png", d / "outputs/dilated/toy" / f"{n}.png")
        for n in ("01", "02", "100")
    ]
    _assert_concept_iou(toy, pairs)


def test_pairs_by_name_when_reference_prediction_missing(perseg: Path) -> None:
    d, _ = _edge(perseg, "pred_missing_ref_image")
    result = evaluate_perseg(d / "data", d / "outputs" / "perfect_without_00")
    toy = result.concept("toy")
    assert [(r.gt_path.name, r.pred_path.name) for r in toy.images] == [
        ("01.png", "01.png"),
        ("02.png", "02.png"),
    ]
    assert toy.intersection_sum == toy.union_sum == toy.target_sum > 0
    assert_close(toy.IoU, toy.target_sum / (toy.target_sum + 1e-10), "IoU")
    assert toy.bIoU == 1.0


def test_missing_concept_folder_is_an_error_or_scores_zero(perseg: Path) -> None:
    d, expected = _edge(perseg, "pred_missing_concept_folder")
    run = expected["runs"][0]
    with pytest.raises(PersegEvaluationError, match=r"bird"):
        evaluate_perseg(d / "data", d / "outputs" / "perfect")
    result = evaluate_perseg(d / "data", d / "outputs" / "perfect", missing_concepts="zero")
    bird = result.concept("bird")
    assert bird.missing and bird.IoU == bird.Acc == bird.bIoU == 0.0
    for key in ("mIoU", "mAcc", "mIoU_percent", "mAcc_percent"):
        assert_close(getattr(result, key), run[key], key)  # the reference also scores IoU = Acc = 0
    assert result.bIoU == pytest.approx(0.5)  # 0 for bird, 1 for toy (NaN in the reference)


def test_missing_prediction_file_is_an_error_naming_it(perseg: Path, tmp_path: Path) -> None:
    d, _ = _edge(perseg, "pred_extra_files")
    pred = tmp_path / "pred" / "toy"
    pred.mkdir(parents=True)
    (pred / "01.png").write_bytes((d / "outputs/perfect_plus_extra/toy/01.png").read_bytes())
    with pytest.raises(PersegEvaluationError, match=r"toy/02\.png"):
        evaluate_perseg(d / "data", tmp_path / "pred")


def test_size_mismatch_is_an_error_naming_the_file(perseg: Path) -> None:
    d, expected = _edge(perseg, "pred_size_mismatch")
    assert expected["runs"][0]["outcome"] == "exception"
    with pytest.raises(PersegEvaluationError, match=r"toy/01\.png.*20×15 \(W×H\).*40×30"):
        evaluate_perseg(d / "data", d / "outputs" / "small")


def test_unreadable_png_is_an_error_naming_the_file(perseg: Path) -> None:
    d, expected = _edge(perseg, "pred_unreadable_png")
    assert expected["runs"][0]["outcome"] == "exception"
    with pytest.raises(PersegEvaluationError, match=r"toy/01\.png: not a readable image"):
        evaluate_perseg(d / "data", d / "outputs" / "corrupt")


def test_missing_reference_annotation_is_an_error(perseg: Path) -> None:
    d, _ = _edge(perseg, "other_ref_idx")
    with pytest.raises(PersegEvaluationError, match=r"07\.png not found"):
        evaluate_perseg(d / "data", d / "outputs" / "dilated", ref_idx="07")


# ---------------------------------------------------------------------------- synthetic data
def _square(h: int, w: int, y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def _make_dataset(root: Path, pred_writer) -> tuple[Path, Path]:
    gt = root / "data" / "Annotations" / "thing"
    pred = root / "pred" / "thing"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0] + [0] * 762
    for k, (y, x) in enumerate([(5, 5), (10, 12), (3, 20)]):
        m = _square(40, 50, y, x, 12)
        im = Image.fromarray(m.astype(np.uint8), mode="L").convert("P")
        im.putpalette(palette)
        im.save(gt / f"{k:02d}.png")
        pred_writer(pred / f"{k:02d}.png", _square(40, 50, y + 2, x, 12))
    return root / "data", root / "pred"


@pytest.mark.parametrize("fmt", ["bgr128", "gray255", "gray1", "gray16", "rgba"])
def test_prediction_formats_are_binarised_alike(tmp_path: Path, fmt: str) -> None:
    def write(path: Path, m: np.ndarray) -> None:
        if fmt == "bgr128":  # persam / eval_miou.py format: BGR (0, 0, 128) = RGB (128, 0, 0)
            a = np.zeros((*m.shape, 3), np.uint8)
            a[m] = (128, 0, 0)
            Image.fromarray(a).save(path)
        elif fmt == "gray255":
            Image.fromarray(m.astype(np.uint8) * 255).save(path)
        elif fmt == "gray1":
            Image.fromarray(m.astype(np.uint8)).save(path)
        elif fmt == "gray16":
            Image.fromarray(m.astype(np.uint16)).save(path)  # value 1 in a 16-bit PNG
        else:
            a = np.zeros((*m.shape, 4), np.uint8)
            a[m] = (255, 255, 255, 255)
            a[..., 3] = 255
            Image.fromarray(a).save(path)

    data, pred = _make_dataset(tmp_path, write)
    result = evaluate_perseg(data, pred)
    thing = result.concept("thing")
    # Each 12x12 square shifted down by 2 px: intersection 120, union 168 per image.
    assert [(r.intersection, r.union, r.target) for r in thing.images] == [(120, 168, 144)] * 2
    assert_close(thing.IoU, 240 / (336 + 1e-10), "IoU")


def test_boundary_band_width_rounds_half_to_even() -> None:
    assert boundary_dilation(375, 500) == 12  # round(12.5)
    assert boundary_dilation(10, 10) == 1  # 0.28 clamped to 1
    assert boundary_dilation(640, 640) == 18
    m = np.ones((375, 500), np.uint8)
    b = mask_to_boundary(m)
    # The full-image mask's boundary is the 12-px frame along the image border.
    assert b[12:-12, 12:-12].sum() == 0 and b[:12].all() and b[:, -12:].all()


def test_write_csv_is_atomic_and_complete(perseg: Path, tmp_path: Path) -> None:
    result = evaluate_perseg(perseg / "data", perseg / "outputs" / "mixed")
    path = write_csv(result, tmp_path / "out" / "res.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "concept,n_images,IoU,Acc,bIoU,bIoU_pooled,bIoU_api_min"
    assert [ln.split(",")[0] for ln in lines[1:]] == [c.name for c in result.concepts] + ["mean"]
    assert float(lines[-1].split(",")[2]) == result.mIoU
    assert list(path.parent.iterdir()) == [path]


# ------------------------------------------------------------------------------------------- CLI
def test_cli_prints_table_and_writes_csv(perseg: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "res.csv"
    rc = cli_main(
        [
            "eval",
            "perseg",
            "--data",
            str(perseg / "data"),
            "--pred",
            str(perseg / "outputs/mixed"),
            "--csv",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    expected = json.loads((perseg / "expected" / "mixed.json").read_text())
    assert "synth_star" in text and f"{expected['mIoU_percent']:.2f}" in text
    assert out.read_text().splitlines()[-1].startswith("mean,12,")


def test_cli_official_output(perseg: Path, capsys) -> None:
    rc = cli_main(
        [
            "eval",
            "perseg",
            "--data",
            str(perseg / "data"),
            "--pred",
            str(perseg / "outputs/eroded"),
            "--official-output",
        ]
    )
    assert rc == 0
    stdout = json.loads((perseg / "expected" / "eroded.json").read_text())["official_stdout"]
    assert capsys.readouterr().out == stdout.split("\n\n", 1)[1]  # all but the Args line


def test_cli_bad_input_exits_nonzero_with_one_line_and_no_csv(perseg: Path, tmp_path: Path, capsys) -> None:
    d = perseg / "edge_cases" / "pred_size_mismatch"
    out = tmp_path / "res.csv"
    rc = cli_main(
        ["eval", "perseg", "--data", str(d / "data"), "--pred", str(d / "outputs/small"), "--csv", str(out)]
    )
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "01.png" in err[0] and err[0].startswith("persam eval: error:")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_unusable_csv_path_fails_before_evaluating(tmp_path: Path, capsys, monkeypatch) -> None:
    import persam.evaluation.perseg as perseg_mod

    (tmp_path / "a_file").write_text("x")
    monkeypatch.setattr(perseg_mod, "evaluate_perseg", lambda *a, **k: pytest.fail("evaluated"))
    argv = ["eval", "perseg", "--data", str(tmp_path), "--pred", str(tmp_path)]
    cases = ((tmp_path / "a_file" / "r.csv", "r.csv: cannot be written"), (tmp_path, "is a folder"))
    for csv, message in cases:
        rc = cli_main([*argv, "--csv", str(csv)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("persam eval: error:")
        assert message in err[0]
        assert capsys.readouterr().out == ""  # no table printed before the error
