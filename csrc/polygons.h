// Support for mask -> polygon extraction: the window of nonzero pixels of each mask, so contour
// tracing (OpenCV, in Python) only visits that window.
#pragma once
#include <cstdint>
#include <vector>

namespace yoloseg {

// Every function here throws yoloseg::Error (errors.h) before touching a buffer when a count is
// negative, a side (h, w) is outside [0, kMaxSide], n * h * w overflows, or a buffer with elements is
// null. Windows and bounds may hold any values: they are clipped to the mask. nthreads < 1 runs
// serially; more than 256 is capped.

// masks (n, h, w) uint8; windows (n, 4) int64 [x0, y0, x1, y1) of the nonzero pixels, all zero for
// an empty mask.
void mask_windows_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, int64_t* windows, int nthreads);

// Same, reading only the pixels inside bounds (n, 4) int64 [x0, y0, x1, y1) (clipped to the mask);
// pixels outside them count as zero.
void mask_windows_within_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* bounds,
                                int64_t* windows, int nthreads);

// [x0, y0, x1, y1) of the nonzero bytes of a w x h block whose rows are `stride` bytes apart
// (block coordinates; all zero when none is set).
void nonzero_window(const uint8_t* block, int64_t stride, int64_t w, int64_t h, int64_t* win);

// Closest vertex pair between two point lists (int32 (n,2) and (m,2)): writes (i, j) minimising the
// squared distance, the first in row-major (i, then j) order on ties (exact for any int32 values).
// n and m must be >= 1.
void closest_vertices_kernel(const int32_t* a, int64_t n, const int32_t* b, int64_t m, int64_t* i_out,
                             int64_t* j_out);

// Outer-contour polygon of each mask (contours.cpp): traced inside windows (n, 4) int64 [x0, y0, x1, y1),
// which must hold every nonzero pixel, with the results of cv2.findContours(RETR_EXTERNAL,
// CHAIN_APPROX_SIMPLE); join = false keeps the contour of largest area, true links all of them into one
// polygon. polys[i] holds x0, y0, x1, y1, ... in mask pixels (empty for an empty window).
void mask_polygons_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* windows, bool join,
                          std::vector<std::vector<int32_t>>& polys, int nthreads);

// Same for packed crops (masks.h, decode_crops_kernel): mask i is the block of its region (n, 4)
// [x0, y0, x1, y1) at crops + offsets[i] and zero elsewhere; windows are clipped to the regions.
// A non-empty region must lie in [0, kMaxSide] with offsets[i] >= 0; crops must hold
// offsets[i] + (x1 - x0) * (y1 - y0) bytes (the caller's to size; the Python binding checks it).
void crop_polygons_kernel(const uint8_t* crops, int64_t n, const int64_t* regions, const int64_t* offsets,
                          const int64_t* windows, bool join, std::vector<std::vector<int32_t>>& polys, int nthreads);

}  // namespace yoloseg
