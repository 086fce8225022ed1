"""``persam weights`` sub-commands (against a local HTTP server; never the internet)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from persam import weights as w
from persam.cli import main


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder served, base URL) of a local static file server."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


pytestmark = pytest.mark.usefixtures("persam_home")


def _put_in_cache(name: str, data: bytes) -> Path:
    path = w.cache_location(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("persam weights: error: ")
    return lines[0]


def test_list_shows_cache_state(capsys: pytest.CaptureFixture[str]) -> None:
    cached = _put_in_cache("sam_vit_b", b"x")
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "SIZE", "CACHED", "PATH"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(w.CHECKPOINTS)
    # A 1-byte file is no complete checkpoint: its state says so rather than "yes".
    assert "size mismatch (1 of 375042383 bytes)" in rows["sam_vit_b"] and rows["sam_vit_b"].endswith(
        str(cached)
    )
    assert "no" in rows["sam_vit_h"].split() and "2.4 GiB" in rows["sam_vit_h"]
    assert rows["sam_vit_h"].endswith(str(w.cache_location("sam_vit_h")))
    assert " ? " in rows["efficient_sam_vit_t"]


def test_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "path", "mobile_sam_vit_t"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "not downloaded" in err and "persam weights download mobile_sam_vit_t" in err
    cached = _put_in_cache("mobile_sam_vit_t", b"x")
    assert main(["weights", "path", "mobile_sam_vit_t"]) == 0
    assert capsys.readouterr().out.strip() == str(cached)
    assert main(["weights", "path", "nope"]) == 2
    assert "no official checkpoint named 'nope'" in _one_line_error(capsys.readouterr().err)


def test_download_unverified(
    served: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = served
    (root / "vitt.pt").write_bytes(b"fake efficient sam weights")
    out_dir = tmp_path / "out"
    rc = main(
        ["weights", "download", "efficient_sam_vit_t", "--dir", str(out_dir), "--url", f"{base}/vitt.pt"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.strip() == str(out_dir / "efficient_sam_vitt.pt")
    assert (out_dir / "efficient_sam_vitt.pt").read_bytes() == b"fake efficient sam weights"
    assert "warning: efficient_sam_vitt.pt: no published sha256" in captured.err


def test_download_into_cache(
    served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = served
    data = b"fake mobile sam" * 100
    (root / "mobile_sam.pt").write_bytes(data)
    info = dataclasses.replace(
        w.get_info("mobile_sam_vit_t"), sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    monkeypatch.setitem(w.CHECKPOINTS, "mobile_sam_vit_t", info)
    rc = main(["weights", "download", "mobile_sam_vit_t", "--url", f"{base}/mobile_sam.pt", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""
    assert captured.out.strip() == str(w.cache_location("mobile_sam_vit_t"))
    assert main(["weights", "verify", "mobile_sam_vit_t"]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_download_checksum_failure(
    served: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = served
    (root / "sam_vit_b_01ec64.pth").write_bytes(b"not sam")
    out_dir = tmp_path / "out"
    rc = main(
        ["weights", "download", "sam_vit_b", "--dir", str(out_dir), "--url", f"{base}/sam_vit_b_01ec64.pth"]
    )
    assert rc == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "sam_vit_b_01ec64.pth" in err and "expected 375042383" in err
    assert not out_dir.exists()  # the failed download leaves no empty folder behind


def test_download_into_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("mine")
    for target in (tmp_path / "f", tmp_path / "f" / "sub"):
        assert main(["weights", "download", "sam_vit_b", "--dir", str(target), "-q"]) == 2
        err = _one_line_error(capsys.readouterr().err)
        assert err.startswith(f"persam weights: error: --dir cannot download into {target}") and "is a" in err
    assert (tmp_path / "f").read_text() == "mine"


def test_download_errors(served: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, base = served
    assert main(["weights", "download", "sam_vit_x"]) == 2
    assert "known: sam_vit_h" in _one_line_error(capsys.readouterr().err)
    assert main(["weights", "download", "sam_vit_l", "--url", f"{base}/missing.pth", "--quiet"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "HTTP 404" in err and "--checkpoint PATH" in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["weights", "download", "sam_vit_l", "--url", f"http://127.0.0.1:{port}/x.pth"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "cannot download sam_vit_l" in err and str(w.cache_location("sam_vit_l")) in err


def test_verify_all_cached(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "verify"]) == 0
    assert "no checkpoints cached" in capsys.readouterr().out
    _put_in_cache("efficient_sam_vit_t", b"a")
    assert main(["weights", "verify"]) == 0
    assert capsys.readouterr().out.startswith("UNKNOWN ")
    bad = _put_in_cache("sam_vit_b", b"b")
    assert main(["weights", "verify"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2
    mismatch = next(line for line in lines if line.startswith("MISMATCH"))
    assert str(bad) in mismatch and w.get_info("sam_vit_b").sha256 in mismatch
    assert hashlib.sha256(b"b").hexdigest() in mismatch
    assert "1 checkpoint failed verification" in _one_line_error(captured.err)


def test_verify_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "custom.pth"
    f.write_bytes(b"c")
    assert main(["weights", "verify", str(f)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("UNKNOWN ") and hashlib.sha256(b"c").hexdigest() in out
    assert main(["weights", "verify", str(tmp_path / "missing.pth")]) == 2
    assert "checkpoint file not found" in _one_line_error(capsys.readouterr().err)
    # A bare word that is neither a name nor a file: most likely a mistyped name.
    assert main(["weights", "verify", "sam_vit_x"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "sam_vit_x: no official checkpoint of that name and no such file" in err and "sam_vit_b" in err
    assert main(["weights", "verify", "sam_vit_h"]) == 2
    assert "sam_vit_h is not downloaded" in _one_line_error(capsys.readouterr().err)


def test_no_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights"]) == 2
    assert "download" in capsys.readouterr().out


def test_download_quiet_has_the_short_option_of_the_other_commands() -> None:
    from persam.cli import build_parser

    assert build_parser().parse_args(["weights", "download", "sam_vit_b", "-q"]).quiet is True
    assert build_parser().parse_args(["segment", "x", "-o", "o", "-q"]).quiet is True


class _RunsCode:
    """Unpickling this would run a shell command; the weights-only loader never does."""

    def __reduce__(self):
        import os

        return (os.system, ("echo persam-test-should-never-run",))


def test_checkpoint_that_would_run_code_is_called_unsafe_not_corrupt(tmp_path: Path, capsys) -> None:
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode()}, path)
    assert main(["weights", "verify", str(path)]) == 0  # hashing never unpickles
    capsys.readouterr()
    with pytest.raises(w.WeightsError) as info:
        w.read_state_dict(path)
    msg = str(info.value)
    assert "holds code or Python objects that cannot be loaded safely (posix.system)" in msg
    assert "corrupt" not in msg and "\n" not in msg
    assert "persam-test-should-never-run" not in capsys.readouterr().out


def test_interrupted_download_says_how_to_resume(monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "download", interrupted)
    assert main(["weights", "download", "sam_vit_b", "-q"]) == 130
    assert "run the command again to resume" in capsys.readouterr().err
