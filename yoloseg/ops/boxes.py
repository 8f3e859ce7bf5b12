"""Box and mask geometry in plain torch (or numpy where noted).

These are small vectorised functions with no compiled counterpart; `yoloseg.ops` and
`yoloseg.ops.reference` both expose them. None of them modifies its input: each returns a new
tensor or array.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "xywh2xyxy",
    "xyxy2xywh",
    "clip_boxes",
    "scale_boxes",
    "letterbox_params",
    "box_iou",
    "mask_iou",
]


def _check_last_dim(x, name: str, size: int = 4):
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(x.shape)}")


def _float_copy(x):
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_floating_point() else x.float()
    return x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x.copy()


def xywh2xyxy(x):
    """(cx, cy, w, h) -> (x1, y1, x2, y2); any leading shape, torch or numpy."""
    _check_last_dim(x, "x")
    y = _float_copy(x)
    half = x[..., 2:4] / 2
    y[..., 0:2] = x[..., 0:2] - half
    y[..., 2:4] = x[..., 0:2] + half
    return y


def xyxy2xywh(x):
    """(x1, y1, x2, y2) -> (cx, cy, w, h); any leading shape, torch or numpy."""
    _check_last_dim(x, "x")
    y = _float_copy(x)
    y[..., 0:2] = (x[..., 0:2] + x[..., 2:4]) / 2
    y[..., 2:4] = x[..., 2:4] - x[..., 0:2]
    return y


def clip_boxes(boxes, shape):
    """Clamp xyxy boxes to an image of `shape` (h, w[, c]); returns a new tensor/array."""
    _check_last_dim(boxes, "boxes")
    h, w = int(shape[0]), int(shape[1])
    out = _float_copy(boxes)
    if isinstance(out, torch.Tensor):
        out[..., 0::2] = out[..., 0::2].clamp(0, w)
        out[..., 1::2] = out[..., 1::2].clamp(0, h)
    else:
        out[..., 0::2] = out[..., 0::2].clip(0, w)
        out[..., 1::2] = out[..., 1::2].clip(0, h)
    return out


def letterbox_params(img1_shape, img0_shape, ratio_pad=None):
    """Per-axis gains and top-left padding of a centred letterbox from img0_shape into img1_shape.

    Returns ((gain_y, gain_x), (pad_x, pad_y)). Without `ratio_pad` the resize is assumed to keep
    the aspect ratio with each side rounded to whole pixels and the padding split evenly (the
    extra pixel going to the bottom/right), which is what `yoloseg.data.LetterBox` does.
    `ratio_pad` is ((gain_y, gain_x) or (gain,) or gain, (pad_x, pad_y)).
    """
    if ratio_pad is None:
        h1, w1 = int(img1_shape[0]), int(img1_shape[1])
        h0, w0 = int(img0_shape[0]), int(img0_shape[1])
        gain = min(h1 / h0, w1 / w0)
        new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
        gains = (new_h / h0, new_w / w0)
        pad = (round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1))
        return gains, pad
    ratio, pad = ratio_pad
    if isinstance(ratio, (int, float)):
        gains = (float(ratio), float(ratio))
    elif len(ratio) == 1:
        gains = (float(ratio[0]), float(ratio[0]))
    else:
        gains = (float(ratio[0]), float(ratio[1]))
    return gains, (float(pad[0]), float(pad[1]))


def scale_boxes(img1_shape, boxes, img0_shape, ratio_pad=None, padding=True):
    """Map xyxy boxes from a letterboxed image (img1_shape) back to the original image (img0_shape).

    Removes the padding (when `padding`), divides by the per-axis gains and clips to img0_shape.
    """
    _check_last_dim(boxes, "boxes")
    (gain_y, gain_x), (pad_x, pad_y) = letterbox_params(img1_shape, img0_shape, ratio_pad)
    out = _float_copy(boxes)
    if padding:
        out[..., 0::2] -= pad_x
        out[..., 1::2] -= pad_y
    out[..., 0::2] /= gain_x
    out[..., 1::2] /= gain_y
    return clip_boxes(out, img0_shape)


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: (N,4) x (M,4) -> (N,M) float32. An empty union gives 0."""
    for name, b in (("box1", box1), ("box2", box2)):
        if not isinstance(b, torch.Tensor) or b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{name} must be a torch.Tensor of shape (N, 4), got {getattr(b, 'shape', type(b))}")
    if box1.device != box2.device:
        raise ValueError(f"box1 and box2 must be on the same device, got {box1.device} and {box2.device}")
    a, b = box1.float(), box2.float()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float32).tiny), 0.0)


def mask_iou(mask1: torch.Tensor, mask2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binary masks: (N,H,W) or (N,P) against (M,H,W) or (M,P) -> (N,M) float32.

    Any nonzero value counts as foreground. Two empty masks have IoU 0.
    """
    for name, m in (("mask1", mask1), ("mask2", mask2)):
        if not isinstance(m, torch.Tensor) or m.ndim not in (2, 3):
            raise ValueError(f"{name} must be a torch.Tensor of shape (N, H, W) or (N, P)")
    a = mask1.reshape(mask1.shape[0], -1)
    b = mask2.reshape(mask2.shape[0], -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"mask1 and mask2 must have the same pixel count, got {a.shape[1]} and {b.shape[1]}")
    if a.device != b.device:
        raise ValueError(f"mask1 and mask2 must be on the same device, got {a.device} and {b.device}")
    a = (a != 0).float()
    b = (b != 0).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1.0), 0.0)
