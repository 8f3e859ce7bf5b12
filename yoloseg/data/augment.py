"""Training augmentations that move images and polygons together.

Every transform takes and returns a *sample*: a dict with ``img`` (H, W, 3) uint8 BGR, ``cls`` (n,) int64
and ``polys`` (:class:`~yoloseg.data.augment_polygons.Polygons`, pixel coordinates of ``img``), plus
metadata that is passed through. Randomness comes only from the ``rng`` argument (a numpy Generator), so
a sample is reproducible from its seed. Masks are never warped: polygons are transformed exactly and
rasterized once at the end (:func:`format_sample`), at 1/``mask_ratio`` resolution.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from yoloseg.data.augment_polygons import Polygons, rasterize, rasterize_overlap

__all__ = [
    "PAD_VALUE",
    "augment_hsv",
    "copy_paste",
    "copy_paste_flip",
    "format_sample",
    "letterbox_sample",
    "mixup",
    "cutmix",
    "mosaic4",
    "random_affine",
    "random_flip",
]

PAD_VALUE = 114


# ------------------------------------------------------------------------------------------ letterbox


def letterbox_sample(sample: dict, new_shape, auto=False, stride=32, scaleup=True) -> dict:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (int or (h, w)); polygons follow."""
    from yoloseg.data.letterbox import LetterBox

    lb = LetterBox(new_shape, auto=auto, stride=stride, center=True, scaleup=scaleup, pad_value=PAD_VALUE)
    h, w = sample["img"].shape[:2]
    img, (r, (left, top)) = lb(sample["img"])
    nh, nw = max(round(h * r), 1), max(round(w * r), 1)
    sx, sy = nw / w, nh / h  # exact per-axis scale of the resize step
    sample["img"] = img
    sample["polys"] = sample["polys"].scale_translate(sx, sy, left, top)
    sample["letterbox"] = ((sy, sx), (left, top))
    return sample


# ------------------------------------------------------------------------------------------ mosaic


def mosaic4(parts: list, rng: np.random.Generator, s: int) -> dict:
    """Combine 4 samples (each resized so its long side is ``s``) on a 2s x 2s canvas.

    The mosaic centre is drawn uniformly in [s/2, 3s/2] on both axes; the images meet at that point
    (top-left, top-right, bottom-left, bottom-right). The canvas is meant to be cropped back to s x s by
    :func:`random_affine` with ``border=(-s//2, -s//2)``.
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic4 needs 4 samples, got {len(parts)}")
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(s / 2, 1.5 * s, 2))
    polys, cls = [], []
    for k, part in enumerate(parts):
        img = part["img"]
        h, w = img.shape[:2]
        ox = xc - w if k in (0, 2) else xc
        oy = yc - h if k in (0, 1) else yc
        x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + w, 2 * s), min(oy + h, 2 * s)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = img[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
        polys.append(part["polys"].scale_translate(1.0, 1.0, ox, oy))
        cls.append(part["cls"])
    out = dict(parts[0])
    out["img"] = canvas
    out["polys"] = Polygons.concat(polys)
    out["cls"] = np.concatenate(cls) if cls else np.zeros(0, np.int64)
    out["mosaic_border"] = (-s // 2, -s // 2)
    return out


# ------------------------------------------------------------------------------------------ affine


def random_affine(
    sample: dict,
    rng: np.random.Generator,
    degrees=0.0,
    translate=0.1,
    scale=0.5,
    shear=0.0,
    perspective=0.0,
    border=(0, 0),
    area_thr=0.01,
) -> dict:
    """Random rotation/scale/shear/translation/perspective about the image centre.

    The output is the input size plus ``2 * border`` per axis (a negative border crops, as after a
    mosaic). Polygons are mapped by the same matrix, clipped exactly to the output, and instances that
    keep less than ``area_thr`` of their area, or end up under 2 px wide/high, are dropped.
    """
    img = sample["img"]
    h_in, w_in = img.shape[:2]
    oh, ow = h_in + 2 * border[0], w_in + 2 * border[1]
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w_in / 2, -h_in / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective, 2) if perspective else (0.0, 0.0)
    a = rng.uniform(-degrees, degrees) if degrees else 0.0
    sc = rng.uniform(1 - scale, 1 + scale) if scale else 1.0
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D((0, 0), a, sc)
    S = np.eye(3)
    if shear:
        S[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
        S[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * ow
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * oh
    M = T @ S @ R @ P @ C
    if border[0] or border[1] or not np.allclose(M, np.eye(3)):
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            img = cv2.warpPerspective(img, M, (ow, oh), borderValue=fill)
        else:
            img = cv2.warpAffine(img, M[:2], (ow, oh), borderValue=fill)
    sample["img"] = img
    moved = sample["polys"].transform(M)
    full_area = moved.areas()
    clipped, keep = moved.clip(ow, oh)
    if len(keep):
        area = clipped.areas()
        box = clipped.boxes()
        bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        ar = np.maximum(bw / (bh + 1e-9), bh / (bw + 1e-9))
        ok = (bw > 2) & (bh > 2) & (area > area_thr * full_area[keep]) & (ar < 100)
        clipped, keep = clipped.subset(ok), keep[ok]
    sample["cls"] = sample["cls"][keep]
    sample["polys"] = clipped
    return sample


# ------------------------------------------------------------------------------------------ copy-paste


def _ioa(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Intersection over the area of each box in ``boxes1`` against ``boxes2``: (n1, n2)."""
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area1 = np.clip(boxes1[:, 2:] - boxes1[:, :2], 0, None).prod(1)
    return inter / (area1[:, None] + 1e-9)


