"""``persam info``."""

from __future__ import annotations

import platform

import torch

from persam.cli import main


def test_info_prints_versions_and_devices(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch    {torch.__version__}" in out
    assert platform.python_version() in out
    assert "cpu" in out
    assert "models" in out


def test_info_says_whether_the_allocator_is_tuned(capsys, monkeypatch, tmp_path):
    from persam import allocator

    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    monkeypatch.setattr(allocator, "tune_cpu_allocator", lambda: False)
    assert main(["info"]) == 0
    assert "malloc   the system's default\n" in capsys.readouterr().out
    monkeypatch.setattr(allocator, "tune_cpu_allocator", lambda: True)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "malloc   large freed blocks kept for reuse (glibc; PERSAM_MALLOC=system" in out


def test_info_reports_cached_checkpoints(capsys, monkeypatch, tmp_path):
    from persam import weights

    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    path = weights.cache_location("mobile_sam_vit_t")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not really a checkpoint")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(weights.checkpoints_dir()) in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    # A truncated file is shown as such, not simply as cached.
    assert "cached, size mismatch (23 of 40728226 bytes)" in lines["mobile_sam_vit_t"]
    assert lines["sam_vit_h"].split()[1:3] == ["not", "cached"]
