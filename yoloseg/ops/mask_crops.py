"""Decoded masks kept as packed crops: only the pixels inside each box are ever stored.

`process_mask` returns a dense (n, H, W) bool tensor; for 300 detections on a 640x640 input that
is 123 MB, almost all zeros outside the boxes, and on a 4K original (``retina_masks``) it would be
gigabytes. :func:`decode_mask_crops` runs the same kernel (same pixels, bit for bit) but writes each
mask's box region into one packed uint8 buffer and reports the window of its set pixels as it goes.
:class:`MaskCrops` holds that result: polygons are traced straight from the crops, and the dense
tensor is built only when asked for (:meth:`MaskCrops.dense`, what ``Results.masks.data`` returns).

CPU and the compiled ``masks`` and ``contours`` families only (:func:`available`); elsewhere callers
use the dense path.
"""

from __future__ import annotations

import numpy as np
import torch

from yoloseg.ops import reference
from yoloseg.ops._compiled import C, has_family, num_threads
from yoloseg.ops.masks import _check_inputs, _check_shape

__all__ = ["MaskCrops", "decode_mask_crops", "available"]


def available(*tensors: torch.Tensor) -> bool:
    """True when decode_mask_crops serves these tensors (CPU, compiled kernels built)."""
    return (
        has_family("masks") and has_family("contours") and hasattr(C, "decode_mask_crops")
        and all(t.device.type == "cpu" for t in tensors)
    )


class MaskCrops:
    """n binary masks of size ``shape`` = (h, w), zero outside their regions.

    crops: uint8 (total,) packed row-major blocks; regions: int64 (n, 4) [x0, y0, x1, y1) of the
    pixels stored for each mask; offsets: int64 (n,) where each block starts in ``crops``;
    windows: int64 (n, 4) [x0, y0, x1, y1) of the set pixels (zeros for an empty mask).
    Selecting masks (:meth:`select`) shares the buffer.
    """

    def __init__(self, crops, regions, offsets, windows, shape):
        self.crops = crops
        self.regions = regions
        self.offsets = offsets
        self.windows = windows
        self.hw = (int(shape[0]), int(shape[1]))

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.hw)

    def select(self, idx) -> MaskCrops:
        """The masks at ``idx`` (int, slice, sequence, bool or index array/tensor), in that order."""
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        sel = np.arange(len(self))[idx]
        return MaskCrops(self.crops, self.regions[sel], self.offsets[sel], self.windows[sel], self.hw)

    def dense(self) -> torch.Tensor:
        """(n, h, w) bool tensor of the masks."""
        n, (h, w) = len(self), self.hw
        out = np.zeros((n, h, w), np.uint8)
        for i, ((x0, y0, x1, y1), o) in enumerate(zip(self.regions.tolist(), self.offsets.tolist())):
            if x1 > x0 and y1 > y0:
                out[i, y0:y1, x0:x1] = self.crops[o : o + (x1 - x0) * (y1 - y0)].reshape(y1 - y0, x1 - x0)
        return torch.from_numpy(out).view(torch.bool)

    def polygons_flat(self, strategy: str = "largest") -> tuple[np.ndarray, np.ndarray]:
        """Polygons as `yoloseg.ops.polygons.polygons_flat` returns them, traced from the crops."""
        pts, ends = C.crop_polygons(self.crops, self.regions, self.offsets, self.windows, strategy, num_threads())
        return pts.astype(np.float32), ends

    def __repr__(self) -> str:
        return f"MaskCrops(n={len(self)}, shape={self.hw}, stored={self.crops.size} bytes)"


def decode_mask_crops(protos, coeffs, boxes, shape, native: bool = False) -> MaskCrops:
    """The masks of `process_mask` (``native=False``: at the network input size ``shape``, boxes in
    input pixels) or `process_mask_native` (``native=True``: at the original image size ``shape``,
    boxes in original pixels), as :class:`MaskCrops`. Same checks and the same pixels as those."""
    _check_inputs(protos, coeffs, boxes)
    h, w = _check_shape(shape)
    if not available(protos, coeffs, boxes):
        raise RuntimeError("decode_mask_crops needs CPU tensors and the compiled masks/contours kernels")
    mh, mw = protos.shape[1:]
    plan = reference.native_plan((mh, mw), (h, w)) if native else (1, 0, 0, mh, mw)
    p = protos.detach().float().contiguous().numpy()
    c = coeffs.detach().float().contiguous().numpy()
    b = boxes.detach().float().contiguous().numpy()
    crops, regions, offsets, windows = C.decode_mask_crops(p, c, b, h, w, *plan, num_threads())
    return MaskCrops(crops, regions, offsets, windows, (h, w))
