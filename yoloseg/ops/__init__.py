"""yoloseg.ops: the kernels' Python face.

Every function checks its inputs (wrong type, dtype, shape, device, NaN boxes -> ValueError naming
the argument) and runs the compiled kernel from `yoloseg._C` for CPU tensors, or the pure-torch twin
in `yoloseg.ops.reference` (same signatures) for other devices. See docs/kernels.md.
"""

from yoloseg.ops.boxes import box_iou, clip_boxes, letterbox_params, mask_iou, scale_boxes, xywh2xyxy, xyxy2xywh
from yoloseg.ops.masks import process_mask, process_mask_native
from yoloseg.ops.nms import batched_nms, nms, non_max_suppression
from yoloseg.ops.polygons import masks_to_polygons

__all__ = [
    "nms",
    "batched_nms",
    "non_max_suppression",
    "process_mask",
    "process_mask_native",
    "masks_to_polygons",
    "scale_boxes",
    "clip_boxes",
    "letterbox_params",
    "xywh2xyxy",
    "xyxy2xywh",
    "box_iou",
    "mask_iou",
]
