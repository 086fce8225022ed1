"""Pytest fixtures shared by the whole suite (plain helpers are in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Decoder outputs change in the last bits with the thread count; keep tests reproducible.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _float32_by_default(monkeypatch: pytest.MonkeyPatch):
    # The golden comparisons are float32; ``build_model``'s default ``dtype="auto"`` would pick
    # bfloat16 on a machine that computes in it natively (AMX / AVX512-BF16 CPUs, CUDA).
    from persam.devices import resolve_dtype
    from persam.registry import build

    def pinned(dtype="auto", device=None, *, option="dtype"):
        return resolve_dtype("float32" if dtype in ("auto", None) else dtype, device, option=option)

    monkeypatch.setattr(build, "resolve_dtype", pinned)


@pytest.fixture
def persam_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``PERSAM_HOME`` (weights cache) for the test, and no proxy (test servers are
    local)."""
    home = tmp_path / "home"
    monkeypatch.setenv("PERSAM_HOME", str(home))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def one_thread(_deterministic_threads) -> None:
    """One intra-op thread for the test: on a busy machine, threads contending for the cores slow
    the small models down many times over."""
    torch.set_num_threads(1)
