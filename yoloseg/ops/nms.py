"""NMS face: input checks, dispatch to the compiled kernel (CPU) or the pure-torch reference.

`yoloseg::nms` and `yoloseg::batched_nms` are torch custom ops with fake (meta) implementations, so
they trace through torch.compile and torch.export; the compiled kernel itself never links libtorch.
"""

from __future__ import annotations

import torch

from yoloseg.ops import reference
from yoloseg.ops._compiled import (
    C,
    check_finite,
    check_same_device,
    check_tensor,
    check_threshold,
    eager,
    num_threads,
    use_compiled,
)

__all__ = ["nms", "batched_nms", "non_max_suppression"]


def _nms_impl(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    if use_compiled("nms", boxes, scores):
        b = boxes.detach().float().contiguous().numpy()
        s = scores.detach().float().contiguous().numpy()
        return torch.from_numpy(C.nms(b, s, iou_threshold, 0, num_threads()))
    return reference.nms(boxes, scores, iou_threshold)


def _nms_op_impl(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """What `torch.ops.yoloseg.nms` runs: the checks of `nms` (same messages), then the kernel."""
    _check_boxes_scores(boxes, scores)
    thr = check_threshold(iou_threshold, "iou_threshold")
    return _nms_impl(boxes.detach().float().contiguous(), scores.detach().float().contiguous(), thr)


_nms_op = torch.library.custom_op("yoloseg::nms", _nms_op_impl, mutates_args=())


@_nms_op.register_fake
def _nms_fake(boxes, scores, iou_threshold):
    _check_boxes_scores(boxes, scores, values=False)
    check_threshold(iou_threshold, "iou_threshold")
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


def _batched_nms_impl(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    if use_compiled("nms", boxes, scores, idxs):
        b = boxes.detach().float().contiguous().numpy()
        s = scores.detach().float().contiguous().numpy()
        i = idxs.detach().to(torch.int64).contiguous().numpy()
        return torch.from_numpy(C.batched_nms(b, s, i, iou_threshold, 0, num_threads()))
    return reference.batched_nms(boxes, scores, idxs, iou_threshold)


def _batched_nms_op_impl(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """What `torch.ops.yoloseg.batched_nms` runs: the checks of `batched_nms` (same messages), then the kernel."""
    _check_batched(boxes, scores, idxs)
    thr = check_threshold(iou_threshold, "iou_threshold")
    b, s = boxes.detach().float().contiguous(), scores.detach().float().contiguous()
    return _batched_nms_impl(b, s, idxs.detach().long().contiguous(), thr)


_batched_nms_op = torch.library.custom_op("yoloseg::batched_nms", _batched_nms_op_impl, mutates_args=())


@_batched_nms_op.register_fake
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _check_batched(boxes, scores, idxs, values=False)
    check_threshold(iou_threshold, "iou_threshold")
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


def _check_boxes_scores(boxes, scores, values=True):
    """Types, shapes, devices; with `values` also the data (NaN/inf boxes, NaN scores)."""
    check_tensor(boxes, "boxes", ndim=2, floating=True)
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    check_tensor(scores, "scores", ndim=1, floating=True)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}")
    check_same_device(boxes=boxes, scores=scores)
    if values:
        check_finite(boxes, "boxes")
        check_finite(scores, "scores", allow_inf=True)


def _check_batched(boxes, scores, idxs, values=True):
    _check_boxes_scores(boxes, scores, values)
    check_tensor(idxs, "idxs", ndim=1)
    if idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},) to match boxes, got {tuple(idxs.shape)}")
    check_same_device(boxes=boxes, idxs=idxs)
    if idxs.is_floating_point():
        if values:
            check_finite(idxs, "idxs")
            if idxs.numel() and not bool((idxs == idxs.round()).all()):
                raise ValueError("idxs must hold whole numbers (class ids)")
    elif idxs.is_complex() or idxs.dtype == torch.bool:
        raise ValueError(f"idxs must be an integer tensor, got {idxs.dtype}")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS over xyxy boxes (N,4) with scores (N,).

    Returns int64 indices of the kept boxes ordered by descending score; equal scores keep the
    lower index first (a stable sort). IoU is computed in float32 and a box is dropped when its IoU
    with a kept higher-ranked box is greater than `iou_threshold`.
    """
    _check_boxes_scores(boxes, scores)
    thr = check_threshold(iou_threshold, "iou_threshold")
    b, s = boxes.detach().float().contiguous(), scores.detach().float().contiguous()
    return (_nms_impl if eager(b, s) else _nms_op)(b, s, thr)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Per-class greedy NMS: boxes only suppress boxes with the same `idxs` value (class id).

    Same ordering as `nms`. `idxs` may be an integer tensor or a float tensor of whole numbers.
    """
    _check_batched(boxes, scores, idxs)
    thr = check_threshold(iou_threshold, "iou_threshold")
    b, s = boxes.detach().float().contiguous(), scores.detach().float().contiguous()
    i = idxs.detach().long().contiguous()
    return (_batched_nms_impl if eager(b, s, i) else _batched_nms_op)(b, s, i, thr)


def check_nms_settings(conf_thres, iou_thres, max_det, classes):
    """The checked ``(conf, iou, classes)`` of a ``non_max_suppression`` call (``classes`` as a list of ints or
    None); ``max_det`` must be a non-negative int. Anything else is a ValueError naming the argument."""
    conf = check_threshold(conf_thres, "conf_thres", 0.0, 1.0)
    iou = check_threshold(iou_thres, "iou_thres", 0.0, 1.0)
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 0:
        raise ValueError(f"max_det must be a non-negative int, got {max_det!r}")
    if classes is not None:
        try:
            classes = [int(c) for c in classes]
        except (TypeError, ValueError):
            raise ValueError(f"classes must be None or a list of class ids, got {classes!r}") from None
    return conf, iou, classes


def non_max_suppression(pred, conf_thres=0.25, iou_thres=0.7, classes=None, agnostic=False, max_det=300, nm=32):
    """Turn raw predictions into detections, per image.

    pred: (B, 4+nc+nm, A) as the model's eval forward returns it (xywh in input pixels, class
    scores after sigmoid, nm mask coefficients), or a list/tuple whose first element is that.
    Per image: best class per anchor, keep scores > conf_thres (and `classes` if given), at most
    30000 candidates by score, xywh -> xyxy, per-class NMS (class-agnostic with `agnostic`), at
    most `max_det` kept. Returns a list of B float32 tensors (n, 6+nm):
    [x1, y1, x2, y2, conf, cls, coeffs...] in input pixels, ordered by descending confidence.
    """
    if isinstance(pred, (list, tuple)):
        if not pred:
            raise ValueError("pred is an empty list/tuple")
        pred = pred[0]
    check_tensor(pred, "pred", ndim=3, floating=True)
    if isinstance(nm, bool) or not isinstance(nm, int) or nm < 0:
        raise ValueError(f"nm must be a non-negative int, got {nm!r}")
    if pred.shape[1] < 5 + nm:
        raise ValueError(f"pred must have shape (B, 4+nc+{nm}, A) with nc >= 1, got {tuple(pred.shape)}")
    conf, iou, classes = check_nms_settings(conf_thres, iou_thres, max_det, classes)
    return reference.suppress_predictions(pred, conf, iou, classes, bool(agnostic), max_det, nm, nms, batched_nms)
