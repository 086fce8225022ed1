"""Checkpoint registry, cache, download (against a local HTTP server), reading and loading."""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import io
import json
import re
import socket
import sys
import threading
import warnings
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers import fixture_dir
from torch import nn

from persam import weights as w
from persam.weights import cache as weights_cache

# --------------------------------------------------------------------------------------- test server


class _Server:
    """A local HTTP server serving ``files`` (path -> bytes); records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.requests: list[dict] = []  # {"path", "range", "sent"}
        self.truncate_after: int | None = None  # drop the connection after this many body bytes
        self.send_length = True  # False: no Content-Length, the body ends when the connection closes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
                server.requests.append(record)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416, "Range Not Satisfiable")
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                if server.send_length:
                    self.send_header("Content-Length", str(len(chunk)))
                else:
                    self.close_connection = True
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if server.truncate_after is not None:
                    chunk = chunk[: server.truncate_after]
                    self.close_connection = True
                # Recorded before writing: the client may finish reading before write() returns.
                record["sent"] = len(chunk)
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


pytestmark = pytest.mark.usefixtures("persam_home")


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(64, 32, generator=g), "a.bias": torch.randn(64, generator=g)}


def _info(data: bytes, url: str, *, sha: bool = True, size: bool = True, **kw) -> w.CheckpointInfo:
    fields = {
        "name": "test_model",
        "model": "Test",
        "filename": "test_ckpt.pth",
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest() if sha else None,
        "size": len(data) if size else None,
        "description": "test",
    }
    fields.update(kw)
    return w.CheckpointInfo(**fields)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------------------------------- registry


def test_registry_entries() -> None:
    assert set(w.checkpoint_names()) == {
        "sam_vit_h",
        "sam_vit_l",
        "sam_vit_b",
        "mobile_sam_vit_t",
        "efficient_sam_vit_t",
        "efficient_sam_vit_s",
        *(f"{v}_hiera_{size}" for v in ("sam2", "sam2.1") for size in ("t", "s", "b+", "l")),
    }
    # SAM 2 files and addresses as the official download script names them; no digest is published.
    for name, file, release in (
        ("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", "092824"),
        ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", "092824"),
        ("sam2_hiera_l", "sam2_hiera_large.pt", "072824"),
    ):
        info = w.get_info(name)
        assert info.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{file}"
        assert info.filename == file and info.sha256 is None and not info.zipped
    h = w.get_info("sam_vit_h")
    assert h.url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    assert h.sha256 == "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
    assert h.size == 2_564_550_879
    for info in w.CHECKPOINTS.values():
        assert info.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert info.url.startswith("https://")
    assert w.get_info("efficient_sam_vit_t").sha256 is None
    s = w.get_info("efficient_sam_vit_s")
    assert (
        s.zipped and s.download_name == "efficient_sam_vits.pt.zip" and s.filename == "efficient_sam_vits.pt"
    )
    assert not h.zipped
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.url = "x"  # type: ignore[misc]
    with pytest.raises(w.WeightsError, match="sam_vit_x.*known: sam_vit_h"):
        w.get_info("sam_vit_x")


def test_cache_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "ph"))
    assert w.cache_dir() == tmp_path / "ph"
    monkeypatch.delenv("PERSAM_HOME")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert w.cache_dir() == tmp_path / "xdg" / "persam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert w.cache_dir() == tmp_path / "user" / ".cache" / "persam"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert w.cache_dir() == tmp_path / "user" / "Library" / "Caches" / "persam"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert w.cache_dir() == tmp_path / "local" / "persam"


def test_cached_path(persam_home: Path) -> None:
    assert w.cached_path("sam_vit_b") is None
    target = w.cache_location("sam_vit_b")
    assert target == persam_home / "checkpoints" / "sam_vit_b_01ec64.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert w.cached_path("sam_vit_b") == target


# -------------------------------------------------------------------------------------------- download


def test_download_verifies_and_renames(server: _Server, tmp_path: Path) -> None:
    data = _torch_bytes(_state())
    server.files["/ckpt.pth"] = data
    info = _info(data, server.url("/ckpt.pth"))
    path = w.download(info, tmp_path / "d", progress=False)
    assert path == tmp_path / "d" / "test_ckpt.pth"
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["test_ckpt.pth"]
    assert w.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert server.requests[0]["range"] is None
    # Already there: no second request.
    assert w.download(info, tmp_path / "d", progress=False) == path
    assert len(server.requests) == 1


@pytest.mark.parametrize("known_size", [True, False])
def test_download_without_content_length(server: _Server, tmp_path: Path, known_size: bool) -> None:
    data = bytes(range(256)) * 100
    server.files["/ckpt.pth"] = data
    server.send_length = False
    path = w.download(_info(data, server.url("/ckpt.pth"), size=known_size), tmp_path, progress=False)
    assert path.read_bytes() == data


def test_download_defaults_to_cache(server: _Server, persam_home: Path) -> None:
    data = b"0123456789" * 100
    server.files["/sam_vit_b_01ec64.pth"] = data
    info = dataclasses.replace(
        w.get_info("sam_vit_b"), url=server.url("/sam_vit_b_01ec64.pth"), sha256=None, size=len(data)
    )
    with pytest.warns(w.UnverifiedCheckpointWarning, match="no published sha256"):
        path = w.download(info, progress=False)
    assert path == persam_home / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert w.cached_path("sam_vit_b") == path


def test_download_url_override_keeps_expected_size(server: _Server, tmp_path: Path) -> None:
    server.files["/mirror.pth"] = b"not the real checkpoint"
    with pytest.raises(
        w.WeightsError, match=r"sam_vit_b_01ec64\.pth: .*/mirror\.pth offers 23 bytes, expected 375042383"
    ):
        w.download("sam_vit_b", tmp_path, url=server.url("/mirror.pth"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_resume_requests_only_missing_bytes(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    server.files["/ckpt.pth"] = data
    part = tmp_path / "test_ckpt.pth.part"
    part.write_bytes(data[:30_000])
    info = _info(data, server.url("/ckpt.pth"))
    path = w.download(info, tmp_path, progress=False)
    assert path.read_bytes() == data
    assert [r["range"] for r in server.requests] == ["bytes=30000-"]
    assert server.requests[0]["sent"] == len(data) - 30_000
    assert not part.exists()


def test_resume_when_server_ignores_range(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    server.files["/ckpt.pth"] = data
    server.honour_range = False
    # A stale prefix that does not even match: the full body must replace it, not be appended.
    (tmp_path / "test_ckpt.pth.part").write_bytes(b"\xff" * 10_000)
    path = w.download(_info(data, server.url("/ckpt.pth")), tmp_path, progress=False)
    assert path.read_bytes() == data
    assert server.requests[0]["range"] == "bytes=10000-"
    assert server.requests[0]["sent"] == len(data)


def test_complete_part_file_416(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server.files["/ckpt.pth"] = data
    (tmp_path / "test_ckpt.pth.part").write_bytes(data)
    path = w.download(_info(data, server.url("/ckpt.pth")), tmp_path, progress=False)
    assert path.read_bytes() == data
    assert [r["sent"] for r in server.requests] == [0]


def test_stale_part_longer_than_remote_is_restarted(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server.files["/ckpt.pth"] = data
    (tmp_path / "test_ckpt.pth.part").write_bytes(b"\0" * (len(data) + 100))
    # Size unknown: the server's 416 tells us the part does not fit, so it starts over.
    path = w.download(_info(data, server.url("/ckpt.pth"), size=False), tmp_path, progress=False)
    assert path.read_bytes() == data
    assert [r["range"] for r in server.requests] == [f"bytes={len(data) + 100}-", None]


def test_checksum_mismatch_removes_download(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    corrupt = bytearray(data)
    corrupt[1234] ^= 0xFF
    server.files["/ckpt.pth"] = bytes(corrupt)
    info = _info(data, server.url("/ckpt.pth"))
    with pytest.raises(w.WeightsError) as e:
        w.download(info, tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "ckpt.pth" in msg and info.sha256 in msg and hashlib.sha256(corrupt).hexdigest() in msg
    assert list(tmp_path.iterdir()) == []


def test_http_404(server: _Server, tmp_path: Path) -> None:
    info = _info(b"x", server.url("/missing.pth"))
    with pytest.raises(w.WeightsError, match=r"cannot download test_model from .*/missing\.pth: HTTP 404"):
        w.download(info, tmp_path, progress=False)
    assert not (tmp_path / "test_ckpt.pth").exists()


def test_connection_refused_explains_manual_download(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/sam_vit_h_4b8939.pth"
    with pytest.raises(w.WeightsError) as e:
        w.download("sam_vit_h", url=url, progress=False, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot download sam_vit_h from {url}: ")
    assert "refused" in msg.lower()
    assert "--checkpoint PATH" in msg
    assert str(w.cache_location("sam_vit_h")) in msg
    assert w.cached_path("sam_vit_h") is None


def test_dropped_connection_keeps_part_for_resume(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    server.files["/ckpt.pth"] = data
    server.truncate_after = 40_000
    info = _info(data, server.url("/ckpt.pth"))
    with pytest.raises(w.WeightsError, match="run again to resume"):
        w.download(info, tmp_path, progress=False)
    part = tmp_path / "test_ckpt.pth.part"
    assert part.stat().st_size == 40_000
    assert not (tmp_path / "test_ckpt.pth").exists()
    server.truncate_after = None
    assert w.download(info, tmp_path, progress=False).read_bytes() == data
    assert server.requests[-1]["range"] == "bytes=40000-"


def test_zipped_checkpoint_is_unpacked(server: _Server, tmp_path: Path) -> None:
    state = _state()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("efficient_sam_vits.pt", _torch_bytes({"model": state}))
    server.files["/weights/efficient_sam_vits.pt.zip"] = buf.getvalue()
    url = server.url("/weights/efficient_sam_vits.pt.zip")
    with pytest.warns(w.UnverifiedCheckpointWarning):
        path = w.download("efficient_sam_vit_s", tmp_path, url=url, progress=False)
    assert path == tmp_path / "efficient_sam_vits.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efficient_sam_vits.pt"]
    loaded = w.read_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_zip_without_checkpoint_is_rejected(server: _Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.txt", "hello")
    server.files["/efficient_sam_vits.pt.zip"] = buf.getvalue()
    url = server.url("/efficient_sam_vits.pt.zip")
    with pytest.warns(w.UnverifiedCheckpointWarning), pytest.raises(w.WeightsError, match="one .pt file"):
        w.download("efficient_sam_vit_s", tmp_path, url=url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_downloaded_zip_is_unpacked_without_refetching(server: _Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("efficient_sam_vits.pt", _torch_bytes(_state()))
    (tmp_path / "efficient_sam_vits.pt.zip").write_bytes(buf.getvalue())
    url = server.url("/efficient_sam_vits.pt.zip")  # serves nothing
    path = w.download("efficient_sam_vit_s", tmp_path, url=url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efficient_sam_vits.pt"]
    assert list(w.read_state_dict(path)) == list(_state())
    assert server.requests == []


# -------------------------------------------------------------------------------------- resolve/verify


def test_resolve_checkpoint(tmp_path: Path, server: _Server, persam_home: Path) -> None:
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert w.resolve_checkpoint("sam_vit_b", f) == f
    assert w.resolve_checkpoint(None, str(f)) == f
    with pytest.raises(w.WeightsError, match=r"checkpoint file not found: .*nope\.pth"):
        w.resolve_checkpoint("sam_vit_b", tmp_path / "nope.pth")
    with pytest.raises(w.WeightsError, match="no official checkpoint for model 'tiny'"):
        w.resolve_checkpoint("tiny", "auto")
    # A model config has no official checkpoint: the message says what to pass instead.
    with pytest.raises(w.WeightsError, match=r"needs a model name .*pass a checkpoint path, or 'none'"):
        w.resolve_checkpoint(None, "auto")
    # "auto" uses the cached file without touching the network ...
    cached = w.cache_location("efficient_sam_vit_t")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert w.resolve_checkpoint("efficient_sam_vit_t", "auto") == cached
    # ... and refuses a cached file of the wrong size.
    wrong = w.cache_location("sam_vit_b")
    wrong.write_bytes(b"short")
    with pytest.raises(w.WeightsError, match="has 5 bytes, expected 375042383"):
        w.resolve_checkpoint("sam_vit_b", "auto")


def test_resolve_auto_downloads(monkeypatch: pytest.MonkeyPatch, server: _Server, persam_home: Path) -> None:
    data = _torch_bytes(_state())
    server.files["/mobile_sam.pt"] = data
    info = dataclasses.replace(
        w.get_info("mobile_sam_vit_t"),
        url=server.url("/mobile_sam.pt"),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    monkeypatch.setitem(w.CHECKPOINTS, "mobile_sam_vit_t", info)
    path = w.resolve_checkpoint("mobile_sam_vit_t", "auto")
    assert path == persam_home / "checkpoints" / "mobile_sam.pt" and path.read_bytes() == data
    assert w.resolve_checkpoint("mobile_sam_vit_t", "auto") == path
    assert len(server.requests) == 1


def test_verify(tmp_path: Path, persam_home: Path) -> None:
    data = b"some bytes"
    f = tmp_path / "other.pth"
    f.write_bytes(data)
    r = w.verify(f)
    assert (r.status, r.name, r.actual, r.expected, r.size) == (
        "unknown",
        None,
        hashlib.sha256(data).hexdigest(),
        None,
        len(data),
    )
    assert r.ok
    # A file with an official name is checked against the published digest.
    cached = w.cache_location("sam_vit_b")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    r = w.verify("sam_vit_b")
    assert r.status == "mismatch" and not r.ok and r.expected == w.get_info("sam_vit_b").sha256
    assert w.verify(cached).status == "mismatch"
    with pytest.raises(w.WeightsError, match="sam_vit_h is not downloaded"):
        w.verify("sam_vit_h")
    with pytest.raises(w.WeightsError, match="checkpoint file not found"):
        w.verify(tmp_path / "nope.pth")
    # A matching digest.
    good = dataclasses.replace(w.get_info("sam_vit_l"), sha256=hashlib.sha256(data).hexdigest())
    w.cache_location(good).write_bytes(data)
    assert w.verify(good).status == "ok"


def test_file_sha256_large_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks
    f = tmp_path / "f"
    f.write_bytes(data)
    assert w.file_sha256(f) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------- read_state_dict


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "model", "state_dict", "module_prefix"],
)
def test_read_state_dict_containers(tmp_path: Path, wrap) -> None:
    state = _state()
    f = tmp_path / "ckpt.pth"
    f.write_bytes(_torch_bytes(wrap(state)))
    loaded = w.read_state_dict(f)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_state_dict_zip_wrapper_vs_torch_archive(tmp_path: Path) -> None:
    state = _state()
    raw = tmp_path / "plain.pt"
    raw.write_bytes(_torch_bytes(state))
    assert zipfile.is_zipfile(raw)  # a torch file is a zip archive itself
    wrapped = tmp_path / "wrapped.pt.zip"
    with zipfile.ZipFile(wrapped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(raw, "weights/inner.pt")
    for path in (raw, wrapped):
        loaded = w.read_state_dict(path)
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_state_dict_argparse_namespace(tmp_path: Path) -> None:
    import argparse

    f = tmp_path / "ckpt.pth"
    f.write_bytes(_torch_bytes({"model": _state(), "args": argparse.Namespace(lr=0.1)}))
    assert list(w.read_state_dict(f)) == list(_state())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip_format", "legacy_format"])
def test_read_state_dict_truncated(tmp_path: Path, legacy: bool) -> None:
    buf = io.BytesIO()
    torch.save(_state(), buf, _use_new_zipfile_serialization=not legacy)
    f = tmp_path / "cut.pth"
    f.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(w.WeightsError, match=r"cut\.pth: is truncated or corrupt \(") as e:
        w.read_state_dict(f)
    assert "\n" not in str(e.value)
    # Only the reason, not torch's advice (re-run with weights_only=False, file an issue, ...).
    assert "weights_only" not in str(e.value) and "internal miniz error" not in str(e.value)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (
            b"hello, this is not a checkpoint\n" * 10,
            r"is not a PyTorch checkpoint \(it looks like a text file\)",
        ),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100),
            r"not a PyTorch checkpoint \(it looks like a JPEG image\)",
        ),
        (b"<!DOCTYPE html><html><body>Not Found</body></html>", r"looks like an HTML or XML page"),
        (_torch_bytes([torch.zeros(2)]), "is not a state dict .*list"),
        (_torch_bytes({"a": torch.zeros(2), "b": 3}), "entry 'b' is a int, not a tensor"),
        (_torch_bytes({}), "empty dict"),
    ],
    ids=["empty", "garbage", "jpeg", "html", "list", "mixed", "empty_dict"],
)
def test_read_state_dict_bad_files(tmp_path: Path, content: bytes, pattern: str) -> None:
    f = tmp_path / "bad.pth"
    f.write_bytes(content)
    with pytest.raises(w.WeightsError, match=pattern) as e:
        w.read_state_dict(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_read_state_dict_refuses_arbitrary_objects(tmp_path: Path) -> None:
    f = tmp_path / "pickled.pth"
    f.write_bytes(_torch_bytes({"model": _state(), "extra": fractions.Fraction(1, 3)}))
    with pytest.raises(w.WeightsError, match="cannot be loaded safely"):
        w.read_state_dict(f)


def test_read_state_dict_missing(tmp_path: Path) -> None:
    with pytest.raises(w.WeightsError, match="checkpoint file not found"):
        w.read_state_dict(tmp_path / "none.pth")


# ------------------------------------------------------------------------------------------ load_into


class _SamLike(nn.Module):
    """Just enough of SAM's key layout: patch embedding width = encoder size."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.patch_embed = nn.Module()
        self.image_encoder.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=2, stride=2)
        self.mask_decoder = nn.Module()
        self.mask_decoder.output_upscaling = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, 2))


