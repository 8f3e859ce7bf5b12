"""Float32 comparison bounds that hold on every x86 machine the suite runs on.

Why bounds move between machines
--------------------------------
The stored fixtures (../shared/fixtures) were written on one machine. On another, oneDNN and MKL pick
other convolution/GEMM kernels (AVX2, AVX-512, AMX), which split and order the float32 reductions
differently; the thread count does the same. Each output then moves by a few float32 ulps of the
intermediate values that produced it.

A float32 ulp at |x| is at most |x| * 2**-23 (about |x| * 1.19e-7). Values near 1 (scores, mask
coefficients, protos, logits) move by ~1e-6 at most, so a tight *absolute* bound (1e-4) keeps them honest.
Box channels are pixels: the head computes (anchor +- distance) * stride with stride up to 32 and values up
to the image size (640), so the same few-ulp reduction differences become ~1e-4..2.5e-4 px on a ~100 px
coordinate. An absolute bound there is not portable (a 1e-4 bound failed on AVX2 against the AVX-512
fixtures at 1.5e-4 px). Pixel-valued outputs therefore get ``atol + rtol * |expected|`` with
``rtol = PIXEL_ULPS * 2**-23`` (16 ulps of the value itself, 1.9e-6 relative: 1.2e-3 px at 640 px).

Measured on the shipped fixtures (1 thread, the suite's setting for fixture parity), the worst box
difference above the 1e-4 floor relative to the value was 1.24e-6 on an AVX2-only EPYC, 1.05e-6 with
oneDNN pinned to SSE4.1; the AVX-512 machine that wrote the fixtures gives 0. Tests that compare against
the fixtures pin ``torch.set_num_threads(1)`` (the fixtures were written single-threaded).

Use these helpers for every comparison with stored fixtures or across implementations that use different
kernels (PyTorch vs onnxruntime); in-process comparisons of the same arithmetic stay exact.

Reproducing an AVX2-only machine on an AVX-512 one
--------------------------------------------------
Pin PyTorch's own kernels, oneDNN and MKL to AVX2 for the whole run::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/pytest -q

(``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2`` goes one step
further down and is a good stress of these bounds.)
"""

from __future__ import annotations

import numpy as np
import torch

F32_EPS = 2.0**-23  # float32 ulp at 1.0; the ulp at |x| is <= |x| * F32_EPS
PIXEL_ULPS = 16  # reduction-order differences of conv kernels, amplified by the stride (see above)
PIXEL_ATOL = 1e-4  # floor for coordinates near 0 (a float32 ulp at 640 px is 6.1e-5)
PIXEL_RTOL = PIXEL_ULPS * F32_EPS  # 1.9e-6
VALUE_ATOL = 1e-4  # scores, coefficients, protos, logits: values of order 1, few-ulp moves are ~1e-6


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pixel_bound(e: np.ndarray, atol: float, rtol: float, magnitude, scale: float) -> np.ndarray:
    mag = np.abs(e) if magnitude is None else np.abs(_np(magnitude))
    return scale * (atol + rtol * mag)


def pixel_excess(actual, expected, atol: float = PIXEL_ATOL, rtol: float = PIXEL_RTOL, magnitude=None,
                 scale=1.0) -> float:
    """The largest ``|a - e| - bound`` (see :func:`assert_close_pixels`): <= 0 when every element passes."""
    a, e = _np(actual), _np(expected)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - e) - _pixel_bound(e, atol, rtol, magnitude, scale)))


