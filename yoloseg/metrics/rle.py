"""Run-length encoded masks in the COCO format, computed by the compiled kernels.

An RLE is ``{"size": [h, w], "counts": str}``: the mask read column by column (Fortran order), stored
as alternating run lengths starting with background, compressed to text as the COCO tools do.
``counts`` may also be given as ``bytes`` (pycocotools' output) or as a plain list of run lengths.
Every function gives the same numbers as pycocotools 2.0.11.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "encode", "encode_windows", "decode", "area", "to_bbox", "merge", "from_polygons", "from_boxes", "iou", "counts",
]


def _C():
    from yoloseg import _C

    return _C


def _as_list(rles, arg="rles"):
    single = isinstance(rles, dict)
    items = [rles] if single else list(rles)
    for r in items:
        if not isinstance(r, dict) or "size" not in r or "counts" not in r:
            raise ValueError(f"{arg}: each RLE must be a dict with 'size' and 'counts'")
        size = r["size"]
        if len(size) != 2 or any(int(v) != v or v < 0 for v in size):
            raise ValueError(f"{arg}: RLE 'size' must be [h, w] with non-negative integers, got {size!r}")
    return items, single


def encode(mask) -> list[dict]:
    """Binary mask(s) (H, W) or (N, H, W), bool or integer (nonzero = foreground) -> list of RLEs."""
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask must have shape (H, W) or (N, H, W), got {m.shape}")
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"mask must be bool or integer, got {m.dtype}")
    if m.ndim == 2:
        m = m[None]
    if m.dtype != np.uint8:
        m = m != 0
    return _C().rle_encode(m.view(np.uint8))


def encode_windows(windows, regions, h: int, w: int) -> list[dict]:
    """RLEs of (h, w) masks that are zero outside their regions, reading only the regions.

    windows: one 2-D bool/uint8 array per mask, the pixels of its region; regions: (N, 4) int
    [x0, y0, x1, y1) in mask pixels (an empty region gives an empty mask; its window is ignored).
    Equal to ``encode`` of the full masks.
    """
    regions = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
    if len(windows) != len(regions):
        raise ValueError(f"windows: got {len(windows)} windows for {len(regions)} regions")
    parts, offsets, total = [], np.zeros(len(regions), np.int64), 0
    for i, (win, (x0, y0, x1, y1)) in enumerate(zip(windows, regions.tolist())):
        offsets[i] = total
        if x1 <= x0 or y1 <= y0:
            continue
        win = np.asarray(win)
        if win.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"windows[{i}]: shape {win.shape} does not match region {(x0, y0, x1, y1)}")
        parts.append((win != 0).view(np.uint8).ravel() if win.dtype != np.uint8 else win.ravel())
        total += win.size
    crops = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    from yoloseg.ops._compiled import num_threads

    return _C().rle_encode_windows(crops, regions, offsets, int(h), int(w), num_threads())


def decode(rles) -> np.ndarray:
    """RLE -> (H, W) uint8 mask; list of RLEs (one size) -> (N, H, W)."""
    items, single = _as_list(rles)
    out = _C().rle_decode(items)
    return out[0] if single else out


def area(rles):
    """Foreground pixel count: int for one RLE, int64 array for a list."""
    items, single = _as_list(rles)
    a = _C().rle_area(items)
    return int(a[0]) if single else a


def to_bbox(rles) -> np.ndarray:
    """Tight box [x, y, w, h] (float64): (4,) for one RLE, (N, 4) for a list."""
    items, single = _as_list(rles)
    b = _C().rle_to_bbox(items)
    return b[0] if single else b


def merge(rles, intersect: bool = False) -> dict:
    """Union (or intersection) of RLEs of one size."""
    items, _ = _as_list(rles)
    return _C().rle_merge(items, bool(intersect))


def counts(rles):
    """Uncompressed run lengths: a list for one RLE, a list of lists for several."""
    items, single = _as_list(rles)
    c = _C().rle_counts(items)
    return c[0] if single else c


def _polygon_parts(polys, arg):
    if isinstance(polys, np.ndarray) and polys.ndim == 2 and polys.shape[1] == 2:
        polys = [polys]
    parts = []
    for p in polys:
        a = np.asarray(p, dtype=np.float64).reshape(-1)
        if not np.isfinite(a).all():
            raise ValueError(f"{arg}: polygon coordinates must be finite")
        parts.append(a)
    return parts


def from_polygons(polys, h: int, w: int) -> dict:
    """COCO polygon segmentation (a list of parts, each flat [x0, y0, x1, y1, ...] or (K, 2)) -> one
    RLE of size (h, w), the union of the parts, rasterised like the COCO tools (``annToRLE``). Parts
    with fewer than 3 points rasterise to little or nothing (pycocotools rejects some such lists);
    an empty list gives an empty mask."""
    h, w = int(h), int(w)
    if h < 0 or w < 0:
        raise ValueError(f"h and w must be non-negative, got {h}, {w}")
    parts = _polygon_parts(polys, "polys")
    if not parts:
        return {"size": [h, w], "counts": _C().rle_encode(np.zeros((1, h, w), np.uint8))[0]["counts"]}
    C = _C()
    rles = C.rle_from_polygons(parts, h, w)
    return rles[0] if len(rles) == 1 else C.rle_merge(rles, False)


def from_boxes(boxes, h: int, w: int) -> list[dict]:
    """Boxes (N, 4) [x, y, w, h] -> filled RLEs of size (h, w)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite")
    return _C().rle_from_boxes(b, int(h), int(w))


def iou(dt, gt, iscrowd) -> np.ndarray:
    """IoU (D, G) between detections and ground truth, both RLE lists or both (N, 4) [x, y, w, h] boxes.
    For a crowd ground truth (iscrowd[g] true) the union is the detection's area. Masks of different
    sizes give -1 where their boxes overlap, as in the COCO tools."""
    crowd = np.asarray(iscrowd, dtype=np.int64).reshape(-1) != 0
    is_boxes = isinstance(dt, np.ndarray) or (len(dt) and not isinstance(dt[0], dict))
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)), dtype=np.float64)
    if len(crowd) != len(gt):
        raise ValueError(f"iscrowd has {len(crowd)} entries for {len(gt)} ground-truth objects")
    C = _C()
    if is_boxes:
        d = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
        g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        if not (np.isfinite(d).all() and np.isfinite(g).all()):
            raise ValueError("boxes must be finite")
        return C.box_iou_xywh(d, g, crowd.astype(np.uint8))
    d, _ = _as_list(dt, "dt")
    g, _ = _as_list(gt, "gt")
    return C.rle_iou(d, g, crowd.astype(np.uint8))
