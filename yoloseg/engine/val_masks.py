"""Val's masks at the original image size: ``masks_to_original`` decodes each detection's mask the way the
validator scores it (logits upsampled to the network input, the letterbox region cut out and resized to the
original, thresholded, cropped to the box) and returns COCO RLEs, optionally with polygons.

On the CPU the compiled mask kernel runs this chain into packed box crops (``yoloseg.ops.mask_crops``) that
are RLE-encoded and traced straight from the crops; elsewhere the two resizes are composed per axis in numpy.
"""

from __future__ import annotations

import numpy as np
import torch

from yoloseg.metrics import rle

__all__ = ["masks_to_original"]


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a 1-D bilinear resize with half-pixel centres (align_corners=False),
    the interpolation ``torch.nn.functional.interpolate(mode="bilinear")`` applies along each axis."""
    m = np.zeros((n_out, n_in), np.float32)
    if n_in == n_out:
        np.fill_diagonal(m, 1.0)
        return m
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    j0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    j1 = np.minimum(j0 + 1, n_in - 1)
    w1 = src - j0
    rows = np.arange(n_out)
    np.add.at(m, (rows, j0), 1.0 - w1)
    np.add.at(m, (rows, j1), w1)
    return m


def _axis_map(n_proto: int, n_input: int, start: int, n_content: int, n_orig: int) -> np.ndarray:
    """(n_orig, n_proto): proto axis -> input size, cut [start, start + n_content), -> original size."""
    up = _resize_matrix(n_proto, n_input)[start : start + n_content]
    return (_resize_matrix(n_content, n_orig) @ up).astype(np.float32)


def _compiled_crops(*tensors) -> bool:
    from yoloseg.ops.mask_crops import available

    return available(*tensors) and all(torch.isfinite(t).all() for t in tensors)


def masks_to_original(protos, coeffs, boxes_orig, input_hw, ratio_pad, orig_hw, polygons: bool = False):
    """RLEs of the detections' masks at the original image size.

    protos (nm, h, w), coeffs (n, nm), boxes_orig (n, 4) xyxy in original pixels; ``ratio_pad`` =
    ((gain_y, gain_x), (pad_left, pad_top)) maps original pixels to the input (``x * gain + pad``).
    Meaning: the logit map ``coeffs @ protos`` is upsampled bilinearly to ``input_hw``, the letterboxed
    image region is cut out and resized bilinearly to ``orig_hw``, thresholded (> 0) and cropped to the
    box (column x kept when x1 <= x < x2, rows alike). Both resizes are separable linear maps, so they
    are composed once per image into one (h0, h) and one (w0, w) matrix, and each detection's logits are
    computed only inside its box. On the CPU the compiled mask kernel runs the same chain (float32) into
    packed box crops, which are encoded without ever building a full-size mask.

    With ``polygons=True`` returns ``(rles, polygons)``: also each mask's "largest" outer contour,
    (K, 2) float32 in original pixels, traced from the same crops.
    """
    n = len(coeffs)
    if n == 0:
        return ([], []) if polygons else []
    h0, w0 = int(orig_hw[0]), int(orig_hw[1])
    H, W = int(input_hw[0]), int(input_hw[1])
    (gy, gx), (px, py) = ratio_pad
    top, left = int(round(float(py))), int(round(float(px)))
    nh = min(max(int(round(h0 * float(gy))), 1), H - top)
    nw = min(max(int(round(w0 * float(gx))), 1), W - left)
    nm, ph, pw = protos.shape
    if (H, W) == (4 * ph, 4 * pw) and _compiled_crops(protos, coeffs, boxes_orig):
        # The mask kernel's resampling plan "upsample by 4 (to the input), cut the letterboxed region,
        # resize to the original" is this very chain, in float32; masks stay packed box crops.
        from yoloseg.ops._compiled import C, num_threads

        p = protos.detach().float().contiguous().cpu().numpy()
        c = coeffs.detach().float().contiguous().cpu().numpy()
        b = boxes_orig.detach().float().contiguous().cpu().numpy()
        crops, regions, offsets, windows = C.decode_mask_crops(p, c, b, h0, w0, 4, top, left, nh, nw, num_threads())
        rles = C.rle_encode_windows(crops, regions, offsets, h0, w0, num_threads())
        if not polygons:
            return rles
        from yoloseg.ops.polygons import split_points

        pts, ends = C.crop_polygons(crops, regions, offsets, windows, "largest", num_threads())
        return rles, split_points(pts.astype(np.float32), ends)
    ay = _axis_map(ph, H, top, nh, h0)  # (h0, ph)
    ax = _axis_map(pw, W, left, nw, w0)  # (w0, pw)
    # proto rows/cols that each output row/col reads (contiguous, non-decreasing)
    nzy, nzx = ay != 0, ax != 0
    y_lo, y_hi = nzy.argmax(1), ph - nzy[:, ::-1].argmax(1)
    x_lo, x_hi = nzx.argmax(1), pw - nzx[:, ::-1].argmax(1)
    logits = (coeffs.float() @ protos.float().reshape(nm, -1)).reshape(n, ph, pw).cpu().numpy()
    b = boxes_orig.detach().float().cpu().numpy().astype(np.float64)
    r0 = np.clip(np.ceil(b[:, 1]), 0, h0).astype(int)
    r1 = np.clip(np.ceil(b[:, 3]), 0, h0).astype(int)
    c0 = np.clip(np.ceil(b[:, 0]), 0, w0).astype(int)
    c1 = np.clip(np.ceil(b[:, 2]), 0, w0).astype(int)
    windows, regions = [], np.zeros((n, 4), np.int64)
    for k in range(n):
        if r1[k] <= r0[k] or c1[k] <= c0[k]:
            windows.append(None)
            continue
        py0, py1 = y_lo[r0[k]], y_hi[r1[k] - 1]
        px0, px1 = x_lo[c0[k]], x_hi[c1[k] - 1]
        a, lg, bx = ay[r0[k] : r1[k], py0:py1], logits[k, py0:py1, px0:px1], ax[c0[k] : c1[k], px0:px1]
        hb, wb, pr, pc = a.shape[0], bx.shape[0], lg.shape[0], lg.shape[1]
        if hb * pc * (pr + wb) <= wb * pr * (pc + hb):  # cheaper multiplication order
            win = (a @ lg) @ bx.T
        else:
            win = a @ (lg @ bx.T)
        windows.append(win > 0)
        regions[k] = (c0[k], r0[k], c1[k], r1[k])
    # only the box windows are encoded: a mask is zero outside its box
    rles = rle.encode_windows(windows, regions, h0, w0)
    if not polygons:
        return rles
    from yoloseg.ops import masks_to_polygons

    polys = []
    for win, (x0, y0, _, _) in zip(windows, regions.tolist()):
        if win is None:
            polys.append(np.zeros((0, 2), np.float32))
        else:
            polys.append(masks_to_polygons(win[None], "largest")[0] + np.array([x0, y0], np.float32))
    return rles, polys
