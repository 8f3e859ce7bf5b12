"""The portable comparison bounds of tests/tolerances.py: they accept a few float32 ulps and nothing more."""

import numpy as np
import pytest
from tolerances import (
    PIXEL_RTOL,
    assert_close_det,
    assert_close_pixels,
    assert_close_values,
    assert_close_xyxy,
    pixel_excess,
)


def _ulps(x, n):
    """x moved up by n float32 ulps."""
    x = np.asarray(x, np.float32)
    for _ in range(n):
        x = np.nextafter(x, np.float32(np.inf))
    return x


def test_pixel_rule_is_a_few_ulps_of_the_value():
    v = np.array([0.0, 3.0, 96.9, 320.0, 639.5], np.float32)
    assert_close_pixels(_ulps(v, 8), v)  # 8 ulps pass everywhere (at 639.5: 4.9e-4 px)
    assert PIXEL_RTOL * 640 < 1.3e-3  # never more than ~1.2e-3 px above the 1e-4 floor at 640 px
    with pytest.raises(AssertionError, match="boxes"):
        assert_close_pixels(v + np.float32(2e-4), v, "boxes")  # 2e-4 at 3 px is ~500 ulps
    with pytest.raises(AssertionError):
        assert_close_pixels(_ulps(v, 40), v)  # 40 ulps of 639.5 = 2.4e-3 px: beyond the bound
    assert pixel_excess(v, v) < 0


def test_values_stay_absolute():
    s = np.array([0.001, 0.5, 0.99], np.float32)
    assert_close_values(s + np.float32(9e-5), s)
    with pytest.raises(AssertionError, match="scores"):
        assert_close_values(s + np.float32(2e-4), s, "scores")


def test_det_splits_boxes_from_scores():
    rng = np.random.default_rng(0)
    det = np.concatenate([rng.uniform(0, 640, (1, 4, 50)), rng.uniform(0, 1, (1, 35, 50))], 1).astype(np.float32)
    moved = det.copy()
    moved[:, :4] = _ulps(det[:, :4], 4)
    assert_close_det(moved, det)
    bad = det.copy()
    bad[0, 10, 3] += 5e-4  # a score: absolute 1e-4
    with pytest.raises(AssertionError, match="scores"):
        assert_close_det(bad, det)


def test_xyxy_rule_carries_the_box_size_to_the_corners():
    # x1 = cx - w / 2 near the image edge: a few ulps of w (458 px) make ~5e-4 px on a 34 px corner
    box = np.array([[34.2, 100.0, 492.2, 300.0]])
    assert_close_xyxy(box + [5e-4, 0, 0, 0], box)
    with pytest.raises(AssertionError):
        assert_close_pixels(box + [5e-4, 0, 0, 0], box)  # the plain value rule would call it 14 ulps of 34 px
    with pytest.raises(AssertionError):
        assert_close_xyxy(box + [2e-3, 0, 0, 0], box)
    # mapped back from a letterbox with gain 0.5: the bound doubles with the division
    assert_close_xyxy(box + [9e-4, 0, 0, 0], box, letterboxed=box * 0.5, scale=2.0)
