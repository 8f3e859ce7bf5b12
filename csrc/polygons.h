// Support for mask -> polygon extraction: the window of nonzero pixels of each mask, so contour
// tracing (OpenCV, in Python) only visits that window.
#pragma once
#include <cstdint>

namespace yoloseg {

// masks (n, h, w) uint8; windows (n, 4) int64 [x0, y0, x1, y1) of the nonzero pixels, all zero for
// an empty mask.
void mask_windows_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, int64_t* windows, int nthreads);

// Same, reading only the pixels inside bounds (n, 4) int64 [x0, y0, x1, y1) (clipped to the mask);
// pixels outside them count as zero.
void mask_windows_within_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* bounds,
                                int64_t* windows, int nthreads);

// Closest vertex pair between two point lists (int32 (n,2) and (m,2)): writes (i, j) minimising the
// squared distance, the first in row-major (i, then j) order on ties.
void closest_vertices_kernel(const int32_t* a, int64_t n, const int32_t* b, int64_t m, int64_t* i_out,
                             int64_t* j_out);

}  // namespace yoloseg
