"""Mask decoding face: protos x coefficients -> binary masks cropped to their boxes.

The compiled kernel (csrc/masks.cpp) computes only the pixels inside each box: it evaluates the
low-resolution logits for the proto pixels the box touches, bilinearly samples them at the
output pixels of the box, thresholds at 0 (sigmoid > 0.5) and writes uint8 straight into the
result, one mask at a time, so no (N, H, W) float buffer ever exists. The pure-torch reference
does the same computation the straightforward way (full matmul, F.interpolate, crop).
"""

from __future__ import annotations

import torch

from yoloseg.ops import reference
from yoloseg.ops._compiled import C, check_finite, check_same_device, check_tensor, eager, num_threads, use_compiled

__all__ = ["process_mask", "process_mask_native"]

MAX_SIDE = 1 << 24  # the kernels' largest image side (kMaxSide in csrc/errors.h)


def _decode_compiled(protos, coeffs, boxes, out_h, out_w, plan):
    """Run the kernel; plan = (f, top, left, content_h, content_w) of the resampling chain."""
    p = protos.detach().float().contiguous().numpy()
    c = coeffs.detach().float().contiguous().numpy()
    b = boxes.detach().float().contiguous().numpy()
    out = C.decode_masks(p, c, b, out_h, out_w, *plan, num_threads())
    return torch.from_numpy(out).view(torch.bool)


def _process_mask_impl(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                     upsample: bool) -> torch.Tensor:
    if use_compiled("masks", protos, coeffs, boxes):
        _, mh, mw = protos.shape
        if upsample:
            return _decode_compiled(protos, coeffs, boxes, height, width, (1, 0, 0, mh, mw))
        scaled = reference.scale_boxes_to_protos(boxes, (mh, mw), (height, width))
        return _decode_compiled(protos, coeffs, scaled, mh, mw, (1, 0, 0, mh, mw))
    return reference.process_mask(protos, coeffs, boxes, (height, width), upsample)


def _process_mask_op_impl(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                          upsample: bool) -> torch.Tensor:
    """What `torch.ops.yoloseg.process_mask` runs: the checks of `process_mask` (same messages), then the kernel."""
    _check_inputs(protos, coeffs, boxes)
    h, w = _check_shape((height, width))
    return _process_mask_impl(protos.detach(), coeffs.detach(), boxes.detach(), h, w, bool(upsample))


_process_mask_op = torch.library.custom_op("yoloseg::process_mask", _process_mask_op_impl, mutates_args=())


@_process_mask_op.register_fake
def _process_mask_fake(protos, coeffs, boxes, height, width, upsample):
    _check_inputs(protos, coeffs, boxes, values=False)
    _check_shape((height, width))
    hw = (height, width) if upsample else tuple(protos.shape[1:])
    return protos.new_empty((coeffs.shape[0], *hw), dtype=torch.bool)


def _process_mask_native_impl(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, height: int,
                            width: int) -> torch.Tensor:
    if use_compiled("masks", protos, coeffs, boxes):
        plan = reference.native_plan(tuple(protos.shape[1:]), (height, width))
        return _decode_compiled(protos, coeffs, boxes, height, width, plan)
    return reference.process_mask_native(protos, coeffs, boxes, (height, width))


def _process_mask_native_op_impl(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, height: int,
                                 width: int) -> torch.Tensor:
    """What `torch.ops.yoloseg.process_mask_native` runs: the checks of `process_mask_native`, then the kernel."""
    _check_inputs(protos, coeffs, boxes)
    h, w = _check_shape((height, width))
    return _process_mask_native_impl(protos.detach(), coeffs.detach(), boxes.detach(), h, w)


_process_mask_native_op = torch.library.custom_op(
    "yoloseg::process_mask_native", _process_mask_native_op_impl, mutates_args=()
)


@_process_mask_native_op.register_fake
def _process_mask_native_fake(protos, coeffs, boxes, height, width):
    _check_inputs(protos, coeffs, boxes, values=False)
    _check_shape((height, width))
    return protos.new_empty((coeffs.shape[0], height, width), dtype=torch.bool)


def _check_shape(shape, name="shape"):
    try:
        h, w = (int(v) for v in tuple(shape)[:2])
        ok = len(tuple(shape)) >= 2 and all(int(v) == v for v in tuple(shape)[:2])
    except (TypeError, ValueError):
        ok = False
    if not ok or h <= 0 or w <= 0 or h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{name} must be a (height, width) pair of positive ints (at most {MAX_SIDE}), got {shape!r}")
    return h, w


def _check_inputs(protos, coeffs, boxes, values=True):
    """Types, shapes, devices; with `values` also the data (NaN/inf boxes and coefficients)."""
    check_tensor(protos, "protos", ndim=3, floating=True)
    check_tensor(coeffs, "coeffs", ndim=2, floating=True)
    check_tensor(boxes, "boxes", ndim=2, floating=True)
    if coeffs.shape[1] != protos.shape[0]:
        raise ValueError(f"coeffs must have shape (n, {protos.shape[0]}) to match protos, got {tuple(coeffs.shape)}")
    if boxes.shape != (coeffs.shape[0], 4):
        raise ValueError(f"boxes must have shape ({coeffs.shape[0]}, 4) to match coeffs, got {tuple(boxes.shape)}")
    if protos.shape[1] <= 0 or protos.shape[2] <= 0:
        raise ValueError(f"protos must have a non-empty (h, w), got {tuple(protos.shape)}")
    check_same_device(protos=protos, coeffs=coeffs, boxes=boxes)
    if values:
        check_finite(boxes, "boxes")
        check_finite(coeffs, "coeffs")


def process_mask(protos, coeffs, boxes, shape, upsample=True):
    """Binary masks (n, H, W) bool at the network input size `shape` = (H, W), cropped to `boxes`.

    protos (nm, h, w) raw prototypes, coeffs (n, nm), boxes (n, 4) xyxy in input pixels. The
    logit map coeffs @ protos is bilinearly upsampled (align_corners=False) to (H, W), thresholded
    at > 0 and cropped: pixel (x, y) survives when x1 <= x < x2 and y1 <= y < y2. With
    upsample=False the result stays at proto resolution (h, w), boxes scaled accordingly.
    """
    _check_inputs(protos, coeffs, boxes)
    h, w = _check_shape(shape)
    p, c, b = protos.detach(), coeffs.detach(), boxes.detach()
    return (_process_mask_impl if eager(p, c, b) else _process_mask_op)(p, c, b, h, w, bool(upsample))


def process_mask_native(protos, coeffs, boxes, shape):
    """Binary masks (n, H, W) bool straight at the original image size `shape` = (H, W).

    boxes (n, 4) xyxy in original-image pixels. protos come from an input letterboxed (centred
    padding) from `shape` to 4x the proto size; the logit map is upsampled by an integer factor
    that puts the padding on whole pixels, the padding is cut away, the content is bilinearly
    resized to (H, W), thresholded at > 0 and cropped to the boxes.
    """
    _check_inputs(protos, coeffs, boxes)
    h, w = _check_shape(shape)
    p, c, b = protos.detach(), coeffs.detach(), boxes.detach()
    return (_process_mask_native_impl if eager(p, c, b) else _process_mask_native_op)(p, c, b, h, w)
