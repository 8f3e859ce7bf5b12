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


def _instance_tiles(polys: Polygons, shape, ratio: int):
    """Yield ``(i, y0, x0, tile)`` per polygon: a bool tile of the 1/ratio grid at (y0, x0).

    Each polygon is filled at full resolution (pixel ``i`` counts when its centre ``i + 0.5`` is inside),
    inside its own bounding box only, then averaged over ratio x ratio blocks; a mask pixel is set when
    at least half of it is covered.
    """
    H, W = int(shape[0]), int(shape[1])
    h, w = H // ratio, W // ratio
    for i, (a, b) in enumerate(zip(polys.offs[:-1], polys.offs[1:])):
        p = polys.pts[a:b]
        x0 = max(int(np.floor(p[:, 0].min() / ratio)), 0)
        y0 = max(int(np.floor(p[:, 1].min() / ratio)), 0)
        x1 = min(int(np.ceil(p[:, 0].max() / ratio)), w)
        y1 = min(int(np.ceil(p[:, 1].max() / ratio)), h)
        if x1 <= x0 or y1 <= y0:
            continue
        full = np.zeros(((y1 - y0) * ratio, (x1 - x0) * ratio), np.uint8)
        fixed = np.round((p - (x0 * ratio + 0.5, y0 * ratio + 0.5)) * 16).astype(np.int32)
        cv2.fillPoly(full, [fixed], 255, lineType=cv2.LINE_8, shift=4)
        if ratio > 1:
            small = cv2.resize(full, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA) >= 128
        else:
            small = full > 0
        yield i, y0, x0, small


def rasterize(polys: Polygons, shape, ratio: int = 4) -> np.ndarray:
    """(n, H/ratio, W/ratio) uint8 binary masks, one per polygon; ``shape`` is the image (H, W)."""
    out = np.zeros((len(polys), shape[0] // ratio, shape[1] // ratio), np.uint8)
    for i, y0, x0, tile in _instance_tiles(polys, shape, ratio):
        out[i, y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]] = tile
    return out


def rasterize_overlap(polys: Polygons, shape, ratio: int = 4) -> np.ndarray:
    """One (H/ratio, W/ratio) int32 map: pixel value ``k+1`` belongs to polygon ``k``, 0 background.

    Polygons are painted in order, so later ones win where they overlap. int32 values never overflow,
    whatever the instance count.
    """
    out = np.zeros((shape[0] // ratio, shape[1] // ratio), np.int32)
    for i, y0, x0, tile in _instance_tiles(polys, shape, ratio):
        region = out[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]]
        region[tile] = i + 1
    return out
