"""DAVIS 2017 semi-supervised evaluation: conformance with the reference davis2017-evaluation numbers,
clear errors where the reference code misbehaves, CSV writers and the ``persam eval davis`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_close, fixture_dir, json_number
from PIL import Image

from persam.cli import main as cli_main
from persam.evaluation.davis import (
    GLOBAL_COLUMNS,
    DavisEvaluationError,
    evaluate_davis,
    read_sequence_list,
    save_full_precision_csvs,
    save_official_csvs,
)
from persam.evaluation.metrics import (
    boundary_f,
    boundary_map,
    boundary_tolerance,
    decay_bin_edges,
    jaccard,
    sequence_statistics,
)

TOL = 1e-9
METHODS = ("perfect", "dilated", "eroded_shifted", "dropped", "swapped", "noisy")
STAT_KEYS = {"M": "mean", "R": "recall", "D": "decay"}


@pytest.fixture(scope="module")
def davis() -> Path:
    return fixture_dir("davis")


@pytest.fixture(scope="module")
def results(davis: Path) -> dict:
    """All six methods evaluated once, with two worker processes."""
    return {
        m: evaluate_davis(davis / "DAVIS", davis / "results" / m, gt_set="val", workers=2) for m in METHODS
    }


# ------------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("method", METHODS)
def test_per_frame_values_and_statistics_match_reference(davis: Path, results: dict, method: str) -> None:
    raw = json.loads((davis / "expected" / method / "raw.json").read_text())
    result = results[method]
    assert [s.name for s in result.sequences] == [s["name"] for s in raw["sequences"]]
    for seq, es in zip(result.sequences, raw["sequences"], strict=True):
        assert seq.frame_ids == es["evaluated_frame_ids"]
        assert (seq.height, seq.width, seq.n_annotation_frames) == (
            es["height"],
            es["width"],
            es["n_annotation_frames"],
        )
        assert seq.bound_pix == es["bound_pix"]
        assert (seq.n_gt_objects, seq.n_pred_objects_read) == (es["n_gt_objects"], es["n_pred_objects_read"])
        assert [o.name for o in seq.objects] == [o["name"] for o in es["objects"]]
        for obj, eo in zip(seq.objects, es["objects"], strict=True):
            assert obj.J.shape == obj.F.shape == (len(seq.frame_ids),)
            np.testing.assert_allclose(obj.J, eo["J"], rtol=0, atol=TOL, err_msg=f"{obj.name} J")
            np.testing.assert_allclose(obj.F, eo["F"], rtol=0, atol=TOL, err_msg=f"{obj.name} F")
            for measure in ("J", "F"):
                for key, attr in STAT_KEYS.items():
                    got = getattr(obj, f"{measure}_{attr}")
                    assert_close(got, eo[f"{measure}_stats"][key], f"{obj.name} {measure}-{attr}")
    for key in GLOBAL_COLUMNS:
        assert_close(result.global_results[key], raw["global"][key], key)


@pytest.mark.parametrize("method", METHODS)
def test_csv_files_match_reference_text(davis: Path, results: dict, method: str, tmp_path: Path) -> None:
    expected = davis / "expected" / method
    official = save_official_csvs(results[method], tmp_path / "official")
    assert [p.name for p in official] == ["global_results-val.csv", "per-sequence_results-val.csv"]
    for p in official:
        assert p.read_text() == (expected / "official_script_output" / p.name).read_text(), p.name
    full = save_full_precision_csvs(results[method], tmp_path / "full")
    for p in full:
        assert p.read_text() == (expected / p.name).read_text(), p.name


def test_single_process_equals_parallel(davis: Path, results: dict) -> None:
    serial = evaluate_davis(davis / "DAVIS", davis / "results" / "noisy", workers=1)
    assert serial.global_results == results["noisy"].global_results
    for a, b in zip(serial.objects, results["noisy"].objects, strict=True):
        assert np.array_equal(a.J, b.J) and np.array_equal(a.F, b.F)


def test_sequence_subset_in_given_order(davis: Path) -> None:
    r = evaluate_davis(
        davis / "DAVIS", davis / "results" / "dilated", workers=1, sequences=["dogs-jump", "blackswan"]
    )
    raw = json.loads((davis / "expected" / "dilated" / "raw.json").read_text())
    by_name = {s["name"]: s for s in raw["sequences"]}
    assert [s.name for s in r.sequences] == ["dogs-jump", "blackswan"]
    for seq in r.sequences:
        for obj, eo in zip(seq.objects, by_name[seq.name]["objects"], strict=True):
            np.testing.assert_allclose(obj.F, eo["F"], rtol=0, atol=TOL)


# ------------------------------------------------------------------------------------ unit cases
def _rows(rows: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in r] for r in rows])


def test_unit_cases_statistics(davis: Path) -> None:
    cases = json.loads((davis / "edge_cases" / "unit_cases.json").read_text())["db_statistics"]
    assert cases
    for case in cases:
        values = np.array([json_number(v) for v in case["values"]], dtype=np.float64)
        mean, recall, decay = sequence_statistics(values)
        assert_close(mean, case["M"], f"{case['name']} M")
        assert_close(recall, case["R"], f"{case['name']} R")
        # len300: the benchmark's uint8 bin edges wrap and its decay is NaN; reproduced on purpose.
        assert_close(decay, case["D"], f"{case['name']} D")


def test_decay_bin_edges_wrap_above_256_frames() -> None:
    assert decay_bin_edges(23).tolist() == [0, 6, 11, 17, 22]
    assert decay_bin_edges(300).tolist() == [0, 75, 150, 224, 299 - 256]


def test_unit_cases_j_and_f(davis: Path) -> None:
    cases = json.loads((davis / "edge_cases" / "unit_cases.json").read_text())["db_eval_iou_and_boundary"]
    assert cases
    for case in cases:
        gt, pred = _rows(case["gt_mask_rows"]), _rows(case["pred_mask_rows"])
        assert gt.shape == tuple(case["shape"])
        assert boundary_tolerance(*gt.shape) == case["bound_pix_used"]
        assert_close(jaccard(gt, pred), case["J"], f"{case['name']} J")
        assert_close(boundary_f(gt, pred), case["F"], f"{case['name']} F")


def test_boundary_map_excludes_image_border() -> None:
    m = np.zeros((6, 7), bool)
    m[:, :3] = True  # touches the top, bottom and left border
    b = boundary_map(m)
    assert b[:, 2].all() and b.sum() == 6  # only the inner contour (column 2); the image border is not one
    assert not boundary_map(np.ones((5, 5), bool)).any()


def test_jaccard_stack() -> None:
    gt = np.zeros((3, 4, 4), bool)
    pred = np.zeros((3, 4, 4), bool)
    gt[0, :2] = True
    pred[0, :1] = True
    pred[1, 0, 0] = True
    assert jaccard(gt, pred).tolist() == [0.5, 0.0, 1.0]


# ------------------------------------------------------------------------------------ edge cases
EDGE_OK = [
    "fewer_images_than_masks",
    "gt_first_frame_empty",
    "gt_higher_id_absent_in_first_frame",
    "gt_lower_id_absent_in_first_frame",
    "gt_object_empty_in_some_frames",
    "gt_with_void_255",
    "only_sequence_has_no_objects",
    "pred_grayscale_png",
    "pred_highest_object_never_predicted",
    "pred_missing_first_and_last_frame",
    "pred_object_id_not_in_gt_only_first_last_frame",
    "sequence_with_three_frames",
]
# Runs where the benchmark code exits with status 0 or crashes: (case, message pattern).
EDGE_ERRORS = {
    "fewer_masks_than_images": r"beta: 5 annotation PNGs .* 7 JPEG frames",
    "gt_first_frame_empty": r"beta: prediction .*beta/00001\.png contains object id 1 .* 0 object",
    "gt_higher_id_absent_in_first_frame": r"alpha: .*alpha/00001\.png contains object id 2 .* 1 obj",
    "pred_contains_255": r"beta: prediction .*beta/00002\.png contains object id 255",
    "pred_corrupt_png": r"alpha: prediction .*alpha/00002\.png is not a readable image",
    "pred_missing_middle_frame": r"alpha: prediction frame 00003 not found",
    "pred_missing_sequence_folder": r"beta: prediction frame 00001 not found",
    "pred_object_id_not_in_gt": r"alpha: prediction .*alpha/00002\.png contains object id 3 .* 2 object",
    "pred_rgb_png": r"alpha: prediction .*alpha/00001\.png is a RGB image",
    "pred_wrong_size": r"alpha: prediction .*alpha/00001\.png is 40×32 .* 64×48",
    "sequence_with_two_frames": r"beta: 2 annotation frame\(s\)",
    "sequence_without_images": r"beta: no \.jpg frames",
}


def _runs(davis: Path, case: str, outcome: str) -> list[dict]:
    d = davis / "edge_cases" / case
    expected = json.loads((d / "expected.json").read_text())
    return [r for r in expected["runs"] if r["outcome"] == outcome]


@pytest.mark.parametrize("case", EDGE_OK)
def test_edge_cases_where_reference_succeeds(davis: Path, case: str) -> None:
    d = davis / "edge_cases" / case
    runs = _runs(davis, case, "ok")
    assert runs
    for run in runs:
        result = evaluate_davis(d / "DAVIS", d / run["results_path"], workers=1)
        for key in GLOBAL_COLUMNS:
            assert_close(result.global_results[key], run["global"][key], f"{run['results_path']} {key}")
        assert [o.name for o in result.objects] == list(run["per_object"])
        for obj in result.objects:
            for key, value in run["per_object"][obj.name].items():
                assert_close(obj.statistics()[key], value, f"{obj.name} {key}")
        for seq in result.sequences:
            ef = run["per_frame"][seq.name]
            assert seq.frame_ids == ef["evaluated_frame_ids"]
            assert (seq.n_gt_objects, seq.n_pred_objects_read) == (
                ef["n_gt_objects"],
                ef["n_pred_objects_read"],
            )
            assert [o.J.tolist() for o in seq.objects] == ef["J"]
            assert [o.F.tolist() for o in seq.objects] == ef["F"]


@pytest.mark.parametrize("case", sorted(EDGE_ERRORS))
def test_edge_cases_where_reference_misbehaves_raise_clear_error(davis: Path, case: str) -> None:
    d = davis / "edge_cases" / case
    runs = _runs(davis, case, "exception")
    assert runs
    for run in runs:
        with pytest.raises(DavisEvaluationError, match=EDGE_ERRORS[case]) as info:
            evaluate_davis(d / "DAVIS", d / run["results_path"], workers=1)
        assert "\n" not in str(info.value)
        assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------- synthetic data
def _write_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    im.save(path)


def _tiny_davis(root: Path, n_frames: int = 5, set_text: str = "one\n") -> tuple[Path, Path]:
    davis_root = root / "DAVIS"
    res = root / "res"
    for t in range(n_frames):
        lab = np.zeros((24, 32), np.uint8)
        lab[4 + t : 12 + t, 5:15] = 1
        lab[14:20, 18 + t : 26 + t] = 2
        _write_labels(davis_root / "Annotations/480p/one" / f"{t:05d}.png", lab)
        pred = lab.copy()
        pred[4 + t, 5:15] = 0  # drop a row of object 1
        _write_labels(res / "one" / f"{t:05d}.png", pred)
        img = davis_root / "JPEGImages/480p/one" / f"{t:05d}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (128, 128, 128)).save(img)
    (davis_root / "ImageSets/2017").mkdir(parents=True)
    (davis_root / "ImageSets/2017/val.txt").write_text(set_text)
    return davis_root, res


def test_synthetic_sequence_values(tmp_path: Path) -> None:
    davis_root, res = _tiny_davis(tmp_path, set_text="one\n\n one \n")
    assert read_sequence_list(davis_root, "val") == ["one"]
    r = evaluate_davis(davis_root, res, workers=1)
    obj1, obj2 = r.objects
    assert obj1.J.tolist() == [70 / 80] * 3  # 8x10 object minus one 10-px row
    assert obj2.J.tolist() == [1.0] * 3 and obj2.F.tolist() == [1.0] * 3
    assert 0 < obj1.F.min() <= obj1.F.max() <= 1


def test_missing_sequence_list_is_an_error(tmp_path: Path) -> None:
    davis_root, res = _tiny_davis(tmp_path)
    with pytest.raises(DavisEvaluationError, match=r"test\.txt"):
        evaluate_davis(davis_root, res, gt_set="test", workers=1)


def test_cli_writes_official_csvs(davis: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = [
        "eval",
        "davis",
        "--davis-root",
        str(davis / "DAVIS"),
        "--results",
        str(davis / "results/dropped"),
    ]
    rc = cli_main(argv + ["--workers", "1", "--output-dir", str(out)])
    assert rc == 0
    expected = davis / "expected" / "dropped" / "official_script_output"
    for name in ("global_results-val.csv", "per-sequence_results-val.csv"):
        assert (out / name).read_text() == (expected / name).read_text()
    assert "lab-coat_5" in capsys.readouterr().out


def test_cli_error_exits_nonzero_without_output(davis: Path, tmp_path: Path, capsys) -> None:
    d = davis / "edge_cases" / "pred_object_id_not_in_gt"
    out = tmp_path / "out"
    argv = ["eval", "davis", "--davis-root", str(d / "DAVIS"), "--results", str(d / "results/extra_id")]
    rc = cli_main(argv + ["--workers", "2", "--output-dir", str(out)])
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha" in err[0] and "object id 3" in err[0]
    assert not out.exists()


def test_missing_sequence_results_folder_suggests_sequences(tmp_path: Path) -> None:
    davis_root, res = _tiny_davis(tmp_path, set_text="one\n")
    (res / "one").rename(res / "other")
    with pytest.raises(DavisEvaluationError, match=r"one: prediction frame 00001 not found") as info:
        evaluate_davis(davis_root, res, workers=1)
    assert "there is no folder" in str(info.value) and "--sequences" in str(info.value)


def test_cli_unusable_output_dir_fails_before_evaluating(tmp_path: Path, capsys, monkeypatch) -> None:
    import persam.evaluation.davis as davis_mod

    davis_root, res = _tiny_davis(tmp_path)
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setattr(davis_mod, "evaluate_davis", lambda *a, **k: pytest.fail("evaluated"))
    argv = ["eval", "davis", "--davis-root", str(davis_root), "--results", str(res)]
    rc = cli_main([*argv, "--output-dir", str(tmp_path / "a_file" / "csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("persam eval: error:")
    assert "--output-dir" in err[0] and "a_file is a file" in err[0]


def test_cli_read_only_results_folder_fails_before_evaluating(tmp_path: Path, capsys, monkeypatch) -> None:
    import tempfile

    import persam.evaluation.davis as davis_mod

    davis_root, res = _tiny_davis(tmp_path)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # root ignores chmod, so the folder refuses here
        if dir is not None and Path(dir) == res:
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(davis_mod, "evaluate_davis", lambda *a, **k: pytest.fail("evaluated"))
    rc = cli_main(["eval", "davis", "--davis-root", str(davis_root), "--results", str(res)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not writable" in err[0] and "--output-dir" in err[0]


def test_cli_prints_the_numbers_when_the_csv_cannot_be_written(tmp_path: Path, capsys, monkeypatch) -> None:
    import persam.evaluation.davis as davis_mod

    davis_root, res = _tiny_davis(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(davis_mod, "save_official_csvs", disk_full)
    rc = cli_main(["eval", "davis", "--davis-root", str(davis_root), "--results", str(res), "--workers", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and "J&F-Mean" in out and "one" in out
    assert "the results were not saved" in err and "No space left" in err
