"""`persam segment` / `persam learn` and the image-set pipeline behind them.

The pipeline tests use a stand-in concept (a fixed colour threshold) so that they check files,
resumability and atomicity without a model; the command-line tests run a tiny random model built
from a config written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_sam_config
from PIL import Image
from pycocotools import mask as mask_utils

from persam.io import InputError
from persam.personalize import SegmentationResult
from persam.pipelines import image_set
from persam.results import decode_rle


@pytest.fixture(autouse=True)
def _single_thread():
    # The tiny model is far faster on one thread than on two contended ones.
    import torch

    torch.set_num_threads(1)


# ------------------------------------------------------------------------------ synthetic scenes


def _scene(seed: int, h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with a red disc; returns ``(uint8 [H, W, 3], bool [H, W])``."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(15, h - 15), rng.integers(15, w - 15), rng.integers(6, 12)
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[m] = (220, 30, 30)
    return img, m


def _write_scenes(folder: Path, n: int, ext: str = ".png", start: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    masks = []
    for i in range(start, start + n):
        img, m = _scene(i)
        Image.fromarray(img).save(folder / f"{i:02d}{ext}")
        masks.append(m)
    return masks


class _RedConcept:
    """Stand-in for a learned concept: segments strongly red pixels and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, image: np.ndarray, *, max_instances: int = 1) -> SegmentationResult:
        self.calls += 1
        m = (image[..., 0] > 150) & (image[..., 1] < 80)
        ys, xs = np.nonzero(m)
        pts = np.array([[xs.mean(), ys.mean()]]) if m.any() else None
        labels = np.array([1]) if m.any() else None
        return SegmentationResult(
            mask=m,
            score=0.75,
            found=bool(m.any()),
            points=pts,
            point_labels=labels,
            box=None,
            final_stage="refine2",
        )


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _no_part_files(root: Path) -> None:
    leftovers = [
        p
        for p in root.rglob("*")
        if ".part" in p.name or (p.name.startswith(".persam") and p.name != image_set.STATE_FILE)
    ]
    assert leftovers == []


