"""What every integration shares: results accepted as Masks, and a missing tool named with its extra."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from persam.errors import InputError
from persam.integrations import as_masks, require
from persam.personalize import SegmentationResult
from persam.results import Masks


def test_missing_tool_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install 'persam\[mytool\]'"):
        require("persam_no_such_tool_module", "mytool")
    assert require("json", "none").dumps([1]) == "[1]"


def test_results_with_masks_are_accepted() -> None:
    m = Masks(masks=np.ones((1, 4, 5), bool))
    assert as_masks(m) is m
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    result = SegmentationResult(
        mask=mask,
        score=0.5,
        found=True,
        points=np.zeros((1, 2), np.int64),
        point_labels=np.ones(1, np.int64),
        box=None,
        final_stage="refine2",
    )
    np.testing.assert_array_equal(as_masks(result).masks[0], mask)
    with pytest.raises(InputError, match="Masks"):
        as_masks(np.ones((1, 4, 5), bool))


def test_importing_the_package_imports_no_tool() -> None:
    code = (
        "import sys, persam.integrations; "
        "tools = ('supervision', 'cvat_sdk', 'label_studio_sdk', 'fiftyone'); "
        "print(sorted(m for m in tools if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
