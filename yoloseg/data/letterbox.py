"""Aspect-preserving resize with constant padding ("letterbox").

The geometry is fixed because trained weights, exported graphs and the coordinate
mapping in :func:`yoloseg.ops.scale_boxes` all depend on it:

* scale ``r = min(H_new / h, W_new / w)`` (capped at 1 when ``scaleup=False``);
* resized size ``(max(round(w * r), 1), max(round(h * r), 1))`` with bilinear interpolation;
* the remaining padding ``dw, dh`` is reduced modulo ``stride`` when ``auto=True``
  (smallest stride-aligned rectangle, used for rectangular inference);
* with ``center=True`` the padding is split as ``left = round(dw/2 - 0.1)``,
  ``right = round(dw/2 + 0.1)`` (same for top/bottom), so an odd padding puts the
  extra pixel on the right/bottom.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["LetterBox", "letterbox_params", "unpad_region"]


def _as_hw(new_shape) -> tuple[int, int]:
    if isinstance(new_shape, (int, np.integer)):
        return int(new_shape), int(new_shape)
    try:
        h, w = (int(v) for v in new_shape)
    except (TypeError, ValueError):
        raise ValueError(f"new_shape must be an int or (h, w), got {new_shape!r}") from None
    return h, w


def letterbox_params(shape, new_shape=640, auto=True, stride=32, center=True, scaleup=True):
    """Geometry of the letterbox for an image of ``shape`` (h, w).

    Returns ``(ratio, (new_w, new_h), (left, right, top, bottom))`` where ``ratio`` is the
    single scale applied to both axes and ``(new_w, new_h)`` the size of the resized image
    before padding.
    """
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"cannot letterbox an empty image of shape {tuple(shape)}")
    th, tw = _as_hw(new_shape)
    if th <= 0 or tw <= 0:
        raise ValueError(f"new_shape must be positive, got {(th, tw)}")
    r = min(th / h, tw / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        stride = int(stride)
        dw, dh = dw % stride, dh % stride
    if center:
        dw, dh = dw / 2, dh / 2
        left, top = round(dw - 0.1), round(dh - 0.1)
    else:
        left, top = 0, 0
    right, bottom = round(dw + 0.1), round(dh + 0.1)
    return r, (new_w, new_h), (int(left), int(right), int(top), int(bottom))


class LetterBox:
    """Resize an image keeping its aspect ratio, then pad it to ``new_shape``.

    Args:
        new_shape: target size, an int (square) or ``(h, w)``.
        auto: pad only up to the next multiple of ``stride`` (minimal rectangle).
        stride: alignment used when ``auto`` is set (the model's largest stride).
        center: split the padding between both sides; otherwise pad right/bottom only.
        scaleup: allow enlarging small images (``False`` only shrinks).
        pad_value: value of the padded pixels (all channels).

    Calling it with an ``(h, w)`` or ``(h, w, c)`` uint8 array returns
    ``(image, (ratio, (padw, padh)))``: ``ratio`` is the float scale applied to both axes and
    ``padw``/``padh`` the left/top padding in pixels, so a point ``p`` of the original maps to
    ``p * ratio + pad``.
    """

    def __init__(self, new_shape=640, auto=True, stride=32, center=True, scaleup=True, pad_value=114):
        self.new_shape = _as_hw(new_shape)
        self.auto = bool(auto)
        self.stride = int(max(stride)) if isinstance(stride, (list, tuple)) else int(stride)
        if self.stride <= 0:
            raise ValueError(f"stride must be positive, got {stride!r}")
        self.center = bool(center)
        self.scaleup = bool(scaleup)
        self.pad_value = int(pad_value)

    def output_shape(self, shape) -> tuple[int, int]:
        """(h, w) of the letterboxed image for an input of ``shape``."""
        _, (nw, nh), (left, right, top, bottom) = self.params(shape)
        return nh + top + bottom, nw + left + right

    def params(self, shape):
        return letterbox_params(shape, self.new_shape, self.auto, self.stride, self.center, self.scaleup)

    def __call__(self, image: np.ndarray):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(
                f"LetterBox expects an (h, w) or (h, w, c) array, got "
                f"{type(image).__name__} {getattr(image, 'shape', '')}"
            )
        r, (nw, nh), (left, right, top, bottom) = self.params(image.shape[:2])
        if (image.shape[1], image.shape[0]) != (nw, nh):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if top or bottom or left or right:
            image = _pad(image, top, bottom, left, right, self.pad_value)
        return image, (r, (left, top))


def _pad(image, top, bottom, left, right, value):
    if image.ndim == 2 or image.shape[2] <= 4:
        channels = 1 if image.ndim == 2 else image.shape[2]
        return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(value,) * channels)
    h, w, c = image.shape
    out = np.full((h + top + bottom, w + left + right, c), value, dtype=image.dtype)
    out[top : top + h, left : left + w] = image
    return out


def unpad_region(padded_shape, orig_shape):
    """Where an image of ``orig_shape`` sits inside its centred letterbox of ``padded_shape``.

    Returns ``(gain_y, gain_x, top, left, new_h, new_w)``: the resized image occupies rows
    ``top:top+new_h`` and columns ``left:left+new_w``; a letterbox point ``(x, y)`` maps back to
    ``((x - left) / gain_x, (y - top) / gain_y)``. Recomputed from the two shapes exactly as
    :class:`LetterBox` rounds them, so it is valid for any centred letterbox (with or without
    ``auto``) and is the identity when both shapes are equal.
    """
    ph, pw = int(padded_shape[0]), int(padded_shape[1])
    oh, ow = int(orig_shape[0]), int(orig_shape[1])
    gain = min(ph / oh, pw / ow)
    new_h, new_w = max(round(oh * gain), 1), max(round(ow * gain), 1)
    top, left = round((ph - new_h) / 2 - 0.1), round((pw - new_w) / 2 - 0.1)
    return new_h / oh, new_w / ow, int(top), int(left), int(new_h), int(new_w)