def assert_close_pixels(actual, expected, what: str = "pixels", atol: float = PIXEL_ATOL, rtol: float = PIXEL_RTOL,
                        magnitude=None, scale=1.0):
    """Pixel-valued outputs (box coordinates): ``|a - e| <= scale * (atol + rtol * |magnitude|)`` elementwise.

    ``magnitude`` defaults to ``expected``. Boxes mapped back to the original image were computed as
    ``x_lb`` in the letterboxed input and then ``(x_lb - pad) / gain``: their rounding differences are ulps of
    ``x_lb``, divided by the gain. Pass ``magnitude=x_lb`` and ``scale=1 / gain`` (per axis) for those (the pad
    subtraction would otherwise make a small coordinate look like a large relative error).
    """
    a, e = _np(actual), _np(expected)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    if not a.size:
        return
    d = np.abs(a - e)
    bound = _pixel_bound(e, atol, rtol, magnitude, scale)
    i = int(np.argmax(d - bound))
    assert d.flat[i] <= bound.flat[i], (
        f"{what}: |diff| {d.flat[i]:.3e} > bound {bound.flat[i]:.3e} (atol {atol:g}, rtol {rtol:.2e}) "
        f"at flat index {i} (expected {e.flat[i]:.6g}); largest |diff| {d.max():.3e}"
    )


def xyxy_magnitude(xyxy) -> np.ndarray:
    """Per coordinate, the larger |coordinate| of the same axis of its box: the magnitude for xyxy boxes.

    The head outputs (cx, cy, w, h); NMS turns them into x1 = cx - w / 2, x2 = cx + w / 2. A difference of
    ``atol + rtol * |v|`` in each of cx and w becomes ``1.5 * atol + rtol * (|cx| + w / 2)`` in x1 and x2,
    and ``|cx| + w / 2 = max(|x1|, |x2|)``. Use with ``atol=1.5 * PIXEL_ATOL`` (see :func:`assert_close_xyxy`).
    """
    b = np.abs(_np(xyxy))
    mx = np.maximum(b[..., 0], b[..., 2])
    my = np.maximum(b[..., 1], b[..., 3])
    return np.stack([mx, my, mx, my], -1)


def assert_close_xyxy(actual, expected, what: str = "boxes", letterboxed=None, scale=1.0):
    """xyxy boxes decoded from the head's xywh: the pixel rule on (cx, w), carried to the corners.

    ``letterboxed``: the expected boxes in the letterboxed input, for boxes mapped back to the original image
    (``scale`` is then ``1 / gain`` per axis); default: ``expected`` itself (boxes still in the input).
    """
    mag = xyxy_magnitude(expected if letterboxed is None else letterboxed)
    assert_close_pixels(actual, expected, what, atol=1.5 * PIXEL_ATOL, magnitude=mag, scale=scale)


def assert_close_values(actual, expected, what: str = "values", atol: float = VALUE_ATOL):
    """Order-1 outputs (scores, mask coefficients, protos, logits): a tight absolute bound."""
    a, e = _np(actual), _np(expected)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    if not a.size:
        return
    d = float(np.abs(a - e).max())
    assert d <= atol, f"{what}: largest |diff| {d:.3e} > {atol:g}"


def assert_close_det(actual, expected, what: str = "det", box_channels: int = 4):
    """A raw head output (B, 4 + nc + nm, A): box channels by the pixel rule, the rest absolute."""
    a, e = _np(actual), _np(expected)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    assert_close_pixels(a[:, :box_channels], e[:, :box_channels], f"{what} boxes")
    assert_close_values(a[:, box_channels:], e[:, box_channels:], f"{what} scores/coefficients")


def assert_close_result_boxes(actual, expected, lb_shape, orig_shape, what: str = "boxes"):
    """``Results.boxes.data`` rows (x1, y1, x2, y2, score, class) in original-image pixels, from a letterboxed
    input of ``lb_shape``: boxes by :func:`assert_close_xyxy` where they were computed (the letterboxed input,
    then divided by the gain), scores absolute, classes exact."""
    from yoloseg.ops import letterbox_params

    a, e = _np(actual), _np(expected)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    (gy, gx), (px, py) = letterbox_params(lb_shape, orig_shape)
    gain, pad = np.array([gx, gy, gx, gy]), np.array([px, py, px, py])
    assert_close_xyxy(a[:, :4], e[:, :4], what, letterboxed=e[:, :4] * gain + pad, scale=1 / gain)
    assert_close_values(a[:, 4], e[:, 4], f"{what} scores")
    assert np.array_equal(a[:, 5], e[:, 5]), f"{what}: classes differ"