class _EfficientSamLike(_SamLike):
    """The same encoder keys; EfficientSAM's decoder keys."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.mask_decoder = nn.Module()
        self.mask_decoder.final_output_upscaling_layers = nn.ModuleList([nn.Sequential(nn.Linear(2, 2))])


class _MobileSamLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.layers = nn.ModuleList([nn.Linear(3, 3)])
        self.mask_decoder = nn.Module()
        self.mask_decoder.output_upscaling = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, 2))


def test_load_into_matching(tmp_path: Path) -> None:
    src, dst = _SamLike(1280), _SamLike(1280)
    w.load_into(dst, src.state_dict(), tmp_path / "sam_vit_h_4b8939.pth", "sam_vit_h")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_load_into_meta_module_assigns() -> None:
    src = _SamLike(1280)
    with torch.device("meta"):
        dst = _SamLike(1280)
    w.load_into(dst, src.state_dict(), Path("x.pth"), "sam_vit_h")
    assert not dst.image_encoder.patch_embed.proj.weight.is_meta
    assert torch.equal(dst.image_encoder.patch_embed.proj.weight, src.image_encoder.patch_embed.proj.weight)


def test_load_into_wrong_sam_size() -> None:
    with pytest.raises(w.WeightsError) as e:
        w.load_into(_SamLike(1280), _SamLike(768).state_dict(), Path("/x/sam_vit_b_01ec64.pth"), "sam_vit_h")
    assert str(e.value) == (
        "sam_vit_b_01ec64.pth is not a sam_vit_h checkpoint: it looks like sam_vit_b "
        "(shape of image_encoder.patch_embed.proj.weight is [768,3,2,2], expected [1280,3,2,2])"
    )


@pytest.mark.parametrize(
    ("source", "guess", "detail"),
    [
        (lambda: _EfficientSamLike(192), "efficient_sam_vit_t", "is [192,3,2,2], expected [1024,3,2,2]"),
        (lambda: _EfficientSamLike(384), "efficient_sam_vit_s", "is [384,3,2,2], expected [1024,3,2,2]"),
        (_MobileSamLike, "mobile_sam_vit_t", "2 missing keys (first: image_encoder.patch_embed.proj.weight)"),
    ],
    ids=["efficient_sam_vit_t", "efficient_sam_vit_s", "mobile_sam_vit_t"],
)
def test_load_into_wrong_family(source, guess: str, detail: str) -> None:
    with pytest.raises(w.WeightsError) as e:
        w.load_into(_SamLike(1024), source().state_dict(), Path("weights.pt"), "sam_vit_l")
    msg = str(e.value)
    assert msg.startswith(f"weights.pt is not a sam_vit_l checkpoint: it looks like {guess} (")
    assert detail in msg and "\n" not in msg


def test_load_into_unknown_keys_counts() -> None:
    state = _SamLike(64).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["image_encoder.patch_embed.proj.bias"]
    with pytest.raises(w.WeightsError) as e:
        w.load_into(_SamLike(64), state, Path("mine.pth"), "tiny")
    assert str(e.value) == (
        "mine.pth does not fit tiny: 1 missing key (first: image_encoder.patch_embed.proj.bias), "
        "1 unexpected key (first: extra.weight)"
    )


def test_load_into_real_sam_modules() -> None:
    sam = pytest.importorskip("persam.models.sam")
    efficient_sam = pytest.importorskip("persam.models.efficient_sam")
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        vit_b, vit_h, vit_t = sam.sam_vit_b(), sam.sam_vit_h(), efficient_sam.efficient_sam_vit_t()
    with pytest.raises(w.WeightsError) as e:
        w.load_into(vit_h, vit_b.state_dict(), Path("/ckpt/sam_vit_b_01ec64.pth"), "sam_vit_h")
    assert str(e.value) == (
        "sam_vit_b_01ec64.pth is not a sam_vit_h checkpoint: it looks like sam_vit_b "
        "(shape of image_encoder.patch_embed.proj.weight is [768,3,16,16], expected [1280,3,16,16])"
    )
    with pytest.raises(
        w.WeightsError, match="^efficient_sam_vitt.pt is not a sam_vit_b checkpoint: it looks like "
    ):
        w.load_into(vit_b, vit_t.state_dict(), Path("efficient_sam_vitt.pt"), "sam_vit_b")
    with pytest.raises(
        w.WeightsError, match="^sam_vit_b_01ec64.pth is not an efficient_sam_vit_t checkpoint"
    ):
        w.load_into(vit_t, vit_b.state_dict(), Path("sam_vit_b_01ec64.pth"), "efficient_sam_vit_t")


# ------------------------------------------------------------------- family inference on real key lists


def _meta_state(keys: list[dict], name_field: str) -> dict[str, torch.Tensor]:
    return {k[name_field]: torch.empty(k["shape"], device="meta") for k in keys}


@pytest.mark.parametrize(
    ("folder", "file", "expected"),
    [
        ("sam", "keys_vit_b.json", "sam_vit_b"),
        ("sam", "keys_vit_l.json", "sam_vit_l"),
        ("sam", "keys_vit_h.json", "sam_vit_h"),
        ("sam", "keys_vit_t.json", "mobile_sam_vit_t"),
        ("efficientsam", "keys_vitt.json", "efficient_sam_vit_t"),
        ("efficientsam", "keys_vits.json", "efficient_sam_vit_s"),
    ],
)
def test_infer_model_name_official_key_lists(folder: str, file: str, expected: str) -> None:
    d = json.loads((fixture_dir(folder) / file).read_text())
    keys, field = (d["state_dict"], "key") if "state_dict" in d else (d["keys"], "name")
    assert w.infer_model_name(_meta_state(keys, field)) == expected


def test_infer_model_name_unknown() -> None:
    assert w.infer_model_name({"x": torch.zeros(1)}) is None
    assert w.infer_model_name(_SamLike(64).state_dict()) is None


def test_no_warning_for_known_checksum(server: _Server, tmp_path: Path) -> None:
    data = b"abc" * 1000
    server.files["/c.pth"] = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.download(_info(data, server.url("/c.pth")), tmp_path, progress=False)


def test_checkpoint_identity_is_remembered_and_follows_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc" * 1000)
    first = w.checkpoint_identity(f)
    assert first == w.file_sha256(f)
    assert (tmp_path / "home" / "hashes.json").is_file()
    # A remembered digest is served without re-reading the file...
    calls = []
    monkeypatch.setattr(weights_cache, "file_sha256", lambda p: calls.append(p) or "0" * 64)
    assert w.checkpoint_identity(f) == first
    assert calls == []
    # ...until the file changes.
    f.write_bytes(b"abcd" * 1000)
    assert w.checkpoint_identity(f) == "0" * 64
