"""Box geometry for the detection losses: anchor grids, distance encoding, Complete-IoU and DFL.

All boxes are ``(..., 4)`` tensors. ``xyxy`` is corners, ``cxcywh`` is centre plus size. Distances are
``(left, top, right, bottom)`` from an anchor point, in grid units of the anchor's level.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "anchor_grid",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "distances_to_xyxy",
    "xyxy_to_distances",
    "expected_distances",
    "complete_iou",
    "dfl_loss",
]

_FOUR_OVER_PI_SQ = 4.0 / math.pi**2


def anchor_grid(
    sizes: list[tuple[int, int]], strides: list[float], dtype: torch.dtype, device: torch.device, offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre points of every level, concatenated level by level in row-major order.

    Returns ``points (A, 2)`` as (x, y) in grid units of each point's own level and ``strides (A, 1)``.
    """
    points, level_strides = [], []
    for (h, w), s in zip(sizes, strides):
        xs = torch.arange(w, device=device, dtype=dtype) + offset
        ys = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        level_strides.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(level_strides)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes to corner boxes."""
    centre, half = b[..., :2], b[..., 2:] / 2
    return torch.cat((centre - half, centre + half), -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """Corner boxes to centre/size boxes."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def distances_to_xyxy(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Decode (l, t, r, b) distances around ``points`` into corner boxes."""
    near, far = dist.chunk(2, -1)
    return torch.cat((points - near, points + far), -1)


def xyxy_to_distances(points: torch.Tensor, boxes: torch.Tensor, limit: float | None = None) -> torch.Tensor:
    """Encode corner boxes as (l, t, r, b) distances from ``points``, optionally clamped to ``[0, limit]``."""
    top_left, bottom_right = boxes.chunk(2, -1)
    dist = torch.cat((points - top_left, bottom_right - points), -1)
    return dist.clamp(0, limit) if limit is not None else dist


def expected_distances(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value of each side's discrete distance distribution.

    ``logits (B, A, 4 * n)`` with ``bins (n,)`` = 0..n-1 gives ``(B, A, 4)``.
    """
    b, a, c = logits.shape
    probs = logits.view(b, a, 4, c // 4).softmax(3)
    return probs.matmul(bins.to(logits.dtype))


def complete_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (IoU minus centre-distance and aspect-ratio penalties) of paired corner boxes.

    Returns ``(..., 1)``. Heights get ``eps`` added before use, and the aspect weight is treated as a constant
    for the gradient, as in the CIoU paper.
    """
    ax1, ay1, ax2, ay2 = box1.chunk(4, -1)
    bx1, by1, bx2, by2 = box2.chunk(4, -1)
    aw, ah = ax2 - ax1, ay2 - ay1 + eps
    bw, bh = bx2 - bx1, by2 - by1 + eps

    overlap_w = (ax2.minimum(bx2) - ax1.maximum(bx1)).clamp(0)
    overlap_h = (ay2.minimum(by2) - ay1.maximum(by1)).clamp(0)
    inter = overlap_w * overlap_h
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union

    hull_w = ax2.maximum(bx2) - ax1.minimum(bx1)
    hull_h = ay2.maximum(by2) - ay1.minimum(by1)
    diag_sq = hull_w.pow(2) + hull_h.pow(2) + eps
    # squared distance of the centres, from the doubled-centre differences
    centre_sq = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4
    aspect = _FOUR_OVER_PI_SQ * ((bw / bh).atan() - (aw / ah).atan()).pow(2)
    with torch.no_grad():
        trade_off = aspect / (1 - iou + aspect + eps)
    return iou - (centre_sq / diag_sq + aspect * trade_off)


def dfl_loss(logits: torch.Tensor, target: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Distribution focal loss per box.

    ``logits (N, 4, n_bins)`` or ``(N*4, n_bins)`` raw bin scores, ``target (N, 4)`` continuous distances in
    bin units. Each target is split between its two neighbouring bins by linear interpolation; the loss is
    the weighted cross-entropy of the two, averaged over the four sides. Returns ``(N, 1)``.
    """
    t = target.clamp(0, n_bins - 1 - 0.01)
    left = t.long()
    right = left + 1
    w_left = right - t
    w_right = 1 - w_left
    logp = F.log_softmax(logits.reshape(-1, n_bins), dim=1)
    lp_left = logp.gather(1, left.view(-1, 1)).view(left.shape)
    lp_right = logp.gather(1, right.view(-1, 1)).view(left.shape)
    return -(lp_left * w_left + lp_right * w_right).mean(-1, keepdim=True)
