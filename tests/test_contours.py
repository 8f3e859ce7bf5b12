"""Compiled contour tracer (csrc/contours.cpp) vs cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE).

The oracle is the full-image cv2 path in yoloseg.ops.reference: every point, its order, the order of
the contours ("all" joins them in cv2's order) and the "largest" choice must be identical.
"""

import cv2
import numpy as np
import pytest
import torch

from yoloseg import ops
from yoloseg.ops import polygons as poly_face
from yoloseg.ops import reference as ref
from yoloseg.ops._compiled import C, has_family

pytestmark = pytest.mark.skipif(not has_family("contours"), reason="compiled contours family not built")


def random_masks(rng, count):
    """Small masks of several kinds: noise (many touching parts, one-pixel lines and points), discs and
    rings (holes, parts nested in holes), blobs, and non-0/1 uint8 values."""
    out = []
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        kind = k % 4
        if kind == 0:
            m = (rng.random((h, w)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        elif kind == 1:
            m = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(1, 6))):
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                value = int(rng.integers(0, 2))
                cv2.circle(m, centre, int(rng.integers(1, 12)), value, -1 if rng.random() < 0.7 else 1)
        elif kind == 2:
            small = rng.random((max(h // 4, 1), max(w // 4, 1))).astype(np.float32)
            m = (cv2.resize(small, (w, h)) > 0.5).astype(np.uint8)
        else:
            m = ((rng.random((h, w)) < 0.5) * rng.integers(1, 256)).astype(np.uint8)
        out.append(m)
    return out


def nested_mask():
    """A ring with a solid square in its hole, which holds a hole with a dot: only the ring is external."""
    m = np.zeros((40, 40), np.uint8)
    m[2:38, 2:38] = 1
    m[5:35, 5:35] = 0
    m[10:30, 10:30] = 1
    m[14:26, 14:26] = 0
    m[20, 20] = 1
    m[0, 0] = 1  # and a separate pixel in the corner (external)
    return m


@pytest.mark.parametrize("strategy", ["largest", "all"])
def test_tracer_equals_cv2_on_random_masks(strategy):
    rng = np.random.default_rng(11)
    masks = random_masks(rng, 600) + [nested_mask()]
    for m in masks:
        h, w = m.shape
        want = ref.masks_to_polygons(m[None], strategy)[0].astype(np.int32)
        pts, ends = C.mask_polygons(m[None], np.array([[0, 0, w, h]], np.int64), strategy, 1)
        np.testing.assert_array_equal(pts, want, err_msg=f"{strategy} {m.tolist()}")
        assert ends.tolist() == [len(want)]


def test_nested_parts_are_not_external():
    pts, ends = C.mask_polygons(nested_mask()[None], np.array([[0, 0, 40, 40]], np.int64), "all", 1)
    xs, ys = pts[:, 0], pts[:, 1]
    # the ring's outer border and the corner pixel; nothing at the inner square's corners (10 and 29)
    assert {(int(x), int(y)) for x, y in pts} >= {(0, 0), (2, 2), (37, 37)}
    assert not np.any((xs == 10) & (ys == 10)) and not np.any((xs == 29) & (ys == 29))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("strategy", ["largest", "all"])
def test_many_masks_in_windows_match_full_image(strategy, threads):
    """Masks the size of a letterboxed input, traced in their tight windows on 1 or 2 threads."""
    rng = np.random.default_rng(3)
    n, h, w = 120, 192, 256
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        for j in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(-20, w + 20)), int(rng.integers(-20, h + 20)))
            axes = (int(rng.integers(1, 60)), int(rng.integers(1, 40)))
            value = 1 if j == 0 else int(rng.integers(0, 2))
            cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
        if i % 3 == 0:
            masks[i] &= (rng.random((h, w)) < 0.95).astype(np.uint8)  # ragged borders, specks
    wins = C.mask_windows(masks, 1)
    pts, ends = C.mask_polygons(masks, wins, strategy, threads)
    want = ref.masks_to_polygons(masks, strategy)
    assert ends.tolist() == np.cumsum([len(p) for p in want]).tolist()
    np.testing.assert_array_equal(pts, np.concatenate(want).astype(np.int32))


def test_windows_are_clipped_and_empty_windows_give_empty_polygons():
    m = np.zeros((3, 10, 12), np.uint8)
    m[0, 2:5, 3:9] = 1
    m[2, 0:10, 0:12] = 1
    wins = np.array([[-5, -5, 100, 100], [4, 4, 4, 9], [0, 0, 12, 10]], np.int64)
    pts, ends = C.mask_polygons(m, wins, "largest", 1)
    want = ref.masks_to_polygons(m, "largest")
    assert ends.tolist() == np.cumsum([len(p) for p in want]).tolist()
    np.testing.assert_array_equal(pts, np.concatenate(want).astype(np.int32))


def test_cv2_fallback_gives_the_same_polygons(monkeypatch):
    rng = np.random.default_rng(5)
    masks = np.stack([np.pad(m, ((0, 40 - m.shape[0]), (0, 40 - m.shape[1]))) for m in random_masks(rng, 80)])
    compiled = ops.masks_to_polygons(torch.from_numpy(masks), "all")
    flat_pts, flat_ends = poly_face.polygons_flat(masks, "all")
    monkeypatch.setattr(poly_face, "has_family", lambda name: name != "contours")
    fallback = ops.masks_to_polygons(torch.from_numpy(masks), "all")
    for a, b in zip(compiled, fallback):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    pts, ends = poly_face.polygons_flat(masks, "all")
    np.testing.assert_array_equal(pts, flat_pts)
    np.testing.assert_array_equal(ends, flat_ends)


@pytest.mark.parametrize(
    "windows, strategy, match",
    [
        (np.zeros((3, 4), np.int64), "largest", "windows must have shape"),
        (np.zeros((2, 3), np.int64), "largest", "windows must have shape"),
        (np.zeros((2, 4), np.int64), "biggest", "strategy"),
    ],
)
def test_bad_arguments_raise_value_error(windows, strategy, match):
    with pytest.raises(ValueError, match=match):
        C.mask_polygons(np.zeros((2, 5, 5), np.uint8), windows, strategy, 1)
