// Bounding windows of the nonzero pixels of binary masks (one pass, word-at-a-time row tests).
#include "polygons.h"

#include "errors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace yoloseg {
namespace {

inline bool row_any(const uint8_t* row, int64_t w) {
  int64_t x = 0;
  uint64_t acc = 0;
  for (; x + 8 <= w; x += 8) {
    uint64_t v;
    std::memcpy(&v, row + x, 8);
    acc |= v;
  }
  for (; x < w; ++x) acc |= row[x];
  return acc != 0;
}

// Window of the nonzero pixels inside [x0, x1) x [y0, y1) of a mask with rows of w bytes.
void window_in(const uint8_t* m, int64_t w, int64_t wx0, int64_t wy0, int64_t wx1, int64_t wy1, int64_t* win) {
  const int64_t ww = wx1 - wx0;
  int64_t y0 = -1, y1 = -1, x0 = ww, x1 = 0;
  for (int64_t y = wy0; y < wy1 && ww > 0; ++y) {
    const uint8_t* row = m + y * w + wx0;
    if (!row_any(row, ww)) continue;
    if (y0 < 0) y0 = y;
    y1 = y + 1;
    // Only the part of the row outside the current [x0, x1) can widen the window.
    for (int64_t x = 0; x < x0; ++x)
      if (row[x]) {
        x0 = x;
        break;
      }
    for (int64_t x = ww - 1; x >= x1; --x)
      if (row[x]) {
        x1 = x + 1;
        break;
      }
  }
  if (y0 < 0) {
    win[0] = win[1] = win[2] = win[3] = 0;
  } else {
    win[0] = wx0 + x0;
    win[1] = y0;
    win[2] = wx0 + x1;
    win[3] = y1;
  }
}

void window_one(const uint8_t* m, int64_t h, int64_t w, int64_t* win) { window_in(m, w, 0, 0, w, h, win); }

}  // namespace

void nonzero_window(const uint8_t* block, int64_t stride, int64_t w, int64_t h, int64_t* win) {
  const char* fn = "nonzero_window";
  check::side(w, fn, "w", true);
  check::side(h, fn, "h", true);
  if (stride < w) check::fail(fn, "stride", "must be >= w");
  check::not_null(win, 4, fn, "win");
  check::not_null(block, w * h, fn, "block");
  window_in(block, stride, 0, 0, w, h, win);
}

namespace {

// Checks shared by the window kernels: sizes, the masks buffer (n * h * w bytes) and the windows.
void check_masks(const char* fn, const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* windows,
                 const char* windows_arg) {
  check::count(n, fn, "n");
  check::side(h, fn, "h", true);
  check::side(w, fn, "w", true);
  check::not_null(masks, check::mul(n, h * w, fn, "n * h * w"), fn, "masks");
  check::not_null(windows, check::mul(n, 4, fn, "n * 4"), fn, windows_arg);
}

}  // namespace

void mask_windows_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, int64_t* windows, int nthreads) {
  check_masks("mask_windows", masks, n, h, w, windows, "windows");
  nthreads = clamp_threads(nthreads);
  const bool parallel = nthreads > 1 && n > 1 && n * h * w >= (int64_t{1} << 20);
#ifdef _OPENMP
#pragma omp parallel for num_threads(parallel ? nthreads : 1) schedule(dynamic, 4) if (parallel)
#endif
  for (int64_t i = 0; i < n; ++i) window_one(masks + i * h * w, h, w, windows + 4 * i);
  (void)parallel;
}

void mask_windows_within_kernel(const uint8_t* masks, int64_t n, int64_t h, int64_t w, const int64_t* bounds,
                                int64_t* windows, int nthreads) {
  const char* fn = "mask_windows_within";
  check_masks(fn, masks, n, h, w, windows, "windows");
  check::not_null(bounds, 4 * n, fn, "bounds");
  nthreads = clamp_threads(nthreads);
  // Bounds may be anything: they are clipped to the mask before any arithmetic.
  int64_t work = 0;
  for (int64_t i = 0; i < n && work < (int64_t{1} << 20); ++i) {
    const int64_t* b = bounds + 4 * i;
    const int64_t x0 = std::max<int64_t>(b[0], 0), y0 = std::max<int64_t>(b[1], 0);
    const int64_t x1 = std::min<int64_t>(b[2], w), y1 = std::min<int64_t>(b[3], h);
    if (x1 > x0 && y1 > y0) work += (x1 - x0) * (y1 - y0);
  }
  const bool parallel = nthreads > 1 && n > 1 && work >= (int64_t{1} << 20);
#ifdef _OPENMP
#pragma omp parallel for num_threads(parallel ? nthreads : 1) schedule(dynamic, 4) if (parallel)
#endif
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* b = bounds + 4 * i;
    const int64_t x0 = std::max<int64_t>(b[0], 0), y0 = std::max<int64_t>(b[1], 0);
    const int64_t x1 = std::min<int64_t>(b[2], w), y1 = std::min<int64_t>(b[3], h);
    if (x1 <= x0 || y1 <= y0) {
      windows[4 * i] = windows[4 * i + 1] = windows[4 * i + 2] = windows[4 * i + 3] = 0;
      continue;
    }
    window_in(masks + i * h * w, w, x0, y0, x1, y1, windows + 4 * i);
  }
  (void)parallel;
}

void closest_vertices_kernel(const int32_t* a, int64_t n, const int32_t* b, int64_t m, int64_t* i_out,
                             int64_t* j_out) {
  const char* fn = "closest_vertices";
  if (n < 1) check::fail(fn, "n", "must be >= 1 (a has no points)");
  if (m < 1) check::fail(fn, "m", "must be >= 1 (b has no points)");
  check::not_null(a, 2 * n, fn, "a");
  check::not_null(b, 2 * m, fn, "b");
  check::not_null(i_out, 1, fn, "i_out");
  check::not_null(j_out, 1, fn, "j_out");
  // Any int32 coordinates: |dx|, |dy| < 2^32, so each square fits in uint64 and their sum is exact
  // in 128 bits.
  using Wide = unsigned __int128;
  Wide best = ~Wide{0};
  int64_t bi = 0, bj = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ax = a[2 * i], ay = a[2 * i + 1];
    for (int64_t j = 0; j < m; ++j) {
      const int64_t dx = ax - b[2 * j], dy = ay - b[2 * j + 1];
      const uint64_t ux = static_cast<uint64_t>(dx < 0 ? -dx : dx), uy = static_cast<uint64_t>(dy < 0 ? -dy : dy);
      const Wide d = static_cast<Wide>(ux * ux) + static_cast<Wide>(uy * uy);
      if (d < best) {
        best = d;
        bi = i;
        bj = j;
      }
    }
  }
  *i_out = bi;
  *j_out = bj;
}

}  // namespace yoloseg
