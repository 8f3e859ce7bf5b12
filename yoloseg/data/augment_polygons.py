"""A batch of polygons in one flat array, with the geometry the augmentations need.

Points are pixel coordinates in the edge convention (pixel ``i`` spans ``[i, i+1]``), which is what
normalized YOLO-seg labels times the image size give. All polygons of an image share one (P, 2) float32
array; ``offs`` (n+1,) marks where each polygon starts, so affine maps, flips and box computations are
single vectorized operations.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["Polygons", "rasterize", "rasterize_overlap"]


class Polygons:
    def __init__(self, pts: np.ndarray | None = None, offs: np.ndarray | None = None):
        self.pts = np.zeros((0, 2), np.float32) if pts is None else np.ascontiguousarray(pts, np.float32)
        self.offs = np.zeros(1, np.int64) if offs is None else np.asarray(offs, np.int64)

    @classmethod
    def from_list(cls, polys, scale=(1.0, 1.0)) -> "Polygons":
        if not len(polys):
            return cls()
        counts = [len(p) for p in polys]
        pts = np.concatenate(polys).astype(np.float32) * np.asarray(scale, np.float32)
        return cls(pts, np.concatenate([[0], np.cumsum(counts)]))

    @classmethod
    def concat(cls, items) -> "Polygons":
        items = [p for p in items if len(p)]
        if not items:
            return cls()
        pts = np.concatenate([p.pts for p in items])
        offs, base = [np.zeros(1, np.int64)], 0
        for p in items:
            offs.append(p.offs[1:] + base)
            base += p.offs[-1]
        return cls(pts, np.concatenate(offs))

    def __len__(self) -> int:
        return len(self.offs) - 1

    def copy(self) -> "Polygons":
        return Polygons(self.pts.copy(), self.offs.copy())

    def to_list(self) -> list:
        return [self.pts[a:b] for a, b in zip(self.offs[:-1], self.offs[1:])]

    def subset(self, keep) -> "Polygons":
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        return Polygons.from_list([self.pts[self.offs[i] : self.offs[i + 1]] for i in keep]) if len(keep) else Polygons()

    # ---------------------------------------------------------------- geometry

    def boxes(self) -> np.ndarray:
        """(n, 4) xyxy bounding boxes."""
        if not len(self):
            return np.zeros((0, 4), np.float32)
        starts = self.offs[:-1]
        mn = np.minimum.reduceat(self.pts, starts, axis=0)
        mx = np.maximum.reduceat(self.pts, starts, axis=0)
        return np.concatenate([mn, mx], 1).astype(np.float32)

    def areas(self) -> np.ndarray:
        """(n,) absolute shoelace areas."""
        if not len(self):
            return np.zeros(0, np.float32)
        idx = np.arange(len(self.pts))
        nxt = idx + 1
        nxt[self.offs[1:] - 1] = self.offs[:-1]
        x, y = self.pts[:, 0].astype(np.float64), self.pts[:, 1].astype(np.float64)
        cross = x * y[nxt] - x[nxt] * y
        return np.abs(np.add.reduceat(cross, self.offs[:-1]) * 0.5).astype(np.float32)

    def scale_translate(self, sx, sy, tx=0.0, ty=0.0) -> "Polygons":
        pts = self.pts * np.asarray([sx, sy], np.float32) + np.asarray([tx, ty], np.float32)
        return Polygons(pts, self.offs)

    def flip_lr(self, w) -> "Polygons":
        pts = self.pts.copy()
        pts[:, 0] = w - pts[:, 0]
        return Polygons(pts, self.offs)

    def flip_ud(self, h) -> "Polygons":
        pts = self.pts.copy()
        pts[:, 1] = h - pts[:, 1]
        return Polygons(pts, self.offs)

    def transform(self, M: np.ndarray) -> "Polygons":
        """Apply a 3x3 projective (or affine) matrix."""
        if not len(self.pts):
            return Polygons(self.pts, self.offs)
        xy = self.pts.astype(np.float64) @ M[:2, :2].T + M[:2, 2]
        if M[2, 0] or M[2, 1] or M[2, 2] != 1:
            z = self.pts.astype(np.float64) @ M[2, :2] + M[2, 2]
            xy = xy / np.where(np.abs(z) < 1e-9, 1e-9, z)[:, None]
        return Polygons(xy.astype(np.float32), self.offs)

    def clip(self, w, h):
        """Clip every polygon to the rectangle [0, w] x [0, h] (exact, Sutherland-Hodgman).

        Returns ``(clipped, keep)`` where ``keep`` indexes the input polygons that still have an area.
        """
        n = len(self)
        if not n:
            return Polygons(), np.zeros(0, np.int64)
        p = self.pts
        outside = (p[:, 0] < 0) | (p[:, 0] > w) | (p[:, 1] < 0) | (p[:, 1] > h)
        any_out = np.logical_or.reduceat(outside, self.offs[:-1])
        if not any_out.any():
            return Polygons(self.pts, self.offs), np.arange(n)
        out, keep = [], []
        for i in range(n):
            poly = p[self.offs[i] : self.offs[i + 1]]
            if any_out[i]:
                poly = _clip_rect(poly, w, h)
                if len(poly) < 3:
                    continue
            out.append(poly)
            keep.append(i)
        return Polygons.from_list(out), np.asarray(keep, np.int64)


def _clip_plane(poly: np.ndarray, axis: int, value: float, keep_below: bool) -> np.ndarray:
    if not len(poly):
        return poly
    c = poly[:, axis]
    inside = c <= value if keep_below else c >= value
    if inside.all():
        return poly
    if not inside.any():
        return poly[:0]
    nxt = np.roll(poly, -1, axis=0)
    in_next = np.roll(inside, -1)
    cross = inside != in_next
    denom = nxt[:, axis] - c
    t = np.where(cross, (value - c) / np.where(denom == 0, 1, denom), 0)
    hit = poly + t[:, None] * (nxt - poly)
    hit[:, axis] = value
    # per edge (p -> q): emit the crossing point (if any), then q (if inside)
    both = np.stack([hit, nxt], 1)
    mask = np.stack([cross, in_next], 1)
    return both[mask].astype(np.float32)


def _clip_rect(poly: np.ndarray, w: float, h: float) -> np.ndarray:
    poly = _clip_plane(poly, 0, 0.0, False)
    poly = _clip_plane(poly, 0, float(w), True)
    poly = _clip_plane(poly, 1, 0.0, False)
    return _clip_plane(poly, 1, float(h), True)


def _to_fixed(pts: np.ndarray, ratio: int) -> np.ndarray:
    # edge-convention pixels -> pixel-centre coordinates of the 1/ratio grid, 4 fractional bits
    return np.round((pts / ratio - 0.5) * 16).astype(np.int32)


def rasterize(polys: Polygons, shape, ratio: int = 4) -> np.ndarray:
    """(n, H/ratio, W/ratio) uint8 binary masks, one per polygon; ``shape`` is the image (H, W)."""
    h, w = shape[0] // ratio, shape[1] // ratio
    out = np.zeros((len(polys), h, w), np.uint8)
    fixed = _to_fixed(polys.pts, ratio)
    for i, (a, b) in enumerate(zip(polys.offs[:-1], polys.offs[1:])):
        cv2.fillPoly(out[i], [fixed[a:b]], 1, lineType=cv2.LINE_8, shift=4)
    return out


def rasterize_overlap(polys: Polygons, shape, ratio: int = 4, order=None) -> np.ndarray:
    """One (H/ratio, W/ratio) int32 map: pixel value ``k+1`` belongs to polygon ``order[k]``, 0 background.

    Polygons are painted in ``order`` (default: input order), so later ones win where they overlap.
    int32 values never overflow, whatever the instance count.
    """
    h, w = shape[0] // ratio, shape[1] // ratio
    out = np.zeros((h, w), np.int32)
    fixed = _to_fixed(polys.pts, ratio)
    order = range(len(polys)) if order is None else order
    for k, i in enumerate(order):
        cv2.fillPoly(out, [fixed[polys.offs[i] : polys.offs[i + 1]]], k + 1, lineType=cv2.LINE_8, shift=4)
    return out