def copy_paste(sample: dict, source: dict, rng: np.random.Generator, p: float, ioa_thr: float = 0.30) -> dict:
    """Paste a random fraction ``p`` of ``source``'s instances (pixels and polygons) into ``sample``.

    ``source`` has the same image size. An instance is eligible when less than ``ioa_thr`` of its box is
    covered by the boxes already in ``sample``.
    """
    n = len(source["cls"])
    if not p or not n:
        return sample
    img = sample["img"]
    h, w = img.shape[:2]
    if source["img"].shape[:2] != (h, w):
        raise ValueError(f"copy_paste: source image {source['img'].shape[:2]} differs from {(h, w)}")
    if len(sample["cls"]):
        ioa = _ioa(source["polys"].boxes(), sample["polys"].boxes()).max(1)
        eligible = np.flatnonzero(ioa < ioa_thr)
    else:
        eligible = np.arange(n)
    k = int(round(p * len(eligible)))
    if not k:
        return sample
    chosen = np.sort(rng.choice(eligible, size=k, replace=False))
    chosen_polys = source["polys"].subset(chosen)
    mask = rasterize(chosen_polys, (h, w), ratio=1).any(0)
    img = img.copy()
    img[mask] = source["img"][mask]
    sample["img"] = img
    sample["polys"] = Polygons.concat([sample["polys"], chosen_polys])
    sample["cls"] = np.concatenate([sample["cls"], source["cls"][chosen]])
    return sample


def copy_paste_flip(sample: dict, rng: np.random.Generator, p: float, ioa_thr: float = 0.30) -> dict:
    """Paste mirrored (left-right) copies of a random fraction ``p`` of the instances into the same image."""
    if not p or not len(sample["cls"]):
        return sample
    w = sample["img"].shape[1]
    mirror = {"img": sample["img"][:, ::-1], "polys": sample["polys"].flip_lr(w), "cls": sample["cls"]}
    return copy_paste(sample, mirror, rng, p, ioa_thr)


# ------------------------------------------------------------------------------------------ mixup


def mixup(sample: dict, other: dict, rng: np.random.Generator) -> dict:
    """Blend two same-size samples with a Beta(32, 32) ratio and keep the instances of both."""
    r = rng.beta(32.0, 32.0)
    blend = sample["img"].astype(np.float32) * r + other["img"].astype(np.float32) * (1 - r)
    sample["img"] = blend.astype(np.uint8)
    sample["polys"] = Polygons.concat([sample["polys"], other["polys"]])
    sample["cls"] = np.concatenate([sample["cls"], other["cls"]])
    return sample


