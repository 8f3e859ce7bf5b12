"""Drawing predictions: per-class colours, translucent masks, boxes and labels (OpenCV, BGR).

Used by :meth:`yoloseg.engine.results.Results.plot` and by the validator's prediction mosaics.
All functions work on ``uint8`` BGR images and numpy/torch inputs; none needs a display.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "PALETTE_HEX",
    "colors",
    "default_line_width",
    "overlay_masks",
    "draw_box",
    "draw_label",
    "plot_instances",
]

# 20 well-separated colours (RGB hex), cycled by class id.
PALETTE_HEX = (
    "E6194B", "3CB44B", "4363D8", "F58231", "911EB4", "42D4F4", "F032E6", "BFEF45", "FFE119", "469990",
    "DCBEFF", "9A6324", "800000", "AAFFC3", "808000", "FFD8B1", "000075", "FABED4", "A9A9A9", "FFFAC8",
)
_PALETTE_RGB = tuple(tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in PALETTE_HEX)


def colors(i: int, bgr: bool = True) -> tuple[int, int, int]:
    """Colour of class ``i`` (cycled through :data:`PALETTE_HEX`), BGR by default."""
    r, g, b = _PALETTE_RGB[int(i) % len(_PALETTE_RGB)]
    return (b, g, r) if bgr else (r, g, b)


def default_line_width(shape) -> int:
    """Box line width for an image of ``shape`` (h, w, ...): about 0.3% of its mean side, at least 2 px."""
    return max(round((shape[0] + shape[1]) / 2 * 0.003), 2)


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _text_color(bg) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _mask_blocks(masks, top: int, left: int, nh: int, nw: int):
    """(i, y0, y1, x0, x1, block) for each non-empty mask, in the unpadded frame [0, nh) x [0, nw):
    the bool block covers the set pixels' window. ``masks`` is (n, mh, mw) or packed crops
    (``yoloseg.ops.mask_crops.MaskCrops``: only their regions are read)."""
    if hasattr(masks, "crops") and hasattr(masks, "regions"):
        for i, ((rx0, ry0, rx1, ry1), o, (wx0, wy0, wx1, wy1)) in enumerate(
            zip(masks.regions.tolist(), masks.offsets.tolist(), masks.windows.tolist())
        ):
            # the set-pixel window, cut to the unpadded frame
            x0, y0 = max(wx0, left), max(wy0, top)
            x1, y1 = min(wx1, left + nw), min(wy1, top + nh)
            if x1 <= x0 or y1 <= y0:
                continue
            rw = rx1 - rx0
            block = masks.crops[o : o + rw * (ry1 - ry0)].reshape(ry1 - ry0, rw)
            block = block[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0].astype(bool)
            yield i, y0 - top, y1 - top, x0 - left, x1 - left, block
        return
    masks = masks[:, top : top + nh, left : left + nw].astype(bool, copy=False)
    for i in range(len(masks)):
        m = masks[i]
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        yield i, y0, y1, x0, x1, m[y0:y1, x0:x1]


def overlay_masks(img: np.ndarray, masks, mask_colors, alpha: float = 0.5) -> np.ndarray:
    """Blend binary ``masks`` (n, mh, mw) over ``img`` (h, w, 3) in place and return it.

    ``mask_colors[i]`` is the BGR colour of mask ``i``. Masks are drawn in reverse order so the
    first one (the most confident detection) ends on top. Masks at a different resolution than
    the image are taken to be in letterbox coordinates (the model input): the padding is
    removed and the blend is resized to the image once, whatever the number of masks.
    ``masks`` may also be packed crops (``yoloseg.ops.mask_crops.MaskCrops``): then only each
    mask's set-pixel window is read, and no (n, mh, mw) block is built.
    """
    from yoloseg.data.letterbox import unpad_region

    if not (hasattr(masks, "crops") and hasattr(masks, "regions")):
        masks = _np(masks)
        if masks.ndim != 3:
            return img
    if len(masks) == 0:
        return img
    if len(mask_colors) != len(masks):
        raise ValueError(f"got {len(mask_colors)} colours for {len(masks)} masks")
    h, w = img.shape[:2]
    mh, mw = masks.shape[1:]
    _, _, top, left, nh, nw = unpad_region((mh, mw), (h, w))
    paint = np.zeros((nh, nw, 3), np.float32)  # accumulated colour contribution
    keep = np.ones((nh, nw), np.float32)  # fraction of the original image left visible
    for i, y0, y1, x0, x1, mm in reversed(list(_mask_blocks(masks, top, left, nh, nw))):
        a = mm.astype(np.float32) * alpha
        p = paint[y0:y1, x0:x1]
        p *= (1.0 - a)[..., None]
        p += a[..., None] * np.asarray(mask_colors[i], np.float32)
        keep[y0:y1, x0:x1] *= 1.0 - a
    if (nh, nw) != (h, w):
        paint = cv2.resize(paint, (w, h), interpolation=cv2.INTER_LINEAR)
        keep = cv2.resize(keep, (w, h), interpolation=cv2.INTER_LINEAR)
    out = img.astype(np.float32) * keep[..., None] + paint
    img[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return img


def draw_box(img: np.ndarray, xyxy, color, line_width: int) -> None:
    x1, y1, x2, y2 = (int(round(float(v))) for v in xyxy)
    cv2.rectangle(img, (x1, y1), (x2, y2), tuple(int(c) for c in color), thickness=line_width, lineType=cv2.LINE_AA)


def draw_label(img: np.ndarray, xyxy, text: str, color, line_width: int) -> None:
    """Filled label tag with ``text`` at the top-left corner of the box (above it if there is room)."""
    if not text:
        return
    color = tuple(int(c) for c in color)
    thickness = max(line_width - 1, 1)
    scale = line_width / 3
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    th += baseline + 2
    x1, y1 = int(round(float(xyxy[0]))), int(round(float(xyxy[1])))
    x1 = min(max(x1, 0), max(img.shape[1] - tw - 2, 0))
    above = y1 - th >= 0
    y_top = y1 - th if above else y1
    cv2.rectangle(img, (x1, y_top), (x1 + tw + 2, y_top + th), color, -1, cv2.LINE_AA)
    cv2.putText(
        img, text, (x1 + 1, y_top + th - baseline - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, _text_color(color),
        thickness, cv2.LINE_AA,
    )


def plot_instances(
    img: np.ndarray,
    boxes=None,
    cls=None,
    conf=None,
    masks=None,
    names: dict | None = None,
    show_conf: bool = True,
    show_labels: bool = True,
    show_boxes: bool = True,
    show_masks: bool = True,
    line_width: int | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Return a copy of ``img`` with masks, boxes and ``"name 0.87"`` labels drawn.

    ``boxes`` (n, 4) xyxy in image pixels, ``cls``/``conf`` (n,), ``masks`` (n, mh, mw) bool at
    image or letterbox resolution. Colours follow the class id.
    """
    out = np.ascontiguousarray(img).copy()
    n = 0 if boxes is None else len(boxes)
    cls = np.zeros(n, int) if cls is None else _np(cls).astype(int)
    lw = int(line_width) if line_width else default_line_width(out.shape)
    if show_masks and masks is not None and len(masks):
        overlay_masks(out, masks, [colors(c) for c in cls[: len(masks)]], alpha=alpha)
    if n == 0:
        return out
    boxes = _np(boxes)
    conf = None if conf is None else _np(conf)
    names = names or {}
    for i in range(n - 1, -1, -1):  # most confident last, on top
        c = int(cls[i])
        col = colors(c)
        if show_boxes:
            draw_box(out, boxes[i], col, lw)
        if show_labels or show_conf:
            parts = []
            if show_labels:
                parts.append(str(names.get(c, c)))
            if show_conf and conf is not None:
                parts.append(f"{float(conf[i]):.2f}")
            draw_label(out, boxes[i], " ".join(parts), col, lw)
    return out
