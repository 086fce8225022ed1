"""Reading user images and masks, and atomic writes (persam.io)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam import io


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ load_image
def test_load_image_rgb_png_roundtrip(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "x.png")
    out = io.load_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, a)


def test_load_image_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    g = np.arange(200, dtype=np.uint8).reshape(10, 20)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = io.load_image(tmp_path / "g.png")
    assert out.shape == (10, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_load_image_rgba_is_composited_over_white(tmp_path: Path) -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200  # red
    a[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    out = io.load_image(tmp_path / "t.png")
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[:2], np.broadcast_to([200, 0, 0], (2, 4, 3)))
    np.testing.assert_array_equal(out[2:], np.full((2, 4, 3), 255))


def test_load_image_16bit_is_scaled_to_8bit(tmp_path: Path) -> None:
    a = np.array([[0, 65535], [32768, 1000]], np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = io.load_image(tmp_path / "d.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [128, 4]])


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half red; orientation 6 = "rotate 90 degrees clockwise to
    # display", so the displayed image is 20 wide x 40 high with the red half on top.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert Image.open(tmp_path / "rot.jpg").getexif()[0x0112] == 6
    out = io.load_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:18, :, 0].min() > 200 and out[:18, :, 1].max() < 60
    assert out[22:, :, 0].max() < 60


def test_load_image_palette(tmp_path: Path) -> None:
    lab = np.array([[0, 1], [1, 2]], np.uint8)
    im = Image.frombytes("P", (2, 2), lab.tobytes())
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = io.load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[1, 1], [0, 128, 0])
    np.testing.assert_array_equal(out[0, 1], [128, 0, 0])


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_load_image_corrupt_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "broken.png"
    p.write_bytes(content)
    with pytest.raises(io.InputError, match="broken.png") as e:
        io.load_image(p)
    assert "\n" not in str(e.value)


def test_load_image_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.InputError, match="cut.jpg"):
        io.load_image(tmp_path / "cut.jpg")


def test_load_image_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(io.InputError, match="nope.jpg: file not found"):
        io.load_image(tmp_path / "nope.jpg")
    with pytest.raises(io.InputError, match="is a directory"):
        io.load_image(tmp_path)


def test_as_image_arrays() -> None:
    assert io.as_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    f = io.as_image(np.ones((5, 6, 3), np.float32))
    assert f.dtype == np.uint8 and f.max() == 255
    with pytest.raises(io.InputError, match="frame"):
        io.as_image(np.zeros((5, 6, 2)), name="frame")


# ------------------------------------------------------------------------------------------ masks
def test_masks_from_various_files(tmp_path: Path) -> None:
    m = np.zeros((6, 8), bool)
    m[1:4, 2:6] = True
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "a.png")
    Image.fromarray(m.astype(np.uint8)).save(tmp_path / "b.png")  # 0/1
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[m] = (128, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    pal = Image.frombytes("P", (8, 6), m.astype(np.uint8).tobytes())
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 750)
    pal.save(tmp_path / "d.png")
    for name in "abcd":
        out = io.as_mask(tmp_path / f"{name}.png")
        assert out.dtype == bool
        np.testing.assert_array_equal(out, m, err_msg=name)


def test_masks_drawn_as_transparency_are_read_from_alpha(tmp_path: Path) -> None:
    m = np.zeros((6, 8), bool)
    m[1:4, 2:6] = True
    alpha = np.where(m, 255, 0).astype(np.uint8)
    alpha[0, 0] = 100  # a faint, mostly transparent edge pixel is background
    white = np.dstack([np.full((6, 8, 3), 255, np.uint8), alpha])  # white on transparent
    Image.fromarray(white).save(tmp_path / "white.png")
    cutout = np.dstack([_rgb(6, 8), alpha])  # the object cut out of its photo
    Image.fromarray(cutout).save(tmp_path / "cutout.png")
    Image.fromarray(np.dstack([np.zeros((6, 8), np.uint8), alpha]), "LA").save(tmp_path / "la.png")
    for name in ("white", "cutout", "la"):
        np.testing.assert_array_equal(io.as_mask(tmp_path / f"{name}.png"), m, err_msg=name)
    # A fully opaque RGBA mask is read from its colours, as before.
    opaque = np.dstack([np.where(m[..., None], 255, 0).repeat(3, 2), np.full((6, 8), 255)]).astype(np.uint8)
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(io.as_mask(tmp_path / "opaque.png"), m)


def test_load_reference_checks_size_and_emptiness(tmp_path: Path) -> None:
    Image.fromarray(_rgb(20, 30)).save(tmp_path / "ref.png")
    Image.fromarray(np.full((20, 31), 255, np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "empty.png")
    good = np.zeros((20, 30), np.uint8)
    good[5:10, 5:10] = 255
    Image.fromarray(good).save(tmp_path / "good.png")
    with pytest.raises(io.InputError, match=r"wide\.png: mask is 31×20 .* is 30×20"):
        io.load_reference(tmp_path / "ref.png", tmp_path / "wide.png")
    with pytest.raises(io.InputError, match=r"empty\.png: reference mask is empty"):
        io.load_reference(tmp_path / "ref.png", tmp_path / "empty.png")
    img, m = io.load_reference(tmp_path / "ref.png", tmp_path / "good.png")
    assert img.shape == (20, 30, 3) and m.sum() == 25


# ------------------------------------------------------------------------------------ list_images
def test_list_images_folders_files_and_globs(tmp_path: Path) -> None:
    for n in ("b.jpg", "a.PNG", "c.txt", "d.webp"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x")
    assert [p.name for p in io.list_images(tmp_path)] == ["a.PNG", "b.jpg", "d.webp"]
    assert [p.name for p in io.list_images(str(tmp_path / "*.jpg"))] == ["b.jpg"]
    assert [p.name for p in io.list_images([tmp_path / "c.txt"])] == ["c.txt"]
    with pytest.raises(io.InputError, match="missing"):
        io.list_images([tmp_path / "missing*.jpg"])


def test_list_images_lists_a_file_named_twice_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("a.jpg", "b.jpg"):
        (tmp_path / n).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    got = io.list_images([tmp_path, "b.jpg", "./b.jpg", str(tmp_path / "*.jpg")])
    assert [p.name for p in got] == ["a.jpg", "b.jpg"]


# ---------------------------------------------------------------------------------------- writing
def test_atomic_path_failure_leaves_old_file_and_no_part(tmp_path: Path) -> None:
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(dst) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_png_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        io.save_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_image_jpeg_and_png(tmp_path: Path) -> None:
    a = _rgb(16, 16)
    io.save_image(tmp_path / "o.png", a)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), a)
    io.save_image(tmp_path / "o.jpg", a)
    assert Image.open(tmp_path / "o.jpg").format == "JPEG"
    with pytest.raises(ValueError, match="gif"):
        io.save_image(tmp_path / "o.gif", a)


def test_write_json_atomic(tmp_path: Path) -> None:
    io.write_json_atomic(tmp_path / "d" / "x.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "d" / "x.json").read_text()) == {"a": [1, 2]}


def test_ensure_output_dir(tmp_path: Path) -> None:
    assert io.ensure_output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(io.InputError, match="file: output folder is an existing file"):
        io.ensure_output_dir(tmp_path / "file")
    with pytest.raises(
        io.InputError, match=r"file/sub/deeper: output folder cannot be created, .*file is a file"
    ):
        io.ensure_output_dir(tmp_path / "file" / "sub" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "file"]


def test_check_output_dir_creates_nothing(tmp_path: Path) -> None:
    assert io.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(io.OutputPathError, match="file is a file") as e:
        io.check_output_dir(tmp_path / "file" / "out")
    assert isinstance(e.value, OSError) and "\n" not in str(e.value)
    with pytest.raises(io.InputError, match="output folder is an existing file"):
        io.check_output_dir(tmp_path / "file")


@pytest.mark.skipif(not hasattr(os, "umask"), reason="POSIX permissions")
def test_atomic_writes_get_the_usual_file_permissions(tmp_path: Path) -> None:
    # A temporary file from mkstemp is private (0600); outputs must be readable like any new file.
    old = os.umask(0o022)
    try:
        io.save_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
        io.write_json_atomic(tmp_path / "x.json", {})
        io.save_image(tmp_path / "o.jpg", _rgb(8, 8))
    finally:
        os.umask(old)
    for name in ("m.png", "x.json", "o.jpg"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_atomic_path_under_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(io.OutputPathError, match=r"afile: cannot create folder, .*afile is a file"):
        io.write_json_atomic(tmp_path / "afile" / "x.json", {})
    with pytest.raises(OSError):  # still an OSError for code that writes files
        io.save_png(tmp_path / "afile" / "sub" / "m.png", np.zeros((2, 2), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
