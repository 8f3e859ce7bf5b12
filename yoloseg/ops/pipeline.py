"""The compiled segment postprocess (csrc/pipeline.cpp): one image's raw model output -> detections.

This is the code the C++ API (``csrc/pipeline.h``, ``yoloseg::postprocess``) runs, so a C++ program that
embeds the kernels and ``yoloseg predict`` give the same detections. It does, in one call without the
GIL: best class per anchor, confidence and class filters, at most 30000 candidates by score, xywh ->
xyxy, per-class (or agnostic) NMS, ``max_det``, boxes mapped to the original image, masks decoded into
packed box crops (at the input size, or the original size with ``retina_masks``), empty masks dropped.
The result equals ``non_max_suppression`` + ``scale_boxes`` + ``mask_crops.decode_mask_crops`` bit for bit.

CPU tensors and the compiled ``pipeline``, ``masks`` and ``contours`` families only (:func:`available`).
"""

from __future__ import annotations

import torch

from yoloseg.ops._compiled import C, check_tensor, has_family, num_threads
from yoloseg.ops.nms import check_nms_settings

__all__ = ["available", "segment_postprocess_image"]


def available(*tensors: torch.Tensor) -> bool:
    """True when :func:`segment_postprocess_image` serves these tensors (CPU, compiled kernels built)."""
    return (
        all(has_family(f) for f in ("pipeline", "masks", "contours"))
        and all(t.device.type == "cpu" for t in tensors)
    )


def segment_postprocess_image(
    pred: torch.Tensor, protos: torch.Tensor, input_shape, orig_shape, conf: float = 0.25, iou: float = 0.7,
    classes=None, agnostic: bool = False, max_det: int = 300, retina_masks: bool = False,
) -> dict:
    """One image: ``pred`` (4+nc+nm, A), ``protos`` (nm, h, w) -> ``{"boxes": (n, 6), "masks": MaskCrops | None,
    "mask_boxes": (n, 4)}`` as the predictor's ``segment_postprocess(..., crops=True)`` returns them."""
    from yoloseg.ops.mask_crops import MaskCrops

    check_tensor(pred, "pred", ndim=2, floating=True)
    check_tensor(protos, "protos", ndim=3, floating=True)
    if pred.shape[0] < 5 + protos.shape[0]:
        raise ValueError(f"pred must have shape (4+nc+{protos.shape[0]}, A) with nc >= 1, got {tuple(pred.shape)}")
    conf, iou, classes = check_nms_settings(conf, iou, max_det, classes)
    (ih, iw), (oh, ow) = (int(v) for v in input_shape[-2:]), (int(v) for v in orig_shape[:2])
    p = pred.detach().float().contiguous().numpy()
    m = protos.detach().float().contiguous().numpy()
    boxes, crops, regions, offsets, windows, hw = C.segment_postprocess(
        p, m, ih, iw, oh, ow, conf, iou, classes, bool(agnostic), max_det, bool(retina_masks), num_threads()
    )
    boxes = torch.from_numpy(boxes)
    if not len(boxes):
        return {"boxes": boxes, "masks": None}
    masks = MaskCrops(crops, regions, offsets, windows, hw)
    return {"boxes": boxes, "masks": masks, "mask_boxes": torch.from_numpy(windows).float()}
