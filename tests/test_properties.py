"""Property tests (hypothesis) of the kernels' invariants: NMS keep lists, RLE round trips, and polygons
re-rasterised against their masks."""

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from yoloseg import _C as C
from yoloseg import ops

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.floats(-50, 300, allow_nan=False, width=32)


@st.composite
def box_sets(draw, max_n=120):
    n = draw(st.integers(0, max_n))
    xy = draw(hnp.arrays(np.float32, (n, 2), elements=coord))
    wh = draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(0, 120, width=32)))
    # few distinct scores, so that ties (broken by the lower index) are common
    scores = draw(hnp.arrays(np.float32, (n,), elements=st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0, -1.0])))
    classes = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 3)))
    return np.concatenate([xy, xy + wh], 1), scores, classes


def _iou32(a, b):
    """IoU in float32 with the kernel's expression (docs/kernels.md)."""
    f = np.float32
    w = max(f(0), min(a[2], b[2]) - max(a[0], b[0]))
    h = max(f(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = f(w * h)
    union = f(f(f((a[2] - a[0]) * (a[3] - a[1])) + f((b[2] - b[0]) * (b[3] - b[1]))) - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return f(inter / union)


def _check_keep(boxes, scores, classes, keep, thr):
    keep = list(keep)
    assert len(set(keep)) == len(keep), "duplicate index"
    rank = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    pos = {i: r for r, i in enumerate(rank)}
    assert [pos[i] for i in keep] == sorted(pos[i] for i in keep), "not in rank order"
    kept = set(keep)
    t = np.float32(thr)
    for a in range(len(keep)):
        for b in range(a + 1, len(keep)):
            i, j = keep[a], keep[b]
            if classes[i] == classes[j]:
                assert not _iou32(boxes[i], boxes[j]) > t, f"kept pair {i}, {j} above the threshold"
    # greedy: every dropped box is suppressed by a kept, higher-ranked box of its class
    for j in set(range(len(scores))) - kept:
        assert any(pos[i] < pos[j] and classes[i] == classes[j] and _iou32(boxes[i], boxes[j]) > t for i in kept)


@SETTINGS
@given(box_sets(), st.sampled_from([0.0, 0.1, 0.3, 0.45, 0.5, 0.7, 0.9, 1.0]), st.integers(0, 2))
def test_nms_keep_list_invariants(data, thr, method):
    boxes, scores, classes = data
    keep = C.nms(boxes, scores, thr, method, 1)
    _check_keep(boxes, scores, np.zeros_like(classes), keep, thr)
    keep_b = C.batched_nms(boxes, scores, classes, thr, method, 2)
    _check_keep(boxes, scores, classes, keep_b, thr)
    # the torch face and the registered op give the same list
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    np.testing.assert_array_equal(ops.nms(tb, ts, thr).numpy(), keep)
    np.testing.assert_array_equal(torch.ops.yoloseg.batched_nms(tb, ts, torch.from_numpy(classes), thr).numpy(),
                                  keep_b)


masks3d = st.integers(0, 3).flatmap(
    lambda n: st.tuples(st.integers(0, 20), st.integers(0, 20)).flatmap(
        lambda hw: hnp.arrays(np.uint8, (n, *hw), elements=st.sampled_from([0, 0, 1, 1, 255]))))


@SETTINGS
@given(masks3d)
def test_rle_round_trip(masks):
    rles = C.rle_encode(masks)
    assert len(rles) == len(masks)
    back = C.rle_decode(rles) if len(rles) else np.zeros_like(masks)
    np.testing.assert_array_equal(back, masks != 0)
    np.testing.assert_array_equal(C.rle_area(rles), (masks != 0).sum(axis=(1, 2)))
    # uncompressed counts decode to the same masks, and re-encode to the same strings
    uncompressed = [{"size": r["size"], "counts": c} for r, c in zip(rles, C.rle_counts(rles))]
    assert [r["counts"] for r in C.rle_encode(C.rle_decode(uncompressed))] == [r["counts"] for r in rles] \
        if rles else True
    # strided input encodes like its contiguous copy
    t = np.ascontiguousarray(masks.transpose(0, 2, 1))
    assert [r["counts"] for r in C.rle_encode(masks.transpose(0, 2, 1))] == [r["counts"] for r in C.rle_encode(t)]


def _fill(poly, shape):
    out = np.zeros(shape, np.uint8)
    if len(poly):
        cv2.fillPoly(out, [np.round(np.asarray(poly)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return out


@st.composite
def convex_blobs(draw):
    h, w = draw(st.integers(4, 48)), draw(st.integers(4, 48))
    m = np.zeros((h, w), np.uint8)
    cx, cy = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    ax, ay = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    if draw(st.booleans()):
        cv2.ellipse(m, (cx, cy), (ax, ay), draw(st.integers(0, 179)), 0, 360, 1, -1)
    else:
        cv2.rectangle(m, (cx, cy), (min(w - 1, cx + ax), min(h - 1, cy + ay)), 1, -1)
    return m


@SETTINGS
@given(convex_blobs())
def test_polygon_of_a_blob_rasterises_back_to_its_mask(mask):
    (poly,) = ops.masks_to_polygons(torch.from_numpy(mask)[None].bool())
    np.testing.assert_array_equal(_fill(poly, mask.shape), mask)


@SETTINGS
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.sampled_from([0, 0, 1])))
def test_joined_polygon_covers_every_pixel_of_its_mask(mask):
    (poly,) = ops.masks_to_polygons(torch.from_numpy(mask)[None].bool(), strategy="all")
    filled = _fill(poly, mask.shape)
    assert not (mask.astype(bool) & ~filled.astype(bool)).any()
    if not mask.any():
        assert len(poly) == 0