# ------------------------------------------------------------------------------------ pipeline
def test_pipeline_writes_masks_overlays_coco_perseg(tmp_path: Path) -> None:
    gts = _write_scenes(tmp_path / "imgs", 3)
    concept = _RedConcept()
    out = tmp_path / "out"
    s = image_set.segment_image_set(
        concept, tmp_path / "imgs", out, save="mask,overlay,coco,perseg", concept_name="disc", progress=False
    )
    assert (len(s.segmented), len(s.skipped), len(s.failed)) == (3, 0, 0)
    assert s.line() == "3 segmented, 0 failed"
    data = json.loads((out / "coco.json").read_text())
    assert [im["file_name"] for im in data["images"]] == ["00.png", "01.png", "02.png"]
    for i, gt in enumerate(gts):
        a = _png(out / "masks" / f"{i:02d}.png")
        assert a.dtype == np.uint8 and a.ndim == 2 and set(np.unique(a)) <= {0, 255}
        np.testing.assert_array_equal(a == 255, gt)
        assert Image.open(out / "overlays" / f"{i:02d}.jpg").size == (80, 60)
        p = _png(out / "disc" / f"{i:02d}.png")
        assert p.shape == (60, 80, 3)
        np.testing.assert_array_equal(p[..., 0] == 128, gt)
        ann = [a for a in data["annotations"] if a["file_name"] == f"{i:02d}.png"]
        assert len(ann) == 1 and ann[0]["score"] == 0.75 and ann[0]["area"] == int(gt.sum())
        rle = {"size": ann[0]["segmentation"]["size"], "counts": ann[0]["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), gt)
    _no_part_files(out)


def test_pipeline_resumes_and_overwrites(tmp_path: Path) -> None:
    _write_scenes(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    c = _RedConcept()
    image_set.segment_image_set(c, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert c.calls == 3
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    # Missing one output (deleted mask, or an image absent from coco.json) -> only that image reruns.
    (out / "masks" / "01.png").unlink()
    s = image_set.segment_image_set(c, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert c.calls == 4 and [p.name for p in s.segmented] == ["01.png"] and len(s.skipped) == 2
    assert "2 skipped (outputs exist)" in s.line()
    s = image_set.segment_image_set(c, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert c.calls == 4 and len(s.skipped) == 3
    assert (out / "masks" / "00.png").stat().st_mtime_ns == before[out / "masks" / "00.png"]
    s = image_set.segment_image_set(
        c, tmp_path / "imgs", out, save="mask,coco", overwrite=True, progress=False
    )
    assert c.calls == 7 and len(s.segmented) == 3
    # Asking for a new kind of output recomputes.
    s = image_set.segment_image_set(c, tmp_path / "imgs", out, save="mask,overlay", progress=False)
    assert len(s.segmented) == 3
    assert len(json.loads((out / "coco.json").read_text())["images"]) == 3


def test_pipeline_skips_corrupt_targets(tmp_path: Path) -> None:
    gts = _write_scenes(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "05.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "imgs" / "03.png").write_bytes(b"")
    logged: list[str] = []
    s = image_set.segment_image_set(
        _RedConcept(), tmp_path / "imgs", tmp_path / "out", progress=False, log=logged.append
    )
    assert len(s.segmented) == 2 and [f.path.name for f in s.failed] == ["03.png", "05.jpg"]
    assert s.line() == "2 segmented, 2 failed"
    assert len(logged) == 2 and "05.jpg" in logged[1] and all("\n" not in m for m in logged)
    np.testing.assert_array_equal(_png(tmp_path / "out" / "masks" / "01.png") > 0, gts[1])
    assert not (tmp_path / "out" / "masks" / "05.png").exists()


def test_pipeline_failure_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    _write_scenes(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    real_save = Image.Image.save

    def flaky_save(self, fp, *args, **kwargs):
        if "01" in Path(fp).name and "jpg" in Path(fp).name:
            Path(fp).write_bytes(b"\xff\xd8 half a jpeg")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    s = image_set.segment_image_set(_RedConcept(), tmp_path / "imgs", out, progress=False)
    assert [f.path.name for f in s.failed] == ["01.png"] and "No space left" in s.failed[0].message
    assert not (out / "overlays" / "01.jpg").exists()
    _no_part_files(out)
    monkeypatch.setattr(Image.Image, "save", real_save)
    c = _RedConcept()
    s = image_set.segment_image_set(c, tmp_path / "imgs", out, progress=False)
    assert c.calls == 1 and [p.name for p in s.segmented] == ["01.png"]


def test_pipeline_interrupt_keeps_finished_images(tmp_path: Path) -> None:
    _write_scenes(tmp_path / "imgs", 3)
    out = tmp_path / "out"

    class Interrupted(_RedConcept):
        def segment(self, image, *, max_instances=1):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().segment(image, max_instances=max_instances)

    with pytest.raises(KeyboardInterrupt):
        image_set.segment_image_set(Interrupted(), tmp_path / "imgs", out, save="mask,coco", progress=False)
    _no_part_files(out)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00.png", "01.png"]
    assert len(json.loads((out / "coco.json").read_text())["images"]) == 2
    c = _RedConcept()
    image_set.segment_image_set(c, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert c.calls == 1


class _LearnedConcept(_RedConcept):
    """A stand-in with what identifies a learned concept: tensors, method, weights and statistics.

    ``invert`` stands for another reference: same kind of concept, different masks.
    """

    def __init__(self, invert: bool = False, fit_seconds: float = 1.0, stop_after: int | None = None):
        import torch

        super().__init__()
        self.invert, self.stop_after = invert, stop_after
        self.target_feat = torch.full((1, 4), -1.0 if invert else 1.0)
        self.target_embedding = torch.zeros(1, 1, 4)
        self.mask_weights = None
        self.fit_seconds = fit_seconds

    def metadata(self) -> dict:
        options = {"steps": 10, "fit_seconds": self.fit_seconds, "final_loss": self.fit_seconds / 7}
        return {"method": "persam", "checkpoint_id": "abc", "name": "x", "options": options}

    def segment(self, image: np.ndarray, *, max_instances: int = 1) -> SegmentationResult:
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        r = super().segment(image, max_instances=max_instances)
        if self.invert:
            r.mask = ~r.mask
        return r


def test_pipeline_recomputes_outputs_of_another_concept(tmp_path: Path) -> None:
    gts = _write_scenes(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    run = image_set.segment_image_set
    a = _LearnedConcept()
    assert len(run(a, tmp_path / "imgs", out, save="mask,coco", progress=False).segmented) == 3
    # The same concept learned again (other fitting time and loss): outputs are kept.
    again = _LearnedConcept(fit_seconds=2.5)
    s = run(again, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert again.calls == 0 and len(s.skipped) == 3
    # Another reference: every image is recomputed, never the stale masks kept.
    b = _LearnedConcept(invert=True)
    s = run(b, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert b.calls == 3 and len(s.stale) == 3
    assert s.line() == "3 segmented (3 replacing results of another concept or settings), 0 failed"
    for i, gt in enumerate(gts):
        np.testing.assert_array_equal(_png(out / "masks" / f"{i:02d}.png") > 0, ~gt)
    # Interrupted while switching back to `a`: the images it did not reach still hold `b`'s masks,
    # so resuming with `a` recomputes them instead of skipping them.
    with pytest.raises(KeyboardInterrupt):
        run(_LearnedConcept(stop_after=1), tmp_path / "imgs", out, save="mask,coco", progress=False)
    a = _LearnedConcept()
    s = run(a, tmp_path / "imgs", out, save="mask,coco", progress=False)
    assert a.calls == 2 and len(s.skipped) == 1
    for i, gt in enumerate(gts):
        np.testing.assert_array_equal(_png(out / "masks" / f"{i:02d}.png") > 0, gt)
    # Other settings that change the masks also count: a new max_instances recomputes.
    s = run(a, tmp_path / "imgs", out, save="mask,coco", max_instances=2, progress=False)
    assert len(s.segmented) == 3
    _no_part_files(out)


def test_pipeline_segments_a_file_named_twice_once(tmp_path: Path) -> None:
    _write_scenes(tmp_path / "imgs", 2)
    c = _RedConcept()
    targets = [tmp_path / "imgs", tmp_path / "imgs" / "01.png", str(tmp_path / "imgs" / "0*.png")]
    s = image_set.segment_image_set(c, targets, tmp_path / "out", progress=False)
    assert c.calls == 2 and s.line() == "2 segmented, 0 failed"
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["00.png", "01.png"]


def test_pipeline_names_from_several_folders(tmp_path: Path) -> None:
    _write_scenes(tmp_path / "a", 1)
    _write_scenes(tmp_path / "b", 1)
    out = tmp_path / "out"
    image_set.segment_image_set(
        _RedConcept(), [tmp_path / "a", str(tmp_path / "b" / "*.png")], out, save="mask,coco", progress=False
    )
    assert sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")) == [
        "a/00.png",
        "b/00.png",
    ]
    names = [im["file_name"] for im in json.loads((out / "coco.json").read_text())["images"]]
    assert names == ["a/00.png", "b/00.png"]


def test_output_names() -> None:
    assert image_set.output_names(["x/1.jpg", "x/2.png"]) == ["1", "2"]
    assert image_set.output_names(["x/a.jpg", "x/a.png"]) == ["a_jpg", "a_png"]
    assert image_set.output_names(["d/a/1.jpg", "d/b/1.jpg"]) == ["a/1", "b/1"]


def test_pipeline_input_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        image_set.segment_image_set(_RedConcept(), tmp_path / "empty", tmp_path / "out", progress=False)
    _write_scenes(tmp_path / "imgs", 1)
    with pytest.raises(InputError, match="unknown output kind 'masks'"):
        image_set.segment_image_set(
            _RedConcept(), tmp_path / "imgs", tmp_path / "o", save="masks", progress=False
        )
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="output folder cannot be created, .*file is a file"):
        image_set.segment_image_set(_RedConcept(), tmp_path / "imgs", tmp_path / "file" / "o", progress=False)


# ------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Config JSON and two random checkpoints (different seeds) of a small random SAM."""
    import torch

    from persam.registry import build_module

    d = tmp_path_factory.mktemp("tiny_model")
    config = fast_sam_config()
    (d / "tiny.json").write_text(json.dumps(config))
    files = {"config": d / "tiny.json"}
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(build_module(config).state_dict(), d / f"tiny_{seed}.pt")
        files[f"ckpt{seed}"] = d / f"tiny_{seed}.pt"
    return files


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """``ref/dog/00.png`` + ``ref/dog/00_mask.png`` and ``targets/0{1,2,3}.png``."""
    d = tmp_path_factory.mktemp("scenes")
    img, m = _scene(0)
    (d / "ref" / "dog").mkdir(parents=True)
    Image.fromarray(img).save(d / "ref" / "dog" / "00.png")
    Image.fromarray(m.astype(np.uint8) * 255).save(d / "ref" / "dog" / "00_mask.png")
    _write_scenes(d / "targets", 3, start=1)
    return d


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from persam.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _model_args(tiny: dict[str, Path], ckpt: str = "ckpt0") -> list[str]:
    return ["--model", str(tiny["config"]), "--checkpoint", str(tiny[ckpt]), "--device", "cpu", "-q"]


def _ref_args(scenes: Path) -> list[str]:
    return [
        "--ref",
        str(scenes / "ref" / "dog" / "00.png"),
        "--ref-mask",
        str(scenes / "ref" / "dog" / "00_mask.png"),
    ]


def _api_masks(tiny, scenes: Path, method: str, targets: list[Path], **seg) -> list[np.ndarray]:
    import persam

    model = persam.build_model(tiny["config"], checkpoint=tiny["ckpt0"])
    concept = persam.learn(
        model, scenes / "ref" / "dog" / "00.png", scenes / "ref" / "dog" / "00_mask.png", method=method
    )
    return [concept.segment(t, **seg).mask for t in targets]


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_cli_masks_equal_python_api(tiny, scenes, tmp_path, capsys, method) -> None:
    out = tmp_path / "out"
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", out, "--method", method]
    rc, stdout, err = _cli([*argv, "--save", "mask,overlay,coco,perseg", *_model_args(tiny)], capsys)
    assert rc == 0, err
    assert "3 segmented, 0 failed" in stdout
    targets = sorted((scenes / "targets").iterdir())
    expected = _api_masks(tiny, scenes, method.replace("-", "_"), targets)
    coco = json.loads((out / "coco.json").read_text())
    for t, exp in zip(targets, expected, strict=True):
        a = _png(out / "masks" / f"{t.stem}.png")
        assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 255}
        np.testing.assert_array_equal(a == 255, exp)
        # PerSeg output in a folder named after the reference's folder.
        np.testing.assert_array_equal(_png(out / "dog" / f"{t.stem}.png")[..., 0] == 128, exp)
        assert Image.open(out / "overlays" / f"{t.stem}.jpg").size == (exp.shape[1], exp.shape[0])
        anns = [x for x in coco["annotations"] if x["file_name"] == t.name]
        if exp.any():
            assert len(anns) == 1
            np.testing.assert_array_equal(decode_rle(anns[0]["segmentation"]), exp)
    assert coco["categories"] == [{"id": 1, "name": "dog"}]
    _no_part_files(out)


def test_cli_resume_and_overwrite(tiny, scenes, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", out, *_model_args(tiny)]
    assert _cli(argv, capsys)[0] == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    rc, stdout, _ = _cli(argv, capsys)
    assert rc == 0 and "0 segmented, 3 skipped (outputs exist), 0 failed" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*")} == first
    rc, stdout, _ = _cli([*argv, "--overwrite"], capsys)
    assert rc == 0 and "3 segmented, 0 failed" in stdout
    assert all(p.stat().st_mtime_ns != t for p, t in first.items())


def test_cli_loads_model_once_and_encodes_each_image_once(
    tiny, scenes, tmp_path, capsys, monkeypatch
) -> None:
    from persam import registry
    from persam.backbones.base import Backbone

    builds, encodes = [], []
    real_build = registry.build_model

    def counting_build(*a, **k):
        model = real_build(*a, **k)
        real_set = model.set_image
        model.set_image = lambda image: (encodes.append(image.shape), real_set(image))[1]
        builds.append(model)
        return model

    monkeypatch.setattr(registry, "build_model", counting_build)
    rc, _, err = _cli(
        ["segment", *_ref_args(scenes), scenes / "targets", "-o", tmp_path, *_model_args(tiny)], capsys
    )
    assert rc == 0, err
    assert len(builds) == 1 and isinstance(builds[0], Backbone)
    assert len(encodes) == 1 + 3  # the reference, then each target


def test_cli_learn_then_segment_with_concept(tiny, scenes, tmp_path, capsys) -> None:
    concept = tmp_path / "my_dog.persam"
    rc, stdout, err = _cli(["learn", *_ref_args(scenes), "-o", concept, *_model_args(tiny)], capsys)
    assert rc == 0, err
    assert concept.is_file() and "my_dog.persam" in stdout
    rc, _, err = _cli(
        ["segment", "--concept", concept, scenes / "targets", "-o", tmp_path / "out", "--save", "mask,perseg"]
        + _model_args(tiny),
        capsys,
    )
    assert rc == 0, err
    targets = sorted((scenes / "targets").iterdir())
    for t, exp in zip(targets, _api_masks(tiny, scenes, "persam", targets), strict=True):
        np.testing.assert_array_equal(_png(tmp_path / "out" / "masks" / f"{t.stem}.png") > 0, exp)
        assert (tmp_path / "out" / "my_dog" / f"{t.stem}.png").is_file()
    # The same concept with other weights: refused, naming the file.
    rc, _, err = _cli(
        [
            "segment",
            "--concept",
            concept,
            scenes / "targets",
            "-o",
            tmp_path / "o2",
            *_model_args(tiny, "ckpt1"),
        ],
        capsys,
    )
    assert rc == 2
    assert err.count("\n") == 1 and "my_dog.persam" in err and "learned with" in err
    assert not (tmp_path / "o2" / "masks").exists()


def test_cli_learn_with_random_weights_is_reproducible(tiny, scenes, tmp_path, capsys) -> None:
    # `--checkpoint none` is seeded, so a concept learned in one run applies in the next.
    concept = tmp_path / "c.persam"
    model_args = ["--model", tiny["config"], "--checkpoint", "none", "-q"]
    rc, _, err = _cli(["learn", *_ref_args(scenes), "-o", concept, *model_args], capsys)
    assert rc == 0 and "random weights" in err and "testing only" in err
    rc, _, err = _cli(
        ["segment", "--concept", concept, scenes / "targets", "-o", tmp_path / "o", *model_args], capsys
    )
    assert rc == 0, err


def test_cli_reference_points_and_box(tiny, scenes, tmp_path, capsys) -> None:
    import persam
    from persam.personalize import mask_from_prompts

    ref = scenes / "ref" / "dog" / "00.png"
    _, m = _scene(0)
    ys, xs = np.nonzero(m)
    cx, cy = int(xs.mean()), int(ys.mean())
    box = [int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max()) + 2, int(ys.max()) + 2]
    out = tmp_path / "out"
    # Targets given after --ref-points (which takes several values) still count as targets.
    argv = ["segment", "--ref", ref, "--ref-points", f"{cx},{cy}", "2,2:0", scenes / "targets" / "01.png"]
    argv += ["--ref-box", ",".join(map(str, box)), "-o", out, *_model_args(tiny)]
    rc, _, err = _cli(argv, capsys)
    assert rc == 0, err
    model = persam.build_model(tiny["config"], checkpoint=tiny["ckpt0"])
    ref_mask = mask_from_prompts(model, ref, [[cx, cy], [2, 2]], [1, 0], box)
    if not ref_mask.any():
        pytest.skip("the random model gave an empty mask for these prompts")
    expected = persam.learn(model, ref, ref_mask).segment(scenes / "targets" / "01.png").mask
    np.testing.assert_array_equal(_png(out / "masks" / "01.png") > 0, expected)


def test_cli_corrupt_target_is_skipped_and_reported(tiny, scenes, tmp_path, capsys) -> None:
    tdir = tmp_path / "t"
    _write_scenes(tdir, 2, start=1)
    (tdir / "03.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tdir / "notes.txt").write_text("not an image")  # not listed from the folder, but named explicitly
    argv = ["segment", *_ref_args(scenes), tdir, tdir / "notes.txt", "-o", tmp_path / "o"]
    rc, stdout, err = _cli([*argv, *_model_args(tiny)], capsys)
    assert rc == 1
    assert "2 segmented, 2 failed" in stdout
    assert "03.jpg: cannot read image" in err and "notes.txt: cannot read image" in err
    assert sorted(p.name for p in (tmp_path / "o" / "masks").iterdir()) == ["01.png", "02.png"]


def test_cli_converts_unusual_images(tiny, scenes, tmp_path, capsys) -> None:
    """Grayscale, RGBA, 16-bit and EXIF-rotated targets are segmented like the API sees them."""
    from persam.io import load_image

    img, _ = _scene(5, 40, 70)
    tdir = tmp_path / "t"
    tdir.mkdir()
    Image.fromarray(img[..., 1]).save(tdir / "gray.png")
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])).save(tdir / "rgba.png")
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(tdir / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(img).save(tdir / "rotated.jpg", exif=exif.tobytes(), quality=95)
    rc, _, err = _cli(["segment", *_ref_args(scenes), tdir, "-o", tmp_path / "o", *_model_args(tiny)], capsys)
    assert rc == 0, err
    targets = sorted(tdir.iterdir())
    expected = _api_masks(tiny, scenes, "persam", [load_image(t) for t in targets])
    for t, exp in zip(targets, expected, strict=True):
        got = _png(tmp_path / "o" / "masks" / f"{t.stem}.png") > 0
        assert got.shape == ((70, 40) if t.stem == "rotated" else (40, 70))
        np.testing.assert_array_equal(got, exp)


def _bad_input_cases(scenes: Path, tmp: Path) -> list[tuple[list, str]]:
    ref, mask = scenes / "ref" / "dog" / "00.png", scenes / "ref" / "dog" / "00_mask.png"
    targets = scenes / "targets"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(tmp / "empty_mask.png")
    Image.fromarray(np.full((61, 80), 255, np.uint8)).save(tmp / "small_mask.png")
    (tmp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp / "concept.persam").write_bytes(b"PK not a concept")
    (tmp / "no_images").mkdir()
    (tmp / "a_file").write_text("x")
    (tmp / "notes.txt").write_text("x")
    std = ["-o", tmp / "out"]
    return [
        (
            ["--ref", ref, "--ref-mask", tmp / "empty_mask.png", targets, *std],
            "empty_mask.png: reference mask is empty",
        ),
        (
            ["--ref", ref, "--ref-mask", tmp / "small_mask.png", targets, *std],
            "small_mask.png: mask is 80×61",
        ),
        (["--ref", tmp / "corrupt.png", "--ref-mask", mask, targets, *std], "corrupt.png: cannot read image"),
        (["--ref", tmp / "missing.jpg", "--ref-mask", mask, targets, *std], "missing.jpg: file not found"),
        (["--ref", ref, "--ref-mask", mask, tmp / "no_images", *std], "no_images: no images found"),
        (["--ref", ref, "--ref-mask", mask, tmp / "nothing*.jpg", *std], "nothing*.jpg: no such file"),
        (
            ["--ref", ref, "--ref-mask", mask, targets, "-o", tmp / "a_file" / "out"],
            "out: output folder cannot be created",
        ),
        (
            ["--ref", ref, "--ref-mask", mask, targets, "-o", tmp / "a_file"],
            "a_file: output folder is an existing",
        ),
        (["--ref", ref, "--ref-mask", mask, "--ref", ref, targets, *std], "--ref-mask: got 1 mask(s) for 2"),
        (["--ref", ref, targets, *std], "--ref-mask (or --ref-points / --ref-box) is required"),
        (["--ref", ref, "--ref-points", "500,5", targets, *std], "point 500,5 lies outside"),
        (["--ref", ref, "--ref-points", "five", targets, *std], "'five' is not a point"),
        (["--concept", tmp / "concept.persam", targets, *std], "concept.persam: not a persam concept file"),
        (["--concept", tmp / "nope.persam", targets, *std], "nope.persam: concept file not found"),
        (["--concept", tmp / "concept.persam", "--ref", ref, targets, *std], "--concept cannot be combined"),
        ([targets, *std], "give a reference"),
        (
            ["--ref", ref, "--ref-mask", mask, targets, "--save", "mask,json", *std],
            "unknown output kind 'json'",
        ),
        (
            ["--ref", ref, "--ref-mask", mask, targets, "--model", tmp / "none.json", *std],
            "none.json: model config",
        ),
        (
            ["--ref", ref, "--ref-mask", mask, targets, "--model", "sam_vit_z", *std],
            "unknown model 'sam_vit_z'",
        ),
    ]


def test_cli_bad_input_one_line_errors(tiny, scenes, tmp_path, capsys) -> None:
    model = ["--model", tiny["config"], "--checkpoint", tiny["ckpt0"], "-q"]
    for argv, message in _bad_input_cases(scenes, tmp_path):
        has_model = "--model" in argv
        rc, stdout, err = _cli(["segment", *argv, *([] if has_model else model)], capsys)
        assert rc == 2, (argv, err)
        lines = [ln for ln in err.splitlines() if "warning:" not in ln]
        assert len(lines) == 1 and lines[0].startswith("persam segment: error: "), err
        assert message in lines[0], (message, lines[0])
        assert not (tmp_path / "out").exists()  # a refused run creates no (empty) output folder


def test_cli_bad_checkpoint_and_device(tiny, scenes, tmp_path, capsys) -> None:
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", tmp_path / "o"]
    argv += ["--model", tiny["config"]]
    rc, _, err = _cli([*argv, "--checkpoint", tmp_path / "missing.pt"], capsys)
    assert rc == 2 and "missing.pt" in err and err.count("\n") == 1
    (tmp_path / "junk.pt").write_bytes(b"junk")
    rc, _, err = _cli([*argv, "--checkpoint", tmp_path / "junk.pt"], capsys)
    assert rc == 2 and "junk.pt" in err and err.count("\n") == 1
    import torch

    if not torch.cuda.is_available():
        rc, _, err = _cli([*argv, "--checkpoint", tiny["ckpt0"], "--device", "cuda"], capsys)
        assert rc == 2 and "--device cuda" in err


def test_cli_config_model_with_default_checkpoint_says_what_to_pass(tiny, scenes, tmp_path, capsys) -> None:
    # --checkpoint defaults to auto, which only a registry model has.
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", tmp_path / "o"]
    argv += ["--model", tiny["config"]]
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "--checkpoint auto" in err and "--checkpoint PATH" in err and "none" in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_clashing_concept_name_before_loading_the_model(
    tiny, scenes, tmp_path, capsys, monkeypatch
) -> None:
    from persam import registry

    monkeypatch.setattr(registry, "build_model", lambda *a, **k: pytest.fail("model loaded"))
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", tmp_path / "o", "--save", "perseg"]
    rc, _, err = _cli([*argv, "--concept-name", "masks", *_model_args(tiny)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--concept-name" in err and "'masks'" in err
    assert not (tmp_path / "o").exists()


def test_cli_rerun_with_another_reference_replaces_the_masks(tiny, scenes, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    rc, stdout, err = _cli(
        ["segment", *_ref_args(scenes), scenes / "targets", "-o", out, *_model_args(tiny)], capsys
    )
    assert rc == 0 and "3 segmented" in stdout, err
    # The user fixes the reference mask (here: a box around the object) and runs the same command.
    _, m = _scene(0)
    ys, xs = np.nonzero(m)
    box = np.zeros_like(m)
    box[ys.min() - 3 : ys.max() + 4, xs.min() - 3 : xs.max() + 4] = True
    new_mask = tmp_path / "fixed_mask.png"
    Image.fromarray(box.astype(np.uint8) * 255).save(new_mask)
    ref = ["--ref", scenes / "ref" / "dog" / "00.png", "--ref-mask", new_mask]
    rc, stdout, err = _cli(["segment", *ref, scenes / "targets", "-o", out, *_model_args(tiny)], capsys)
    assert rc == 0 and "3 segmented (3 replacing results" in stdout, err
    import persam

    model = persam.build_model(tiny["config"], checkpoint=tiny["ckpt0"])
    concept = persam.learn(model, scenes / "ref" / "dog" / "00.png", new_mask)
    for t in sorted((scenes / "targets").iterdir()):
        np.testing.assert_array_equal(_png(out / "masks" / f"{t.stem}.png") > 0, concept.segment(t).mask)
    rc, stdout, _ = _cli(["segment", *ref, scenes / "targets", "-o", out, *_model_args(tiny)], capsys)
    assert rc == 0 and "0 segmented, 3 skipped" in stdout


def test_cli_max_instances_writes_every_instance_to_coco(tiny, scenes, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", out, "--max-instances", "3"]
    rc, _, err = _cli([*argv, "--save", "mask,coco", *_model_args(tiny)], capsys)
    assert rc == 0, err
    targets = sorted((scenes / "targets").iterdir())
    api = _api_masks(tiny, scenes, "persam", targets, max_instances=3)
    coco = json.loads((out / "coco.json").read_text())
    for t, exp in zip(targets, api, strict=True):
        np.testing.assert_array_equal(_png(out / "masks" / f"{t.stem}.png") > 0, exp)
        anns = [a for a in coco["annotations"] if a["file_name"] == t.name]
        assert 0 < len(anns) <= 3 or not exp.any()
        union = np.zeros_like(exp)
        for a in anns:
            union |= decode_rle(a["segmentation"])
        np.testing.assert_array_equal(union, exp)


def test_cli_interrupt_names_the_command_and_exits_130(tiny, scenes, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(image_set, "segment_image_set", interrupted)
    argv = ["segment", *_ref_args(scenes), scenes / "targets", "-o", tmp_path / "o", *_model_args(tiny)]
    rc, _, err = _cli(argv, capsys)
    assert rc == 130 and err.strip() == "persam segment: interrupted"


def test_persam_console_script_smoke(tiny, scenes, tmp_path) -> None:
    exe = Path(sys.executable).with_name("persam")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "persam"]
    argv = [*_ref_args(scenes), str(scenes / "targets" / "01.png"), "-o", str(tmp_path / "o")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "segment", *argv, *map(str, _model_args(tiny))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 segmented, 0 failed" in proc.stdout
    assert (tmp_path / "o" / "masks" / "01.png").is_file()
    proc = subprocess.run(
        [*cmd, "segment", "-o", str(tmp_path / "o")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "error:" in proc.stderr


# --------------------------------------------------------------------------- examples and eval
def _load_script(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROOT = Path(__file__).resolve().parents[2]


def test_example_segment_my_object(tiny, scenes, tmp_path, capsys) -> None:
    example = _load_script(ROOT / "examples" / "segment_my_object.py")
    ref, mask = scenes / "ref" / "dog" / "00.png", scenes / "ref" / "dog" / "00_mask.png"
    argv = ["--ref", ref, "--ref-mask", mask, scenes / "targets", "-o", tmp_path / "m"]
    example.main([str(a) for a in [*argv, "--model", tiny["config"], "--checkpoint", tiny["ckpt0"]]])
    assert "01.png:" in capsys.readouterr().out
    targets = sorted((scenes / "targets").iterdir())
    for t, exp in zip(targets, _api_masks(tiny, scenes, "persam", targets), strict=True):
        np.testing.assert_array_equal(_png(tmp_path / "m" / f"{t.stem}.png") > 0, exp)


def test_example_segment_my_object_reports_bad_input_in_one_line(tiny, scenes, tmp_path, capsys) -> None:
    example = _load_script(ROOT / "examples" / "segment_my_object.py")
    model = ["--model", tiny["config"], "--checkpoint", tiny["ckpt0"]]
    argv = ["--ref", tmp_path / "missing.jpg", "--ref-mask", scenes / "ref" / "dog" / "00_mask.png"]
    rc = example.main([str(a) for a in [*argv, scenes / "targets", "--output", tmp_path / "m", *model]])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and "missing.jpg: file not found" in err
    # Same-named photos from two folders get separate masks; an unreadable one is reported, not fatal.
    for sub in ("a", "b"):
        _write_scenes(tmp_path / sub, 1, start=1)
    (tmp_path / "b" / "02.jpg").write_bytes(b"not a jpeg")
    ref = ["--ref", scenes / "ref" / "dog" / "00.png", "--ref-mask", scenes / "ref" / "dog" / "00_mask.png"]
    rc = example.main([str(a) for a in [*ref, tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m", *model]])
    assert rc == 0 and "02.jpg: failed" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.png")) == [
        "a/01.png",
        "b/01.png",
    ]


def test_learn_errors(tiny, scenes, tmp_path, capsys) -> None:
    (tmp_path / "a_dir").mkdir()
    rc, _, err = _cli(["learn", *_ref_args(scenes), "-o", tmp_path / "a_dir", *_model_args(tiny)], capsys)
    assert rc == 2 and "a_dir: is a folder" in err
    argv = ["learn", "--ref", scenes / "ref" / "dog" / "00.png", "--ref-mask", tmp_path / "missing.png"]
    rc, _, err = _cli([*argv, "-o", tmp_path / "new" / "c.persam", *_model_args(tiny)], capsys)
    assert rc == 2 and "missing.png: file not found" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()  # not even the folder the file would have gone to
    (tmp_path / "a_file").write_text("x")
    rc, _, err = _cli(
        ["learn", *_ref_args(scenes), "-o", tmp_path / "a_file" / "c.persam", *_model_args(tiny)], capsys
    )
    assert rc == 2 and err.count("\n") == 1 and "a_file" in err


def test_example_track_video(tiny, tmp_path, capsys) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        a = np.full((48, 64, 3), 40, np.uint8)
        a[10 + i : 30 + i, 20:40] = (200, 40, 40)
        Image.fromarray(a).save(frames / f"{i:05d}.png")
    first = np.zeros((48, 64), np.uint8)
    first[10:30, 20:40] = 1
    Image.fromarray(first).save(tmp_path / "first.png")
    example = _load_script(ROOT / "examples" / "track_video.py")
    argv = [frames, tmp_path / "first.png", "-o", tmp_path / "out", "--model", tiny["config"]]
    example.main([str(a) for a in [*argv, "--checkpoint", tiny["ckpt0"]]])
    assert "frame 2:" in capsys.readouterr().out
    written = sorted(p for p in (tmp_path / "out").iterdir() if p.suffix == ".png")
    assert [p.name for p in written] == ["00000.png", "00001.png", "00002.png"]
    # The per-frame scores are committed last: their presence marks the folder as complete.
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".png") == ["scores.json"]
    im = Image.open(written[0])
    assert im.mode == "P" and im.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(im) == 1, first == 1)  # the given first-frame mask


def _make_perseg(root: Path, concepts: dict[str, int]) -> None:
    for c, n in concepts.items():
        (root / "Images" / c).mkdir(parents=True)
        (root / "Annotations" / c).mkdir(parents=True)
        for i in range(n):
            img, m = _scene(100 * len(c) + i)
            Image.fromarray(img).save(root / "Images" / c / f"{i:02d}.jpg", quality=95)
            pal = Image.frombytes("P", (m.shape[1], m.shape[0]), m.astype(np.uint8).tobytes())
            pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
            pal.save(root / "Annotations" / c / f"{i:02d}.png")


def test_eval_perseg_runner_on_synthetic_dataset(tiny, tmp_path, capsys) -> None:
    pytest.importorskip("persam.evaluation.perseg")
    root = tmp_path / "perseg"
    _make_perseg(root, {"ball": 3, "disc": 2})
    runner = _load_script(ROOT / "eval" / "perseg.py")
    argv = ["--data", root, "--pred", tmp_path / "pred", "--json", tmp_path / "r.json", "-q"]
    rc = runner.main([str(a) for a in [*argv, "--model", tiny["config"], "--checkpoint", tiny["ckpt0"]]])
    assert rc == 0
    assert sorted(
        p.relative_to(tmp_path / "pred").as_posix() for p in (tmp_path / "pred").rglob("*.png")
    ) == [
        "ball/00.png",
        "ball/01.png",
        "ball/02.png",
        "disc/00.png",
        "disc/01.png",
    ]
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["concepts"]) == {"ball", "disc"}
    assert 0.0 <= report["scores"]["mIoU"] <= 1.0
    assert "mean" in capsys.readouterr().out


def _perseg_end_to_end(tmp_path: Path, capsys, concepts: list[str]) -> None:
    from helpers import fixture_dir

    src = fixture_dir("perseg") / "data"
    sam = fixture_dir("sam")
    root = tmp_path / "perseg"
    for sub in ("Images", "Annotations"):
        (root / sub).mkdir(parents=True)
        for c in concepts:
            (root / sub / c).symlink_to(src / sub / c, target_is_directory=True)
    pred = tmp_path / "pred"
    model = ["--model", sam / "tiny_config.json", "--checkpoint", sam / "tiny_state_dict.pt", "-q"]
    for c in concepts:
        ref = ["--ref", root / "Images" / c / "00.jpg", "--ref-mask", root / "Annotations" / c / "00.png"]
        rc, stdout, err = _cli(
            ["segment", *ref, root / "Images" / c, "-o", pred, "--save", "perseg", *model], capsys
        )
        assert rc == 0, err
        gts = sorted((root / "Annotations" / c).iterdir())
        assert sorted(p.name for p in (pred / c).iterdir()) == [g.name for g in gts]
        for g in gts:
            assert _png(pred / c / g.name).shape == (*_png(g).shape[:2], 3)
    from persam.evaluation.perseg import evaluate_perseg

    result = evaluate_perseg(root, pred, "00")
    assert [c.name for c in result.concepts] == sorted(concepts)
    assert 0.0 <= result.mIoU <= 1.0 and all(c.n_evaluated_images >= 2 for c in result.concepts)
    from persam.cli import main

    try:
        import persam.cli.eval  # noqa: F401
    except ImportError:
        return
    assert main(["eval", "perseg", "--data", str(root), "--pred", str(pred)]) == 0
    assert "mean" in capsys.readouterr().out


def test_perseg_sample_end_to_end_with_fixture_model(tmp_path, capsys) -> None:
    """Two PerSeg sample concepts, segmented by the CLI with the fixture model, then scored."""
    _perseg_end_to_end(tmp_path, capsys, ["cat", "synth_ring"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PERSAM_SLOW_TESTS"), reason="slow (~30 s); set PERSAM_SLOW_TESTS=1")
def test_perseg_all_samples_end_to_end_with_fixture_model(tmp_path, capsys) -> None:
    _perseg_end_to_end(tmp_path, capsys, ["cat", "colorful_sneaker", "duck_toy", "synth_ring", "synth_star"])
