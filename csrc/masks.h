// Mask decoding on raw float buffers: prototypes x coefficients -> binary masks cropped to boxes.
//
// The output grid is reached from the prototype grid by a separable resampling chain, described
// per axis by `ResamplePlan` (the same chain the pure-torch reference runs with F.interpolate):
//   1. bilinear upsample by the integer factor f (align_corners=False; skipped when f == 1),
//   2. cut the window [offset, offset + content) of the upsampled axis,
//   3. bilinear resize of that window to the output size (align_corners=False).
// Bilinear resampling is linear, so each output row/column is a fixed weighted sum of at most K
// consecutive prototype rows/columns (K = 2 when f == 1, else 4); the kernel precomputes these
// taps once per axis and evaluates only the output pixels inside each box.
#pragma once
#include <cstdint>
#include <vector>

namespace yoloseg {

struct AxisTaps {
  int taps = 2;                 // weights per output index
  std::vector<int32_t> start;   // first prototype index per output index
  std::vector<float> weight;    // taps weights per output index (zero-padded)
};

// Output pixels [x0, x1) x [y0, y1) a mask's box keeps (x1 <= x < x2 and y1 <= y < y2, clipped to the
// grid); all zero when the box keeps none or a coordinate is NaN (infinities clip to the grid edge).
// Throws yoloseg::Error when out_h or out_w is outside [1, kMaxSide].
struct Region {
  int64_t x0, y0, x1, y1;
};
Region box_region(const float* box, int64_t out_h, int64_t out_w);

// out: output length; proto: prototype length; f, offset, content: steps 1-3 above. Throws
// yoloseg::Error unless out, proto, f, content are in [1, kMaxSide], offset >= 0 and
// offset + content <= f * proto.
AxisTaps resample_taps(int64_t out, int64_t proto, int64_t f, int64_t offset, int64_t content);

// protos (nm, mh, mw), coeffs (n, nm), boxes (n, 4) xyxy in output pixels, out (n, H, W) uint8
// that must arrive zero-filled: only pixels with x1 <= x < x2, y1 <= y < y2 are written
// (1 where the resampled logit is > 0).
// Throws yoloseg::Error (errors.h), before writing anything, when nm or n is negative, mh, mw, out_h or
// out_w is outside [1, kMaxSide], n * out_h * out_w overflows, a buffer is null while it has elements,
// a box or coefficient is NaN or infinite, or the taps were not made by resample_taps for these sizes.
// nthreads < 1 runs serially; more than 256 is capped.
void decode_masks_kernel(const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coeffs,
                         const float* boxes, int64_t n, const AxisTaps& ytaps, const AxisTaps& xtaps,
                         int64_t out_h, int64_t out_w, uint8_t* out, int nthreads);

// Same decoding into packed crops: mask i is the (y1 - y0) x (x1 - x0) uint8 block of its region
// (regions (n, 4) from box_region) at crops + offsets[i], every byte written. windows (n, 4) receives
// the [x0, y0, x1, y1) of the set pixels in mask pixels (all zero when none is set).
// Same checks as decode_masks_kernel, and a non-empty region must lie inside the output grid with a
// non-negative offset; crops must hold offsets[i] + (x1 - x0) * (y1 - y0) bytes for every mask (the
// caller sizes it; the Python binding allocates it from the regions).
void decode_crops_kernel(const float* protos, int64_t nm, int64_t mh, int64_t mw, const float* coeffs,
                         const float* boxes, int64_t n, const AxisTaps& ytaps, const AxisTaps& xtaps,
                         int64_t out_h, int64_t out_w, const int64_t* regions, const int64_t* offsets,
                         uint8_t* crops, int64_t* windows, int nthreads);

}  // namespace yoloseg
