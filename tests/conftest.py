"""Shared test helpers: the location of the golden fixtures (skip when absent) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Golden data beside the checkout; a user's clone has none, and those tests then skip.
SHARED = Path(os.environ.get("PERSAM_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def fixture_dir(name: str) -> Path:
    """``../shared/fixtures/<name>``, skipping the calling test when it is absent."""
    d = FIXTURES / name
    if not d.is_dir():
        pytest.skip(f"golden fixtures not available ({d})")
    return d


def load_fixture(name: str, file: str):
    return torch.load(fixture_dir(name) / file, weights_only=True, map_location="cpu")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Decoder outputs change in the last bits with the thread count; keep tests reproducible.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
