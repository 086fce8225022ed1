"""The one check of click prompts shared by the API, the command line and the demo."""

from __future__ import annotations

import numpy as np
import pytest

from persam.errors import InputError
from persam.personalize import box_misses_image, check_prompts, points_outside


def test_points_outside_uses_pixel_bounds():
    pts = [[0, 0], [39.5, 29.9], [40, 5], [3, -0.5], [-1, 3], [5, 30]]
    assert points_outside(pts, (30, 40)).tolist() == [False, False, True, True, True, True]
    assert points_outside(np.zeros((0, 2)), (30, 40)).shape == (0,)


def test_box_misses_image_only_when_no_pixel_is_inside():
    assert not box_misses_image([-10, -10, 5, 5], (30, 40))  # partly outside is fine
    assert not box_misses_image([0, 0, 39, 29], (30, 40))
    assert box_misses_image([40, 0, 50, 10], (30, 40))
    assert box_misses_image([-50, -40, -1, 0], (30, 40))


def test_check_prompts_normalises_and_names_the_problem():
    pts, labels, box = check_prompts([[1, 2], [3, 4]], None, None, (30, 40))
    assert pts.dtype == np.float64 and labels.tolist() == [1, 1] and box is None
    _, _, box = check_prompts(None, None, [1, 2, 3, 4], (30, 40))
    assert box.tolist() == [1, 2, 3, 4]
    cases = {
        r"point \(45, 2\) is outside the image \(40×30 pixels, W×H\)": ([[1, 2], [45, 2]], None, None),
        r"labels must be 0 \(background\) or 1": ([[1, 2]], [2], None),
        r"labels must have one entry per point": ([[1, 2]], [1, 0], None),
        r"box \[50, 1, 60, 5\] is outside": (None, None, [50, 1, 60, 5]),
        r"x0 <= x1": (None, None, [5, 1, 2, 5]),
        "give at least one point or a box": (None, None, None),
    }
    for message, (p, lab, b) in cases.items():
        with pytest.raises(InputError, match=message):
            check_prompts(p, lab, b, (30, 40))
