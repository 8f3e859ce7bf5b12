"""Pure-torch twins of the compiled kernels (same signatures as `yoloseg.ops`).

They do the work the straightforward way and are the oracle the compiled kernels are tested
against, and the path for tensors on devices the compiled module does not serve (e.g. CUDA).
Inputs are assumed valid: `yoloseg.ops` checks them before dispatching here.

Shared semantics (kept identical in csrc/):
- NMS IoU is float32 `inter / (area_i + area_j - inter)`; a box is dropped when its IoU with a kept,
  higher-ranked box is `> float32(iou_threshold)`. Rank = descending score, ties by lower index.
- batched NMS: boxes only compete within their class; the result is in rank order.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from yoloseg.ops.boxes import box_iou, clip_boxes, mask_iou, scale_boxes, xywh2xyxy, xyxy2xywh

__all__ = [
    "nms",
    "batched_nms",
    "non_max_suppression",
    "process_mask",
    "process_mask_native",
    "masks_to_polygons",
    "scale_boxes",
    "clip_boxes",
    "xywh2xyxy",
    "xyxy2xywh",
    "box_iou",
    "mask_iou",
]


def rank_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score, equal scores by ascending index."""
    return torch.sort(scores, descending=True, stable=True).indices


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS; returns int64 indices of kept boxes in rank order."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = rank_order(scores)
    b = boxes.float()[order]
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    thr = torch.tensor(iou_threshold, dtype=torch.float32, device=boxes.device)
    remaining = torch.arange(n, device=boxes.device)
    kept = []
    while remaining.numel():
        i = remaining[0]
        kept.append(i)
        rest = remaining[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        remaining = rest[~(iou > thr)]
    return order[torch.stack(kept)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Per-class greedy NMS (one `nms` call per class); kept indices in rank order."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    kept = []
    for c in torch.unique(idxs):
        members = torch.nonzero(idxs == c).squeeze(1)
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept).sort().values
    return keep[rank_order(scores[keep])]


def non_max_suppression(pred, conf_thres=0.25, iou_thres=0.7, classes=None, agnostic=False, max_det=300, nm=32):
    """Per image: best class per anchor, confidence filter, at most 30000 candidates by score,
    xywh -> xyxy, per-class (or agnostic) NMS, at most max_det rows of [x1,y1,x2,y2,conf,cls,coeffs]."""
    return suppress_predictions(pred, conf_thres, iou_thres, classes, agnostic, max_det, nm, nms, batched_nms)


MAX_NMS_CANDIDATES = 30000


def suppress_predictions(pred, conf_thres, iou_thres, classes, agnostic, max_det, nm, nms_fn, batched_fn):
    """The body of non_max_suppression with the NMS functions as parameters (shared with yoloseg.ops)."""
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    nc = pred.shape[1] - 4 - nm
    wanted = None if classes is None else torch.as_tensor(list(classes), dtype=torch.int64, device=pred.device)
    out = []
    for x in pred:
        conf, cls = x[4 : 4 + nc].max(0)
        cand = conf > conf_thres
        if wanted is not None:
            cand &= torch.isin(cls, wanted)
        idx = torch.nonzero(cand).squeeze(1)
        if idx.numel() > MAX_NMS_CANDIDATES:
            idx = idx[rank_order(conf[idx])[:MAX_NMS_CANDIDATES]]
        rows = x[:, idx].T.float()
        box = xywh2xyxy(rows[:, :4])
        score = conf[idx].float()
        keep = nms_fn(box, score, iou_thres) if agnostic else batched_fn(box, score, cls[idx], iou_thres)
        keep = keep[:max_det]
        out.append(torch.cat([box[keep], score[keep, None], cls[idx][keep, None].float(), rows[keep, 4 + nc :]], 1))
    return out


def _crop(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero every pixel outside its box: column x kept when x1 <= x < x2, row y when y1 <= y < y2."""
    n, h, w = masks.shape
    b = boxes.float()
    cols = torch.arange(w, device=masks.device, dtype=torch.float32)
    rows = torch.arange(h, device=masks.device, dtype=torch.float32)
    keep_c = (cols[None] >= b[:, 0:1]) & (cols[None] < b[:, 2:3])
    keep_r = (rows[None] >= b[:, 1:2]) & (rows[None] < b[:, 3:4])
    return masks & keep_r[:, :, None] & keep_c[:, None, :]


def process_mask(protos, coeffs, boxes, shape, upsample=True):
    """Masks at the network input size (or proto size when upsample=False), cropped to their boxes.

    logits = coeffs @ protos at proto resolution, bilinear upsample (align_corners=False) of the
    whole map to `shape`, threshold > 0, then crop to the box (input pixels).
    """
    nm, mh, mw = protos.shape
    n = coeffs.shape[0]
    out_hw = (int(shape[0]), int(shape[1])) if upsample else (mh, mw)
    if n == 0:
        return torch.zeros((0, *out_hw), dtype=torch.bool, device=protos.device)
    logits = (coeffs.float() @ protos.float().reshape(nm, -1)).reshape(n, mh, mw)
    if upsample:
        logits = F.interpolate(logits[None], size=out_hw, mode="bilinear", align_corners=False)[0]
    else:
        boxes = scale_boxes_to_protos(boxes, (mh, mw), shape)
    return _crop(logits > 0, boxes)


def scale_boxes_to_protos(boxes, proto_hw, shape):
    """xyxy boxes in input pixels -> proto pixels (used by process_mask(upsample=False))."""
    mh, mw = proto_hw
    ratios = torch.tensor(
        [mw / shape[1], mh / shape[0], mw / shape[1], mh / shape[0]], dtype=torch.float32, device=boxes.device
    )
    return boxes.float() * ratios


def native_plan(proto_hw, shape):
    """How protos of an input letterboxed from `shape` are brought back to `shape`.

    Returns (f, top, left, content_h, content_w): protos are first upsampled by the integer factor
    f (1, 2 or 4: the smallest that puts the letterbox padding on whole pixels, the proto stride
    being 4), the content window [top:top+content_h, left:left+content_w] is cut out and
    bilinearly resized to `shape`.
    """
    mh, mw = proto_hw
    h, w = int(shape[0]), int(shape[1])
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    uh, uw = f * mh, f * mw
    if (uh, uw) == (h, w):  # nothing to cut or resize
        return f, 0, 0, uh, uw
    g = min(uh / h, uw / w)
    ch, cw = max(round(h * g), 1), max(round(w * g), 1)
    top, left = round((uh - ch) / 2 - 0.1), round((uw - cw) / 2 - 0.1)
    return f, top, left, ch, cw


def process_mask_native(protos, coeffs, boxes, shape):
    """Masks straight at the original image size `shape` (h, w); boxes in original pixels.

    logits at proto resolution, upsample by f, cut the letterbox content, bilinear resize to
    `shape`, threshold > 0, crop to the box. Chunked so the float intermediate stays bounded.
    """
    nm, mh, mw = protos.shape
    h, w = int(shape[0]), int(shape[1])
    n = coeffs.shape[0]
    out = torch.zeros((n, h, w), dtype=torch.bool, device=protos.device)
    if n == 0:
        return out
    f, top, left, ch, cw = native_plan((mh, mw), shape)
    logits = (coeffs.float() @ protos.float().reshape(nm, -1)).reshape(1, n, mh, mw)
    step = max(1, 16_000_000 // (h * w + f * f * mh * mw))
    for s in range(0, n, step):
        part = logits[:, s : s + step]
        if f > 1:
            part = F.interpolate(part, scale_factor=f, mode="bilinear", align_corners=False)
        if (part.shape[2], part.shape[3]) != (h, w):
            part = part[:, :, top : top + ch, left : left + cw]
            part = F.interpolate(part, size=(h, w), mode="bilinear", align_corners=False)
        out[s : s + step] = part[0] > 0
    return _crop(out, boxes)


def masks_to_polygons(masks, strategy="largest"):
    """Outer contours of each mask, full-image cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE).

    "largest": the contour of largest area (cv2.contourArea; ties: more points, then first found);
    "all": every contour, in OpenCV's order, joined into one polygon (see `join_contours`).
    Returns one (K, 2) float32 array of (x, y) pixel coordinates per mask ((0, 2) for an empty mask).
    """
    arr = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    arr = np.ascontiguousarray(arr).view(np.uint8) if arr.dtype == bool else np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        arr = (arr != 0).view(np.uint8)
    out = []
    for m in arr:
        contours = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        out.append(select_contours(contours, strategy))
    return out


def closest_vertices(a, b):
    """(i, j) minimising |a[i] - b[j]|^2, first in row-major order on ties."""
    d = ((a[:, None, :].astype(np.int64) - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    return int(i), int(j)


def join_contours(parts, closest=closest_vertices):
    """One polygon from several contours: each contour is linked to the next one (in the given order)
    at their closest vertices by an edge walked there and back, so filling the polygon covers every
    part and the links add no area (the multi-part convention of YOLO-seg label files)."""
    poly = parts[0]
    start, rot = 0, 0  # where the previous contour begins in `poly`, and the vertex it begins with
    for prev, part in zip(parts[:-1], parts[1:]):
        a, b = closest(prev, part)
        pos = start + (int(a) - rot) % len(prev)  # position of prev[a] in poly
        rolled = np.roll(part, -int(b), axis=0)
        poly = np.concatenate([poly[: pos + 1], rolled, rolled[:1], poly[pos:]])
        start, rot = pos + 1, int(b)
    return poly


def select_contours(contours, strategy, closest=closest_vertices):
    """Apply the polygon strategy to a cv2.findContours result."""
    if not contours:
        return np.zeros((0, 2), dtype=np.float32)
    if strategy == "all":
        return join_contours([c.reshape(-1, 2) for c in contours], closest).astype(np.float32)
    best, best_key = None, None
    for c in contours:
        key = (cv2.contourArea(c), len(c))
        if best_key is None or key > best_key:
            best, best_key = c, key
    return best.reshape(-1, 2).astype(np.float32)
