"""``eval/gpu_check.py`` on a machine without CUDA: a message and a clean exit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_cleanly(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _load().main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gpu_check: CUDA is not available here")
    assert out[0].endswith("nothing to measure.")


def test_scene_has_the_requested_objects() -> None:
    image, labels = _load()._scene(h=120, w=200, objects=3)
    assert image.shape == (120, 200, 3) and image.dtype.name == "uint8"
    assert sorted(set(labels.ravel().tolist())) == [0, 1, 2, 3]
