"""The kernels refuse bad input at every door: yoloseg.ops, torch.ops.yoloseg.* and the _C bindings
raise ValueError naming the argument, never crash the process."""

import math

import numpy as np
import pytest
import torch

import yoloseg.ops  # noqa: F401  registers torch.ops.yoloseg.*
from yoloseg import _C as C
from yoloseg import ops

OPS = torch.ops.yoloseg
NAN, INF = float("nan"), float("inf")


def _grid_boxes(n=500):
    i = torch.arange(n, dtype=torch.float32)
    x, y = (i % 25) * 10, (i // 25) * 10
    return torch.stack([x, y, x + 15, y + 15], 1), torch.rand(n, generator=torch.Generator().manual_seed(0))


# The two one-line calls that used to kill the process (SIGSEGV / SIGABRT).


def test_process_mask_op_nan_box_is_a_value_error():
    protos, coeffs = torch.randn(32, 160, 160), torch.randn(1, 32)
    with pytest.raises(ValueError, match="boxes contains NaN or infinite values"):
        OPS.process_mask(protos, coeffs, torch.tensor([[NAN, 0, 10, 10]]), 640, 640, True)


def test_nms_op_minus_inf_box_is_a_value_error():
    boxes, scores = _grid_boxes(500)
    boxes[123, 2] = -INF
    with pytest.raises(ValueError, match="boxes contains NaN or infinite values"):
        OPS.nms(boxes, scores, 0.5)


# torch ops refuse what yoloseg.ops refuses, with the same message.


def _message(fn, *args):
    with pytest.raises(ValueError) as info:
        fn(*args)
    return str(info.value)


_b, _s = _grid_boxes(8)
NMS_CASES = {
    "nan box": (_b.clone().index_fill_(0, torch.tensor([2]), NAN), _s, 0.5),
    "inf box": (_b.clone().index_fill_(0, torch.tensor([2]), INF), _s, 0.5),
    "nan score": (_b, _s.clone().index_fill_(0, torch.tensor([1]), NAN), 0.5),
    "bad shape": (_b[:, :3], _s, 0.5),
    "short scores": (_b, _s[:5], 0.5),
    "int boxes": (_b.long(), _s, 0.5),
    "nan threshold": (_b, _s, NAN),
    "inf threshold": (_b, _s, INF),
}


@pytest.mark.parametrize("case", NMS_CASES)
def test_nms_op_refuses_like_the_face(case):
    args = NMS_CASES[case]
    assert _message(OPS.nms, *args) == _message(ops.nms, *args)


@pytest.mark.parametrize("case", NMS_CASES)
def test_batched_nms_op_refuses_like_the_face(case):
    b, s, t = NMS_CASES[case]
    idxs = torch.zeros(b.shape[0], dtype=torch.int64)
    assert _message(OPS.batched_nms, b, s, idxs, t) == _message(ops.batched_nms, b, s, idxs, t)


def test_batched_nms_op_refuses_bad_idxs_like_the_face():
    for idxs in (torch.zeros(5, dtype=torch.int64), torch.tensor([0.5] * 8), torch.tensor([NAN] * 8)):
        assert _message(OPS.batched_nms, _b, _s, idxs, 0.5) == _message(ops.batched_nms, _b, _s, idxs, 0.5)


MASK_CASES = {
    "nan box": (torch.randn(4, 8, 8), torch.randn(1, 4), torch.tensor([[NAN, 0, 10, 10]]), 32, 32),
    "inf box": (torch.randn(4, 8, 8), torch.randn(1, 4), torch.tensor([[0, 0, INF, 10]]), 32, 32),
    "nan coeffs": (torch.randn(4, 8, 8), torch.tensor([[NAN, 0, 0, 0]]), torch.tensor([[0, 0, 5, 5.0]]), 32, 32),
    "coeffs shape": (torch.randn(4, 8, 8), torch.randn(1, 3), torch.tensor([[0, 0, 5, 5.0]]), 32, 32),
    "boxes shape": (torch.randn(4, 8, 8), torch.randn(2, 4), torch.tensor([[0, 0, 5, 5.0]]), 32, 32),
    "empty protos": (torch.randn(4, 0, 8), torch.randn(1, 4), torch.tensor([[0, 0, 5, 5.0]]), 32, 32),
    "zero height": (torch.randn(4, 8, 8), torch.randn(1, 4), torch.tensor([[0, 0, 5, 5.0]]), 0, 32),
    "negative width": (torch.randn(4, 8, 8), torch.randn(1, 4), torch.tensor([[0, 0, 5, 5.0]]), 32, -4),
    "absurd height": (torch.randn(4, 8, 8), torch.randn(1, 4), torch.tensor([[0, 0, 5, 5.0]]), 1 << 40, 32),
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_process_mask_ops_refuse_like_the_face(case):
    protos, coeffs, boxes, h, w = MASK_CASES[case]
    for upsample in (True, False):
        expected = _message(ops.process_mask, protos, coeffs, boxes, (h, w), upsample)
        assert _message(OPS.process_mask, protos, coeffs, boxes, h, w, upsample) == expected
    expected = _message(ops.process_mask_native, protos, coeffs, boxes, (h, w))
    assert _message(OPS.process_mask_native, protos, coeffs, boxes, h, w) == expected


def test_ops_still_work_through_the_custom_ops():
    boxes, scores = _grid_boxes(200)
    np.testing.assert_array_equal(OPS.nms(boxes, scores, 0.1), ops.nms(boxes, scores, 0.1))
    protos, coeffs = torch.randn(4, 8, 8), torch.randn(2, 4)
    bx = torch.tensor([[1.0, 1, 20, 20], [0, 0, 32, 32]])
    assert torch.equal(OPS.process_mask(protos, coeffs, bx, 32, 32, True), ops.process_mask(protos, coeffs, bx, (32, 32)))


# The _C bindings: the library's checks arrive as ValueError naming the argument.


def test_c_nms_refuses_non_finite_boxes_and_nan_scores():
    boxes, scores = (t.numpy() for t in _grid_boxes(500))
    bad = boxes.copy()
    bad[7, 0] = -np.inf
    for method in (0, 1, 2):
        with pytest.raises(ValueError, match="nms: boxes contains NaN or infinite values"):
            C.nms(bad, scores, 0.5, method, 4)
    s = scores.copy()
    s[0] = np.nan
    with pytest.raises(ValueError, match="batched_nms: scores contains NaN"):
        C.batched_nms(boxes, s, np.zeros(500, np.int64), 0.5)
    with pytest.raises(ValueError, match="nms: iou_threshold"):
        C.nms(boxes, scores, math.nan)
    with pytest.raises(ValueError, match="nms: method"):
        C.nms(boxes, scores, 0.5, 9)
    s[0] = -np.inf  # infinite scores are fine: they rank last / first
    assert len(C.nms(boxes, s, 0.5, 0, -7)) > 0


def test_c_decode_masks_refuses_nan_boxes_and_absurd_sizes():
    protos, coeffs = np.random.rand(4, 8, 8).astype(np.float32), np.ones((1, 4), np.float32)
    box = np.array([[np.nan, 0, 10, 10]], np.float32)
    with pytest.raises(ValueError, match="decode_masks: boxes contains NaN"):
        C.decode_masks(protos, coeffs, box, 32, 32, 1, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="decode_mask_crops: boxes contains NaN"):
        C.decode_mask_crops(protos, coeffs, box, 32, 32, 1, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="resample_taps: out"):
        C.resample_taps(1 << 40, 8, 1, 0, 8)
    with pytest.raises(ValueError, match="resample_taps: f"):
        C.resample_taps(8, 8, 1 << 62, 0, 8)


def test_c_rle_crowd_may_be_any_layout():
    masks = np.zeros((2, 6, 6), np.uint8)
    masks[0, 1:4, 1:4] = 1
    masks[1, 2:5, 2:5] = 1
    r = C.rle_encode(masks)
    crowd_strided = np.array([[1, 0], [0, 0]], np.uint8)[:, 0]  # non-contiguous view: [1, 0]
    assert not crowd_strided.flags.c_contiguous
    np.testing.assert_array_equal(C.rle_iou(r, r, crowd_strided), C.rle_iou(r, r, np.array([1, 0], np.uint8)))
    np.testing.assert_array_equal(C.rle_iou(r, r, [True, False]), C.rle_iou(r, r, np.array([1, 0], np.uint8)))
    boxes = np.array([[0, 0, 4, 4], [1, 1, 4, 4]], np.float64)
    np.testing.assert_array_equal(C.box_iou_xywh(boxes, boxes, crowd_strided),
                                  C.box_iou_xywh(boxes, boxes, np.array([1, 0], np.uint8)))


@pytest.mark.parametrize(
    "rle, match",
    [
        ({"size": [1 << 32, 1], "counts": [0, 3]}, "too large"),
        ({"size": [1 << 40, 1 << 40], "counts": "0"}, "too large"),
        ({"size": [70000, 70000], "counts": [1]}, "too large"),
        ({"size": [2, 2], "counts": [4, 4, 4]}, "add up to more than h\\*w"),
        ({"size": [2, 2], "counts": "o" * 40}, "longer than 7 characters"),
        ({"size": [2, 2], "counts": [1.5, 2]}, "must hold two ints"),
        ({"size": ["a", 2], "counts": [1]}, "must hold two ints"),
        ({"size": 5, "counts": [1]}, "'size' must be \\[h, w\\]"),
        ({"size": [2, 2], "counts": 7}, "'counts' must be"),
        ({"size": [-1, 2], "counts": [1]}, "non-negative"),
    ],
)
def test_c_rle_refuses_bad_rles_for_every_function(rle, match):
    for fn in (C.rle_decode, C.rle_area, C.rle_to_bbox, C.rle_counts, C.rle_merge):
        with pytest.raises(ValueError, match=match):
            fn([rle])
    with pytest.raises(ValueError, match=match):
        C.rle_iou([rle], [rle], np.zeros(1, np.uint8))


def test_c_rle_window_and_polygon_bounds_cannot_overflow():
    big = np.iinfo(np.int64).max
    with pytest.raises(ValueError, match="outside the mask"):
        C.rle_encode_windows(np.zeros(4, np.uint8), np.array([[0, 0, 2, 2]], np.int64), np.array([big], np.int64), 4, 4)
    with pytest.raises(ValueError, match="too large"):
        C.rle_encode_windows(np.zeros(4, np.uint8), np.array([[0, 0, 2, 2]], np.int64), np.array([0], np.int64),
                             1 << 63, 4)
    with pytest.raises(ValueError, match="too large"):
        C.rle_from_polygons([np.array([0, 0, 1, 0, 1, 1.0])], 100000, 100000)
    with pytest.raises(ValueError, match="rle_from_polygon: xy"):
        C.rle_from_boxes(np.array([[np.nan, 0, 2, 2]]), 10, 10)


def test_c_contours_regions_cannot_overflow():
    big = np.iinfo(np.int64).max
    regions = np.array([[0, 0, big, big]], np.int64)
    with pytest.raises(ValueError, match="crop_polygons: regions"):
        C.crop_polygons(np.zeros(4, np.uint8), regions, np.zeros(1, np.int64), np.zeros((1, 4), np.int64))
    regions = np.array([[-big, -big, big, big]], np.int64)
    with pytest.raises(ValueError, match="crop_polygons: regions"):
        C.crop_polygons(np.zeros(4, np.uint8), regions, np.zeros(1, np.int64), np.zeros((1, 4), np.int64))


def test_c_polygon_helpers_exact_at_extremes():
    m = np.zeros((1, 6, 7), np.uint8)
    m[0, 2, 3] = 1
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    np.testing.assert_array_equal(C.mask_windows_within(m, np.array([[lo, lo, hi, hi]], np.int64)), [[3, 2, 4, 3]])
    i32 = np.iinfo(np.int32)
    a = np.array([[i32.min, i32.min], [i32.max, i32.max]], np.int32)
    b = np.array([[i32.max, i32.max - 1], [i32.min + 1, i32.min]], np.int32)
    assert C.closest_vertices(a, b) == (0, 1)


def test_c_coco_evaluate_refuses_bad_parameters():
    gt = b'{"images":[{"id":1,"height":10,"width":10}],"categories":[{"id":1}],"annotations":[]}'
    args = (np.array([0.5]), np.linspace(0, 1, 11), [100], np.array([[0, 1e10]]))
    C.coco_evaluate_json(gt, b"[]", "bbox", *args)
    with pytest.raises(ValueError, match="iou_thrs"):
        C.coco_evaluate_json(gt, b"[]", "bbox", np.array([math.nan]), *args[1:])
    with pytest.raises(ValueError, match="max_dets"):
        C.coco_evaluate_json(gt, b"[]", "bbox", args[0], args[1], [-1], args[3])
