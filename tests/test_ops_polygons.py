"""Mask -> polygons: windowed tracing vs full-image tracing (the reference), strategies, checks."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoloseg import ops
from yoloseg.ops import polygons as poly_face
from yoloseg.ops import reference as ref


def smooth_masks(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.randn(1, n, 9, 9, generator=g), size=(h, w), mode="bilinear")[0]
    return field > 0.6


def special_masks(h=64, w=80):
    m = np.zeros((8, h, w), np.uint8)
    m[1, 5, 7] = 1  # single pixel
    m[2, :, :] = 1  # full image: contour on the image border
    m[3, 0:10, 70:80] = 1  # touches the top-right corner
    m[4, 10:40, 10:40] = 1
    m[4, 20:30, 20:30] = 0  # a hole (not traced with RETR_EXTERNAL)
    m[5, 5:15, 5:15] = 1
    m[5, 40:60, 30:75] = 1  # two parts, the second larger
    m[5, 50, 5] = 1  # and a single pixel
    m[6, 30, :] = 1  # a one-pixel-high line through the whole width
    m[7, 60:64, 0:3] = 1  # bottom-left corner
    return m


@pytest.mark.parametrize("strategy", ["largest", "all"])
@pytest.mark.parametrize(
    "masks",
    [
        smooth_masks(50, 160, 200, 1),
        smooth_masks(20, 33, 17, 2),
        torch.from_numpy(special_masks()),
        torch.zeros(0, 10, 10, dtype=torch.bool),
    ],
    ids=["smooth", "small", "special", "none"],
)
def test_polygons_match_full_image_reference(masks, strategy):
    got = ops.masks_to_polygons(masks, strategy)
    want = ref.masks_to_polygons(masks, strategy)
    assert len(got) == len(want) == len(masks)
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 2
        np.testing.assert_array_equal(a, b)


def test_input_types_agree():
    m = special_masks()
    base = ops.masks_to_polygons(m)
    for variant in (m.astype(bool), torch.from_numpy(m), torch.from_numpy(m).bool(), torch.from_numpy(m).int() * 3):
        for a, b in zip(ops.masks_to_polygons(variant), base):
            np.testing.assert_array_equal(a, b)


def test_largest_is_by_area_and_all_covers_every_part():
    m = special_masks()
    largest = ops.masks_to_polygons(m, "largest")
    everything = ops.masks_to_polygons(m, "all")
    assert largest[0].shape == (0, 2) and everything[0].shape == (0, 2)
    xs, ys = largest[5][:, 0], largest[5][:, 1]
    assert xs.min() == 30 and xs.max() == 74 and ys.min() == 40 and ys.max() == 59  # the larger part
    assert len(everything[5]) > len(largest[5])
    # Rasterised, "all" fills every part of a mask without holes; only the thin links between the
    # parts add pixels.
    canvas = np.zeros(m.shape[1:], np.uint8)
    cv2.fillPoly(canvas, [everything[5].astype(np.int32)], 1)
    assert np.all(canvas >= m[5])
    assert (canvas > m[5]).sum() < 60


def test_windows_compiled_equals_numpy(monkeypatch):
    m = np.ascontiguousarray(np.concatenate([special_masks(), smooth_masks(10, 64, 80, 3).numpy().astype(np.uint8)]))
    compiled = poly_face._windows(m)
    monkeypatch.setattr(poly_face, "has_family", lambda name: False)
    np.testing.assert_array_equal(compiled, poly_face._windows(m))


@pytest.mark.parametrize(
    "masks, strategy, match",
    [
        (np.zeros((2, 4, 4), np.uint8), "biggest", "strategy"),
        (np.zeros((4, 4), np.uint8), "largest", r"shape \(N, H, W\)"),
        (torch.zeros(2, 4, 4), "largest", "bool or integer"),
        (np.zeros((2, 4, 4), np.float32), "largest", "bool or integer"),
        ([[[0, 1]]], "largest", "torch.Tensor or numpy"),
    ],
)
def test_bad_input_raises_value_error(masks, strategy, match):
    with pytest.raises(ValueError, match=match):
        ops.masks_to_polygons(masks, strategy)


@pytest.mark.parametrize("strategy", ["largest", "all"])
def test_box_hint_gives_the_same_polygons(strategy):
    """Masks decoded by process_mask are zero outside their boxes, so the boxes are a valid hint."""
    g = torch.Generator().manual_seed(5)
    protos = F.interpolate(torch.randn(1, 32, 10, 10, generator=g), size=(80, 96), mode="bilinear")[0]
    coeffs = torch.randn(40, 32, generator=g)
    centre = torch.rand(40, 2, generator=g) * torch.tensor([384.0, 320.0])
    side = torch.rand(40, 2, generator=g) * 200 + 0.5
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1)  # some partly outside the image
    boxes[0] = torch.tensor([5.0, 5.0, 5.0, 50.0])  # empty
    masks = ops.process_mask(protos, coeffs, boxes, (320, 384))
    got = ops.masks_to_polygons(masks, strategy, boxes=boxes)
    want = ref.masks_to_polygons(masks, strategy)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="boxes must have shape"):
        ops.masks_to_polygons(masks, strategy, boxes=boxes[:3])
    with pytest.raises(ValueError, match="boxes contains NaN"):
        ops.masks_to_polygons(masks, strategy, boxes=torch.full((40, 4), float("nan")))


def test_closest_vertices_compiled_equals_numpy():
    from yoloseg import _C

    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 20, (rng.integers(1, 30), 2)).astype(np.int32)  # many ties
        b = rng.integers(0, 20, (rng.integers(1, 30), 2)).astype(np.int32)
        assert tuple(_C.closest_vertices(a, b)) == ref.closest_vertices(a, b)


def test_mask_windows_within_boxes_match_full_scan():
    from yoloseg.ops.polygons import mask_windows

    g = torch.Generator().manual_seed(5)
    n, h, w = 40, 37, 53
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(-5, 45, (2,), generator=g))
        bw, bh = (int(v) for v in torch.randint(0, 20, (2,), generator=g))
        boxes[i] = torch.tensor([x0 - 0.3, y0 + 0.6, x0 + bw + 0.2, y0 + bh + 0.9])
        sub = torch.rand(h, w, generator=g) > (0.97 if i % 3 else 1.0)  # every third mask empty
        ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
        inside = (xs >= boxes[i, 0]) & (xs < boxes[i, 2]) & (ys >= boxes[i, 1]) & (ys < boxes[i, 3])
        masks[i] = sub & inside
    want = np.zeros((n, 4), np.int64)  # oracle: numpy over the whole mask
    for i, m in enumerate(masks.numpy()):
        ys, xs = np.nonzero(m)
        if ys.size:
            want[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    np.testing.assert_array_equal(mask_windows(masks, boxes), want)
    np.testing.assert_array_equal(mask_windows(masks), want)
    np.testing.assert_array_equal(mask_windows(masks.numpy(), boxes.numpy()), want)