def _cut_rect(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A random [x1, y1, x2, y2] whose sides are sqrt(1 - lam) of the image's, lam ~ Beta(1, 1), centred at a
    random pixel and clipped to the image."""
    ratio = np.sqrt(1.0 - rng.beta(1.0, 1.0))
    cw, ch = int(w * ratio), int(h * ratio)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    return np.array([np.clip(cx - cw // 2, 0, w), np.clip(cy - ch // 2, 0, h),
                     np.clip(cx + cw // 2, 0, w), np.clip(cy + ch // 2, 0, h)], np.float32)


def cutmix(sample: dict, other: dict, rng: np.random.Generator, tries: int = 3, min_ioa: float = 0.01) -> dict:
    """CutMix: copy a random rectangle of ``other`` (same image size) into ``sample``.

    Of ``tries`` random rectangles, one that overlaps no instance box of ``sample`` is used (none: nothing
    happens), so no instance of ``sample`` is covered. The instances of ``other`` with at least ``min_ioa``
    of their box inside the rectangle come along, their polygons clipped to it.
    """
    h, w = sample["img"].shape[:2]
    if other["img"].shape[:2] != (h, w):
        raise ValueError(f"cutmix: other image {other['img'].shape[:2]} differs from {(h, w)}")
    rects = np.stack([_cut_rect(w, h, rng) for _ in range(tries)])
    rects = rects[(rects[:, 2] > rects[:, 0]) & (rects[:, 3] > rects[:, 1])]
    if len(sample["cls"]) and len(rects):
        rects = rects[_ioa(sample["polys"].boxes(), rects).sum(0) <= 0]  # overlapping no instance of sample
    if not len(rects):
        return sample
    x1, y1, x2, y2 = rects[int(rng.integers(0, len(rects)))]
    take = np.zeros(0, np.int64)
    if len(other["cls"]):
        take = np.flatnonzero(_ioa(other["polys"].boxes(), np.array([[x1, y1, x2, y2]], np.float32))[:, 0] >= min_ioa)
    if not len(take):
        return sample
    part = other["polys"].subset(take).scale_translate(1.0, 1.0, -x1, -y1)
    clipped, keep = part.clip(float(x2 - x1), float(y2 - y1))
    img = sample["img"].copy()
    ix1, iy1, ix2, iy2 = int(x1), int(y1), int(x2), int(y2)
    img[iy1:iy2, ix1:ix2] = other["img"][iy1:iy2, ix1:ix2]
    sample["img"] = img
    if len(keep):
        sample["polys"] = Polygons.concat([sample["polys"], clipped.scale_translate(1.0, 1.0, x1, y1)])
        sample["cls"] = np.concatenate([sample["cls"], other["cls"][take[keep]]])
    return sample


# ------------------------------------------------------------------------------------------ colour, flips


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain=0.5, sgain=0.5, vgain=0.5) -> np.ndarray:
    """Random hue/saturation/value gains applied through lookup tables (returns a new image)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def random_flip(sample: dict, rng: np.random.Generator, p_lr=0.5, p_ud=0.0) -> dict:
    h, w = sample["img"].shape[:2]
    if p_ud and rng.random() < p_ud:
        sample["img"] = cv2.flip(sample["img"], 0)
        sample["polys"] = sample["polys"].flip_ud(h)
    if p_lr and rng.random() < p_lr:
        sample["img"] = cv2.flip(sample["img"], 1)
        sample["polys"] = sample["polys"].flip_lr(w)
    return sample


# ------------------------------------------------------------------------------------------ output


def format_sample(sample: dict, mask_ratio: int = 4, overlap_mask: bool = True) -> dict:
    """Final tensors: ``img`` (3, H, W) uint8 RGB, ``cls`` (n, 1), ``bboxes`` (n, 4) normalized xywh and
    ``masks``: (H/r, W/r) int32 instance-index map when ``overlap_mask`` (instances re-ordered by area,
    largest first, so smaller ones are painted last and stay visible; value k+1 = k-th instance), else
    (n, H/r, W/r) uint8 binary masks.
    """
    img = sample["img"]
    h, w = img.shape[:2]
    polys, keep = sample["polys"].clip(w, h)
    cls = sample["cls"][keep]
    if overlap_mask and len(polys):
        order = np.argsort(-polys.areas(), kind="stable")
        polys, cls = polys.subset(order), cls[order]
    boxes = polys.boxes()
    if len(boxes):
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    xywh = np.empty_like(boxes)
    xywh[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2 / w
    xywh[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2 / h
    xywh[:, 2] = (boxes[:, 2] - boxes[:, 0]) / w
    xywh[:, 3] = (boxes[:, 3] - boxes[:, 1]) / h
    if overlap_mask:
        masks = rasterize_overlap(polys, (h, w), mask_ratio)
    else:
        masks = rasterize(polys, (h, w), mask_ratio)
    chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))
    out = {k: v for k, v in sample.items() if k not in ("img", "cls", "polys", "letterbox", "mosaic_border")}
    out["img"] = torch.from_numpy(chw)
    out["cls"] = torch.from_numpy(cls.astype(np.float32).reshape(-1, 1))
    out["bboxes"] = torch.from_numpy(xywh.astype(np.float32))
    out["masks"] = torch.from_numpy(masks)
    return out
