"""Mask -> polygon face.

Each mask is traced on the window of its nonzero pixels only. The compiled tracer (csrc/contours.cpp)
follows the outer borders the way cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE) does, for
all masks in parallel and without the GIL; without the compiled family, cv2.findContours runs on each
window (grown by one pixel so it sees the same neighbourhood as on the full image). The reference
traces the full image with cv2; all three give the same points in the same order.

Strategies: "largest" keeps the outer contour with the largest area (cv2.contourArea; ties go to
the contour with more points, then to the first one found), "all" joins every outer contour,
in OpenCV's order, into one polygon (reference.join_contours). Coordinates are (x, y) pixel
indices of the mask's own grid; scaling to original-image pixels is the caller's job.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from yoloseg.ops import reference
from yoloseg.ops._compiled import C, has_family, num_threads

__all__ = ["masks_to_polygons", "mask_windows", "polygons_flat", "split_points"]

STRATEGIES = ("largest", "all")


def _as_uint8(masks) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        if masks.is_floating_point() or masks.is_complex():
            raise ValueError(f"masks must be a bool or integer tensor, got {masks.dtype}")
        arr = masks.detach().cpu()
        if arr.dtype == torch.bool:
            arr = arr.view(torch.uint8)  # zero-copy: bool storage is 0/1 bytes
        elif arr.dtype != torch.uint8:
            arr = (arr != 0).view(torch.uint8)
        arr = arr.numpy()
    elif isinstance(masks, np.ndarray):
        if masks.dtype.kind not in "biu":
            raise ValueError(f"masks must be a bool or integer array, got {masks.dtype}")
        if masks.dtype == np.uint8:
            arr = masks
        elif masks.dtype == np.bool_:
            arr = masks.view(np.uint8)  # zero-copy, as for bool tensors
        else:
            arr = (masks != 0).view(np.uint8)
    else:
        raise ValueError(f"masks must be a torch.Tensor or numpy.ndarray, got {type(masks).__name__}")
    if arr.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def _windows(arr: np.ndarray) -> np.ndarray:
    """(N, 4) int64 [x0, y0, x1, y1) of the nonzero pixels of each mask (x1 = 0 when empty)."""
    if has_family("polygons"):
        return C.mask_windows(arr, num_threads())
    n = arr.shape[0]
    out = np.zeros((n, 4), dtype=np.int64)
    rows, cols = arr.any(2), arr.any(1)
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size:
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


def _hint_windows(boxes, n, h, w) -> np.ndarray:
    """Windows from boxes known to contain every nonzero pixel: [floor(x1), floor(y1), ceil(x2), ceil(y2))."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().double().numpy()
    elif isinstance(boxes, np.ndarray):
        boxes = boxes.astype(np.float64)
    else:
        raise ValueError(f"boxes must be a torch.Tensor or numpy.ndarray, got {type(boxes).__name__}")
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) to match masks, got {tuple(boxes.shape)}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes contains NaN or infinite values")
    lo = np.floor(boxes[:, :2]).clip(0, [w, h])
    hi = np.ceil(boxes[:, 2:]).clip(0, [w, h])
    wins = np.concatenate([lo, hi], 1).astype(np.int64)
    empty = (wins[:, 2] <= wins[:, 0]) | (wins[:, 3] <= wins[:, 1])
    wins[empty] = 0
    return wins


def _within(arr: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Windows of the nonzero pixels inside each bounds window; only those pixels are read."""
    if has_family("polygons") and hasattr(C, "mask_windows_within"):
        return C.mask_windows_within(arr, bounds, num_threads())
    out = np.zeros_like(bounds)
    for i, (x0, y0, x1, y1) in enumerate(bounds.tolist()):
        sub = arr[i, y0:y1, x0:x1]
        ys, xs = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
        if ys.size:
            out[i] = (x0 + xs[0], y0 + ys[0], x0 + xs[-1] + 1, y0 + ys[-1] + 1)
    return out


def mask_windows(masks, boxes=None) -> np.ndarray:
    """(N, 4) int64 [x0, y0, x1, y1) of the nonzero pixels of each mask (N, H, W); zeros when empty.

    With boxes (N, 4) xyxy in mask pixels (the same hint as `masks_to_polygons` takes), only the
    pixels inside [floor(x1), ceil(x2)) x [floor(y1), ceil(y2)) are read; pixels outside are ignored.
    """
    arr = _as_uint8(masks)
    n, h, w = arr.shape
    return _windows(arr) if boxes is None else _within(arr, _hint_windows(boxes, n, h, w))


def _closest(a, b):
    return C.closest_vertices(a, b)


def masks_to_polygons(masks, strategy="largest", boxes=None):
    """Outer contours of each mask (N, H, W) -> list of N float32 arrays (K, 2) of (x, y) points.

    An empty mask gives a (0, 2) array. See the module docstring for the strategies.
    boxes: optional (N, 4) xyxy in mask pixels, each known to contain every nonzero pixel of its mask
    (e.g. the boxes `process_mask` cropped the masks to). Then no pixel outside them is read: the
    nonzero window is found inside each box only; pixels outside a hint box are ignored.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if has_family("contours"):
        pts, ends = polygons_flat(masks, strategy, boxes)
        return split_points(pts, ends)
    arr = _as_uint8(masks)
    n, h, w = arr.shape
    wins = _windows(arr) if boxes is None else _within(arr, _hint_windows(boxes, n, h, w))
    closest = _closest if has_family("polygons") and hasattr(C, "closest_vertices") else reference.closest_vertices
    out = []
    find, mode, approx = cv2.findContours, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    empty = (wins[:, 2] <= wins[:, 0]).tolist()
    grown = np.concatenate([np.maximum(wins[:, :2] - 1, 0), np.minimum(wins[:, 2:] + 1, [w, h])], 1)
    for i, (x0, y0, x1, y1) in enumerate(grown.tolist()):
        if empty[i]:
            out.append(np.zeros((0, 2), dtype=np.float32))
            continue
        # A strided view is fine: OpenCV reads rows through their stride, no copy needed.
        contours = find(arr[i, y0:y1, x0:x1], mode, approx, offset=(x0, y0))[0]
        if len(contours) == 1:  # the common case: one part, nothing to choose or join
            out.append(contours[0].reshape(-1, 2).astype(np.float32))
        else:
            out.append(reference.select_contours(contours, strategy, closest))
    return out


def polygons_flat(masks, strategy="largest", boxes=None) -> tuple[np.ndarray, np.ndarray]:
    """`masks_to_polygons` as one float32 (K, 2) array of every polygon's points and the (N,) int64
    cumulative point counts (polygon i is ``pts[ends[i-1]:ends[i]]``), for callers that transform all
    points at once."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    arr = _as_uint8(masks)
    n, h, w = arr.shape
    if has_family("contours"):
        # The tracer frames each window with zeros, so any window that holds every set pixel gives the
        # same contours as the tight one: the box hint is used as it is, without a scan.
        wins = _windows(arr) if boxes is None else _hint_windows(boxes, n, h, w)
        pts, ends = C.mask_polygons(arr, wins, strategy, num_threads())
        return pts.astype(np.float32), ends
    polys = masks_to_polygons(arr, strategy, boxes)
    ends = np.cumsum([len(p) for p in polys], dtype=np.int64)
    pts = np.concatenate(polys) if polys else np.zeros((0, 2), np.float32)
    return pts.astype(np.float32, copy=False), ends


def split_points(pts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Polygons (views of ``pts``) from the cumulative point counts `polygons_flat` returns."""
    ends = ends.tolist()
    return [pts[a:b] for a, b in zip([0] + ends[:-1], ends)]
